//! Atomic file writes: a temp file beside the destination, `fsync`, then `rename`, so a
//! reader never sees half a file and a killed process leaves at worst a stray temp file.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn tmp_name(hint: &str) -> String {
    format!(
        ".{hint}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `bytes` to `dest` atomically: temp file beside it, fsync, rename.
pub(crate) fn atomic_write(dest: &Path, bytes: &[u8]) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).io("create directory", parent)?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(tmp_name(name));
    let result = (|| {
        let mut f = File::create(&tmp).io("create", &tmp)?;
        f.write_all(bytes).io("write", &tmp)?;
        f.sync_all().io("sync", &tmp)?;
        fs::rename(&tmp, dest).io("rename into place", dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
