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
