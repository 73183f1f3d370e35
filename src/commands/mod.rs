//! One module per subcommand.

pub mod dag;
pub mod demo;
pub mod gc;
pub mod kinds;
pub mod lineage;
pub mod models;
pub mod predict;
pub mod run;
pub mod runs;
pub mod serve;
pub mod status;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A command line that cannot be carried out as given (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Exit code: 2 for configuration/usage errors, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<UsageError>().is_some() {
        return 2;
    }
    match e.downcast_ref::<runner::Error>() {
        Some(
            runner::Error::Spec { .. }
            | runner::Error::Toml { .. }
            | runner::Error::Cycle { .. }
            | runner::Error::UnknownStage(_)
            | runner::Error::Read { .. },
        ) => 2,
        _ if matches!(
            e.downcast_ref::<api::Error>(),
            Some(api::Error::Config { .. } | api::Error::Bind { .. })
        ) =>
        {
            2
        }
        _ => 1,
    }
}

/// Loads and validates a pipeline with every stage kind registered.
pub fn load_pipeline(path: &Path) -> anyhow::Result<runner::Pipeline> {
    load_pipeline_with(path, &[])
}

/// Loads a pipeline with params set on the command line (`-S section.key=value`).
pub fn load_pipeline_with(
    path: &Path,
    overrides: &[runner::spec::Override],
) -> anyhow::Result<runner::Pipeline> {
    let registry = stages::registry();
    Ok(runner::spec::load_with(path, &registry, overrides)?)
}

/// The store: `--store` if given, else the pipeline's, else `artifacts/store`.
pub fn open_store(
    store: Option<&PathBuf>,
    pipeline: Option<&Path>,
) -> anyhow::Result<artifacts::Store> {
    let dir = match (store, pipeline) {
        (Some(s), _) => s.clone(),
        (None, Some(p)) => load_pipeline(p)?.store_dir,
        (None, None) => PathBuf::from("artifacts/store"),
    };
    artifacts::Store::open(&dir).with_context(|| format!("opening the store at {}", dir.display()))
}
