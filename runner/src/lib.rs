//! # runner — declarative DAG pipelines with content-based freshness
//!
//! The runner knows nothing of ISCO: it reads a pipeline file, builds the stage graph, decides
//! which stages are stale, and runs them through the [`Stage`] trait that the `stages` crate
//! implements. Its parts, in the order a run uses them:
//!
//! | module | job |
//! |---|---|
//! | [`spec`] | raw TOML (`deny_unknown_fields`) → validated [`Pipeline`]: `extends`, config sections, inputs, outputs; every error names the file and line |
//! | [`dag`] | the petgraph graph of stages; cycles reported by stage name; text/dot/mermaid |
//! | [`fingerprint`] | what enters a stage's key, and the [`DirtyReason`]s that explain a change |
//! | [`exec`] | the scheduler: freshness, run-cache restores, parallel execution, run records |
//! | [`history`] | run history (`runs list/show/diff`) and lineage |
//! | [`stage`] | the [`Stage`] trait, its context and the kind registry |
//! | [`workspace`] | the workspace copies of outputs: what a fresh stage's copy holds, putting it back without losing an edit |
//!
//! A stage is *fresh* when the key of its fingerprint equals the key of its last successful
//! execution and that execution's outputs are intact in the store; fresh stages are skipped.
//! A stale stage whose key was produced before is *restored* from the run-cache; only
//! otherwise does it execute. Keys are recorded only after success. A pipeline's `frozen`
//! stages keep their last result even when stale. A fresh stage's workspace copies that
//! were deleted or edited are put back (an edit moved aside first, never lost).
#![warn(missing_docs)]
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod dag;
mod error;
pub mod exec;
pub mod fingerprint;
pub mod history;
pub mod spec;
pub mod stage;
pub mod workspace;

pub use error::{Error, Result};
pub use exec::{
    Event, RunOptions, RunSummary, StageState, StageStatus, check_selection, run_pipeline, status,
};
pub use fingerprint::{CACHE_VERSION, DirtyReason, Fingerprint};
pub use spec::Pipeline;
pub use stage::{
    InputDecl, OutputDecl, Progress, Registry, Stage, StageContext, StageError, StageReport,
};
pub use workspace::{WorkspaceCopy, WorkspaceDrift};
