//! The [`Stage`] trait that every stage kind implements, and the registry of kinds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Error type a stage returns; the stages crate boxes its own `thiserror` enum.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// A named input a stage kind reads.
#[derive(Debug, Clone, Copy)]
pub struct InputDecl {
    /// Name used in the pipeline's `inputs` table.
    pub name: &'static str,
    /// Whether the pipeline must provide it.
    pub required: bool,
    /// Whether several files (a glob or a list) are accepted.
    pub many: bool,
    /// One-line description for `isco-dag kinds`.
    pub help: &'static str,
}

/// A named output a stage kind writes.
#[derive(Debug, Clone, Copy)]
pub struct OutputDecl {
    /// Name used as `stage_id.name` downstream.
    pub name: &'static str,
    /// File (or directory) name inside the stage's output directory.
    pub file: &'static str,
    /// Whether the output is a directory.
    pub dir: bool,
}

/// What a stage reports when it succeeds.
#[derive(Debug, Clone, Default)]
pub struct StageReport {
    /// Metrics (a JSON object) kept in the run record and run-cache.
    pub metrics: serde_json::Value,
    /// Short human-readable lines shown after the stage finishes.
    pub summary: Vec<String>,
}

/// A progress handle for one running stage (an indicatif bar, hidden off a terminal).
#[derive(Debug, Clone)]
pub struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    pub(crate) fn new(bar: indicatif::ProgressBar) -> Self {
        Progress { bar }
    }

    /// A progress handle that shows nothing.
    pub fn hidden() -> Self {
        Progress {
            bar: indicatif::ProgressBar::hidden(),
        }
    }

    /// Sets the total amount of work and resets the position.
    pub fn start(&self, total: u64, message: &str) {
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(message.to_string());
    }

    /// Advances by `n`.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Replaces the message.
    pub fn message(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }
}

/// Everything a stage sees while it runs.
pub struct StageContext<'a> {
    /// Stage id.
    pub id: &'a str,
    /// Resolved, canonical params (a JSON object).
    pub params: &'a serde_json::Value,
    /// Named inputs: workspace files, or read-only store paths of upstream outputs.
    pub inputs: &'a BTreeMap<String, Vec<PathBuf>>,
    /// The store objects behind inputs that are upstream outputs (name -> refs).
    pub artifacts: &'a BTreeMap<String, Vec<artifacts::OutputRef>>,
    /// Where the stage writes its outputs (`out_dir/<OutputDecl::file>`).
    pub out_dir: &'a Path,
    /// The project root.
    pub root: &'a Path,
    /// The artifact store (refs, for stages such as promote).
    pub store: &'a Store,
    /// Progress reporting.
    pub progress: &'a Progress,
    /// The run id.
    pub run_id: &'a str,
    /// Whether the stage was forced on the command line.
    pub forced: bool,
    /// The outputs of this stage's previous successful execution (empty if none), for
    /// incremental work; they belong to other inputs, so never pass them on as this run's.
    pub previous: &'a BTreeMap<String, artifacts::OutputRef>,
}

impl StageContext<'_> {
    /// The params deserialised into the stage's own type.
    pub fn params<P: DeserializeOwned>(&self) -> Result<P, StageError> {
        Ok(serde_json::from_value(self.params.clone())?)
    }

    /// The single file of a named input, if the pipeline gave it.
    pub fn input_opt(&self, name: &str) -> Option<&Path> {
        self.inputs
            .get(name)
            .and_then(|v| v.first())
            .map(PathBuf::as_path)
    }

    /// The single file of a required input.
    pub fn input(&self, name: &str) -> Result<&Path, StageError> {
        self.input_opt(name).ok_or_else(|| {
            format!(
                "stage `{}` needs the input `{name}`; add it to the stage's `inputs` table",
                self.id
            )
            .into()
        })
    }

    /// All files of a named input (empty if not given).
    pub fn input_files(&self, name: &str) -> &[PathBuf] {
        self.inputs.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Where to write the named output.
    pub fn output(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }
}

