use std::path::PathBuf;

use crate::console;

/// `isco-dag verify`.
#[derive(clap::Args)]
pub struct Args {
    /// Store directory (default: artifacts/store).
    #[arg(long, env = "ISCO_DAG_STORE")]
    store: Option<PathBuf>,
    /// Repair what can be repaired: damaged objects and unreadable records go to the store's
    /// `quarantine/`, damaged checkouts are made again (or removed, when their objects are
    /// damaged too), and stages whose outputs are damaged lose
    /// their record, so the next `run` recomputes them.
    #[arg(long)]
    repair: bool,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let store = super::open_existing_store(a.store.as_ref())?;
    let r = store.verify(a.repair)?;
    for id in &r.corrupt {
        console::out(&format!("CORRUPT object {id}"));
    }
    for m in &r.missing {
        console::out(&format!("MISSING {m}"));
    }
    for p in &r.bad_records {
        console::out(&format!("UNREADABLE record {}", p.display()));
    }
    for p in &r.bad_checkouts {
        console::out(&format!("DAMAGED checkout {}", p.display()));
    }
    for line in &r.repaired {
        console::out(&format!("REPAIRED {line}"));
    }
    console::out(&format!(
        "checked {} objects: {} corrupt, {} missing; {} unreadable records, {} damaged checkouts",
        r.checked,
        r.corrupt.len(),
        r.missing.len(),
        r.bad_records.len(),
        r.bad_checkouts.len()
    ));
    if r.damaged() {
        if a.repair {
            console::out(
                "repaired: run the pipeline again to recompute what was damaged (`isco-dag run <pipeline>`)",
            );
        } else {
            anyhow::bail!(
                "the store is damaged; `isco-dag verify --repair` quarantines what is damaged, then `isco-dag run <pipeline>` recomputes it"
            );
        }
    }
    Ok(())
}
