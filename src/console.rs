//! All user-facing output goes through here, so progress bars and plain lines do not fight.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

static BARS: OnceLock<Option<indicatif::MultiProgress>> = OnceLock::new();

/// The shared progress display: `Some` only when stderr is a terminal.
pub fn progress() -> Option<indicatif::MultiProgress> {
    BARS.get_or_init(|| {
        std::io::stderr()
            .is_terminal()
            .then(indicatif::MultiProgress::new)
    })
    .clone()
}

/// A line on stdout (results), printed around any progress bars.
pub fn out(line: &str) {
    let print = || {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
    };
    match BARS.get().and_then(|b| b.as_ref()) {
        Some(mp) => mp.suspend(print),
        None => print(),
    }
}

/// Output written to stdout by `write` (a table, say), around any progress bars. A reader
/// that stops early (`| head`) ends the output quietly, as it does for [`out`]'s lines.
pub fn out_with<E>(write: impl FnOnce(&mut dyn Write) -> Result<(), E>) -> Result<(), E> {
    let print = || {
        let mut o = StopsAtBrokenPipe {
            inner: std::io::BufWriter::new(std::io::stdout().lock()),
            broken: false,
        };
        write(&mut o)
    };
    match BARS.get().and_then(|b| b.as_ref()) {
        Some(mp) => mp.suspend(print),
        None => print(),
    }
}

/// Standard output that takes and drops everything once its reader has gone: the standard
/// library ignores SIGPIPE, so without this a closed pipe would be an error to report.
struct StopsAtBrokenPipe<W: Write> {
    inner: W,
    broken: bool,
}

impl<W: Write> Write for StopsAtBrokenPipe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.broken {
            match self.inner.write_all(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.broken = true,
                other => other?,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.broken {
            return Ok(());
        }
        match self.inner.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.broken = true;
                Ok(())
            }
            other => other,
        }
    }
}

/// A line on stderr (errors, warnings).
pub fn error(line: &str) {
    let print = || {
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{line}");
    };
    match BARS.get().and_then(|b| b.as_ref()) {
        Some(mp) => mp.suspend(print),
        None => print(),
    }
}

/// Pretty JSON on stdout.
pub fn json<T: serde::Serialize>(v: &T) {
    out(&serde_json::to_string_pretty(v).expect("values serialise"));
}