/// A stage kind.
pub trait Stage: Send + Sync {
    /// The kind name used in pipeline files.
    fn kind(&self) -> &'static str;
    /// Implementation version: bump it when the stage's behaviour changes, so stale results
    /// are not reused.
    fn version(&self) -> &'static str;
    /// One-line description.
    fn help(&self) -> &'static str;
    /// Inputs it reads.
    fn inputs(&self) -> &'static [InputDecl];
    /// Outputs it writes.
    fn outputs(&self) -> &'static [OutputDecl];
    /// Names of the params it accepts (used to take its keys from config sections).
    fn param_names(&self) -> Vec<String>;
    /// Validates raw params strictly (unknown keys are errors) and returns them resolved with
    /// defaults, as a canonical JSON object. The error is a sentence naming the bad key.
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String>;
    /// Refuses, before anything runs, inputs these params cannot run with: an input that
    /// only some settings read, given no file. `files(name)` is how many files the input
    /// names when the pipeline is loaded (another stage's output counts as one), `None` when
    /// it is not given. The error is a sentence saying what to give.
    fn check_inputs(
        &self,
        _params: &serde_json::Value,
        _files: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<(), String> {
        Ok(())
    }
    /// What the workspace copy of `output` shows when it is not the recorded output: a
    /// promotion's model folder shows the model its ref points at now, which another
    /// promotion may have moved since this stage's result was recorded (or was restored).
    /// `None`: the recorded output.
    fn workspace_view(
        &self,
        _output: &str,
        _store: &Store,
        _params: &serde_json::Value,
    ) -> Option<artifacts::OutputRef> {
        None
    }
    /// State outside the inputs that the result depends on; it enters the fingerprint.
    fn external_state(
        &self,
        _store: &Store,
        _params: &serde_json::Value,
    ) -> Result<serde_json::Value, StageError> {
        Ok(serde_json::Value::Null)
    }
    /// Runs the stage.
    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError>;
}

/// Implements the descriptive methods of [`Stage`] (`kind`, `version`, `help`, `inputs`,
/// `outputs`, `param_names`) inside an `impl Stage for …` block, from the kind name, the
/// implementation version, a one-line help, the input and output declarations and the
/// params type — or, after `names`, an expression giving the param names, for a stage whose
/// params are more than one type's.
#[macro_export]
macro_rules! stage_metadata {
    ($kind:literal, version $version:literal, $help:literal, $inputs:expr, $outputs:expr, names $names:expr) => {
        fn kind(&self) -> &'static str {
            $kind
        }
        fn version(&self) -> &'static str {
            $version
        }
        fn help(&self) -> &'static str {
            $help
        }
        fn inputs(&self) -> &'static [$crate::InputDecl] {
            $inputs
        }
        fn outputs(&self) -> &'static [$crate::OutputDecl] {
            $outputs
        }
        fn param_names(&self) -> Vec<String> {
            $names
        }
    };
    ($kind:literal, version $version:literal, $help:literal, $inputs:expr, $outputs:expr, $params:ty) => {
        $crate::stage_metadata!($kind, version $version, $help, $inputs, $outputs, names $crate::stage::param_names_of::<$params>());
    };
}

/// Resolves a typed params struct strictly, for [`Stage::resolve_params`].
pub fn typed_params<P>(raw: &toml::Table) -> Result<serde_json::Value, String>
where
    P: DeserializeOwned + Serialize,
{
    // Params are kept as canonical JSON, which has no NaN or infinity; refuse them here,
    // named, rather than let them turn into `null` and fail without a key.
    fn finite(v: &toml::Value) -> bool {
        match v {
            toml::Value::Float(f) => f.is_finite(),
            toml::Value::Array(a) => a.iter().all(finite),
            toml::Value::Table(t) => t.values().all(finite),
            _ => true,
        }
    }
    if let Some((k, v)) = raw.iter().find(|(_, v)| !finite(v)) {
        return Err(format!("`{k}` is {v}; give a finite number"));
    }
    // The path to the failing key makes a type error name it (`dim`: invalid type …).
    let p: P = serde_path_to_error::deserialize(toml::Value::Table(raw.clone())).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_string();
        if path.is_empty() || path == "." {
            message
        } else {
            format!("`{path}`: {message}")
        }
    })?;
    serde_json::to_value(p).map_err(|e| e.to_string())
}

/// The param names of a typed params struct (its default's keys), for
/// [`Stage::param_names`].
pub fn param_names_of<P: Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(P::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The stage kinds a pipeline may use.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn Stage>>,
    sections: std::collections::BTreeSet<&'static str>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind.
    pub fn register(&mut self, stage: Arc<dyn Stage>) {
        self.kinds.insert(stage.kind(), stage);
    }

    /// Looks a kind up.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Stage>> {
        self.kinds.get(kind)
    }

    /// All kind names.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    /// All kinds.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Stage>> {
        self.kinds.values()
    }

    /// Declares a config section as known even when a pipeline's stages do not read it
    /// (another pipeline's stages, or a command such as `serve`, do), so that a misspelt
    /// section name is an error instead of being ignored.
    pub fn know_section(&mut self, name: &'static str) {
        self.sections.insert(name);
    }

    /// Whether a config section was declared with [`Registry::know_section`].
    pub fn knows_section(&self, name: &str) -> bool {
        self.sections.contains(name)
    }

    /// The declared config sections.
    pub fn sections(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sections.iter().copied()
    }
}
