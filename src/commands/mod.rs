//! One module per subcommand.

pub mod dag;
pub mod demo;
pub mod evaluate;
pub mod gc;
pub mod kinds;
pub mod lineage;
pub mod models;
pub mod predict;
pub mod remote;
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
            | runner::Error::UnknownStage { .. }
            | runner::Error::Read { .. }
            | runner::Error::NoPipelineFile { .. },
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
        (None, None) => PathBuf::from(artifacts::DEFAULT_STORE_DIR),
    };
    artifacts::Store::open(&dir).with_context(|| format!("opening the store at {}", dir.display()))
}

/// The store of a command that reads one (`runs`, `verify`, `gc`): as [`open_store`], but a
/// store that does not exist is an error instead of an empty store created on the spot.
pub fn open_existing_store(store: Option<&PathBuf>) -> anyhow::Result<artifacts::Store> {
    let dir = store
        .cloned()
        .unwrap_or_else(|| PathBuf::from(artifacts::DEFAULT_STORE_DIR));
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "there is no store at {}; a pipeline run creates it (`isco-dag run pipelines/full.toml`), or give --store the store's directory",
            dir.display()
        ))
        .into());
    }
    open_store(Some(&dir), None)
}

/// The remote store: `url` (when not empty) with the `[remote]` settings' other keys, else
/// the `[remote]` settings as written in `source`.
pub fn open_remote(
    settings: Option<&artifacts::RemoteSettings>,
    url: &str,
    source: &str,
) -> anyhow::Result<artifacts::Remote> {
    let settings = match (settings, url.is_empty()) {
        (Some(s), true) => s.clone(),
        (Some(s), false) => artifacts::RemoteSettings {
            url: url.to_string(),
            ..s.clone()
        },
        (None, false) => artifacts::RemoteSettings::from_url(url),
        (None, true) => {
            return Err(UsageError(format!(
                "no remote is set: {source} has no [remote] section; add one (url = \"s3://bucket/prefix\", endpoint = …) or give --remote s3://bucket/prefix"
            ))
            .into());
        }
    };
    artifacts::Remote::open(&settings).map_err(|e| UsageError(e.to_string()).into())
}

/// The `[remote]` section of a config file, if it has one.
pub fn remote_from_config(path: &Path) -> anyhow::Result<Option<artifacts::RemoteSettings>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| UsageError(format!("{}: {}", path.display(), e.to_string().trim_end())))?;
    match table.remove("remote") {
        None => Ok(None),
        Some(v) => Ok(Some(v.try_into().map_err(|e: toml::de::Error| {
            let line = text
                .lines()
                .position(|l| l.trim() == "[remote]")
                .map_or(String::new(), |i| format!(", line {}", i + 1));
            UsageError(format!(
                "{}{line}: [remote]: {}",
                path.display(),
                e.message()
            ))
        })?)),
    }
}
