//! # artifacts — the versioned, content-addressed artifact store
//!
//! Everything a pipeline produces lives here, addressed by the blake3 hash of its content:
//!
//! ```text
//! <store>/
//!   objects/ab/cdef…      immutable, read-only blobs (a stage output file, or a tree manifest
//!                          listing the files of a directory output)
//!   checkouts/<tree>/      a directory output materialised once, for stages that read it
//!   stages/<stage>.json    the last successful execution of each stage: key, fingerprint, outputs
//!   cache/<key>.json       run-cache: every key ever produced, with its outputs and lineage
//!   runs/<run>.json        run history (one record per `isco-dag run`)
//!   refs/<name>.json       named refs such as `best` (the promoted model)
//!   lock                   the store lock (`flock`); released by the OS when its holder dies
//!   tmp/                   staging area for atomic writes (cleared by `gc`)
//!   verified.json          stamps (size, times, inode) of objects last hashed intact, so
//!                          unchanged objects are not hashed again by every command
//!   quarantine/            damaged objects and records, moved aside by a hash check
//!   shared/<name>/         caches of values keyed by their own content that stages share
//!                          across runs (sentence vectors by text hash); not in any key, not
//!                          touched by `gc`, safe to delete
//! ```
//!
//! Every write is atomic: a temp file in the same file system, `fsync`, then `rename`. Objects
//! are never modified in place, so a reader never sees half an object and a process killed at
//! any point leaves the store consistent (at worst a stray temp file that `gc` removes).
//!
//! Tables are Parquet files written with arrow-rs ([`table`]), readable by pandas, polars and
//! duckdb. `verify` re-hashes every object; `gc` drops what no kept run, stage record or ref
//! reaches.
#![warn(missing_docs)]
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod atomic;
mod encoding;
mod error;
mod lock;
mod object;
mod reason;
mod records;
pub mod remote;
mod statcache;
mod store;
pub mod table;

pub use error::{Error, Result};
pub use lock::StoreLock;
pub use reason::{DirtyReason, param_text};
pub use records::{
    CacheEntry, RefRecord, RunRecord, RunStatus, StageOutcome, StageRecord, StageRun,
};
pub use remote::{Direction, RefSync, Remote, RemoteSettings, Transfer};
/// Where the store lives when neither the pipeline (`store = …`) nor the command line
/// (`--store`) says: relative to the project root.
pub const DEFAULT_STORE_DIR: &str = "artifacts/store";

/// The time now in UTC, to the second, as every record of the store and every file
/// isco-dag writes gives it: `2026-12-05T17:48:46Z` (RFC 3339).
pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub use store::{
    GcMode, GcReport, ObjectId, OutputKind, OutputRef, ReadsOf, StageId, StageKey, Store,
    UpstreamRead, VerifyReport, hash_file,
};

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_to_the_second() {
        let t = super::timestamp();
        let parsed = chrono::DateTime::parse_from_rfc3339(&t).unwrap();
        assert_eq!(parsed.offset().local_minus_utc(), 0);
        assert_eq!(t.len(), "2026-12-05T17:48:46Z".len(), "{t}");
        assert!(t.ends_with('Z'), "{t}");
    }
}
