use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::object::OutputRef;

/// The last successful execution of a stage (`stages/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage id.
    pub stage: crate::object::StageId,
    /// The stage's key (blake3 of its fingerprint).
    pub key: crate::object::StageKey,
    /// The fingerprint the key was computed from, kept to explain a later difference.
    pub fingerprint: serde_json::Value,
    /// Named outputs in the store.
    pub outputs: BTreeMap<String, OutputRef>,
    /// Run that produced or restored it.
    pub run_id: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
}

/// A run-cache entry (`cache/<key>.json`): the outputs a key produced, and their lineage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The stage key.
    pub key: crate::object::StageKey,
    /// Stage id that produced it.
    pub stage: crate::object::StageId,
    /// Stage kind.
    pub kind: String,
    /// The full fingerprint (inputs with hashes, params, version): the lineage of the outputs.
    pub fingerprint: serde_json::Value,
    /// Named outputs.
    pub outputs: BTreeMap<String, OutputRef>,
    /// Metrics the stage reported.
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Run that executed it.
    pub run_id: String,
    /// When it was produced (RFC 3339).
    pub created_at: String,
    /// Execution time in seconds.
    pub duration_s: f64,
}

/// What happened to a stage in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageOutcome {
    /// The stage ran.
    Executed,
    /// The stage was fresh and did not run.
    Skipped,
    /// Outputs were restored from the run-cache instead of running.
    Restored,
    /// The stage ran and failed.
    Failed,
    /// The stage did not run because an upstream stage failed.
    Blocked,
    /// Would run (dry run).
    WouldRun,
}

impl StageOutcome {
    /// Lower-case name used in text output.
    pub fn as_str(self) -> &'static str {
        match self {
            StageOutcome::Executed => "executed",
            StageOutcome::Skipped => "skipped",
            StageOutcome::Restored => "restored",
            StageOutcome::Failed => "failed",
            StageOutcome::Blocked => "blocked",
            StageOutcome::WouldRun => "would_run",
        }
    }
}

/// One stage's line in a run record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRun {
    /// Stage id.
    pub id: crate::object::StageId,
    /// Stage kind.
    pub kind: String,
    /// What happened.
    pub outcome: StageOutcome,
    /// Wall time in seconds (0 for skipped).
    pub duration_s: f64,
    /// The stage key (empty when it could not be computed).
    pub key: crate::object::StageKey,
    /// Metrics the stage reported (or the cached metrics when skipped/restored).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Why it ran (or, for a frozen stage kept as it was, what would otherwise re-run it);
    /// empty when it was fresh.
    #[serde(default)]
    pub reasons: Vec<crate::reason::DirtyReason>,
    /// The error chain when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The fingerprint of an execution that failed: a successful one's is in the run-cache
    /// under its key, a failed one's only here, so `runs diff` can say what changed for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_fingerprint: Option<serde_json::Value>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still going (or its process died: see [`RunStatus::Abandoned`]).
    Running,
    /// Every stage succeeded or was fresh.
    Succeeded,
    /// A stage failed.
    Failed,
    /// `--dry-run`: nothing was changed.
    DryRun,
    /// Stopped by Ctrl-C or SIGTERM; the stages it finished stay fresh.
    Interrupted,
    /// Left `running` by a process that died without a word (`kill -9`, power loss).
    Abandoned,
}

impl RunStatus {
    /// The name used in records and output.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::DryRun => "dry_run",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Abandoned => "abandoned",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A run record (`runs/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id (sortable: UTC timestamp plus a short random suffix).
    pub id: String,
    /// Pipeline file, relative to the project root.
    pub pipeline: String,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// End time (RFC 3339).
    #[serde(default)]
    pub finished_at: String,
    /// How the run ended (or that it is still going).
    pub status: RunStatus,
    /// Per-stage outcomes in topological order.
    pub stages: Vec<StageRun>,
    /// Params set on the command line for this run only (`-S section.key=value`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
}

/// A named ref (`refs/<name>.json`), e.g. `best`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefRecord {
    /// Ref name.
    pub name: String,
    /// The artifact it points to.
    pub target: OutputRef,
    /// Key of the stage execution that produced the artifact.
    pub key: crate::object::StageKey,
    /// When it was set.
    pub updated_at: String,
    /// Free-form details (e.g. the promotion decision and both metric sets).
    #[serde(default)]
    pub details: serde_json::Value,
    /// Previous targets, most recent first (kept by gc).
    #[serde(default)]
    pub history: Vec<OutputRef>,
}
