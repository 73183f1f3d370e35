use std::path::PathBuf;

use crate::console;

/// `isco-dag demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Data directory to write into.
    #[arg(long, default_value = "data")]
    dir: PathBuf,
    /// Number of historical records (at least one).
    #[arg(long, default_value_t = 6000, value_parser = clap::value_parser!(u64).range(1..))]
    rows: u64,
    /// Random seed.
    #[arg(long, default_value_t = 2024)]
    seed: u64,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let f = stages::demo::generate(&a.dir, a.rows as usize, a.seed)?;
    console::out(&format!(
        "wrote {}, {}, {}, {}, {} and {}",
        f.records.display(),
        f.reference.display(),
        f.new_jobs.display(),
        f.truth.display(),
        f.corrections.display(),
        f.new_occupations.display()
    ));
    Ok(())
}
