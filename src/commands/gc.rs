use std::path::PathBuf;

use artifacts::GcMode;

use crate::console;

/// `isco-dag gc`.
#[derive(clap::Args)]
pub struct Args {
    /// Keep this many most recent runs (and what they reference).
    #[arg(long, default_value_t = 10)]
    keep_runs: usize,
    /// Store directory (default: artifacts/store).
    #[arg(long, env = "ISCO_DAG_STORE")]
    store: Option<PathBuf>,
    /// Remove nothing: say what would be removed and how much space it would free.
    #[arg(long, short = 'n')]
    dry_run: bool,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let store = super::open_existing_store(a.store.as_ref())?;
    let _lock = store.lock(false, &|_| {})?;
    let mode = if a.dry_run {
        GcMode::DryRun
    } else {
        GcMode::Remove
    };
    let r = store.gc(a.keep_runs, mode, &runner::fingerprint::upstream_reads)?;
    let what = format!(
        "{} runs, {} run-cache entries, {} objects ({:.1} MiB)",
        r.runs_removed,
        r.cache_entries_removed,
        r.objects_removed,
        r.bytes_freed as f64 / (1024.0 * 1024.0)
    );
    console::out(&match mode {
        GcMode::Remove => format!("removed {what}"),
        GcMode::DryRun => {
            format!("would remove {what}; nothing was removed (run without --dry-run to remove)")
        }
    });
    Ok(())
}
