use std::path::PathBuf;

use crate::console;

/// `isco-dag verify`.
#[derive(clap::Args)]
pub struct Args {
    /// Store directory (default: artifacts/store).
    #[arg(long)]
    store: Option<PathBuf>,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let store = super::open_store(a.store.as_ref(), None)?;
    let r = store.verify()?;
    for id in &r.corrupt {
        console::out(&format!("CORRUPT object {id}"));
    }
    for m in &r.missing {
        console::out(&format!("MISSING {m}"));
    }
    console::out(&format!(
        "checked {} objects: {} corrupt, {} missing",
        r.checked,
        r.corrupt.len(),
        r.missing.len()
    ));
    if !r.corrupt.is_empty() || !r.missing.is_empty() {
        anyhow::bail!(
            "the store is damaged; re-run the affected stages with `isco-dag run <pipeline> --force <stage>` after `isco-dag gc`"
        );
    }
    Ok(())
}
