use std::path::PathBuf;

/// Errors of the artifact store. Messages are full sentences that say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("could not {action} `{path}`: {source}")]
    Io {
        /// What was being done ("read", "write", "create directory", …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON record in the store could not be parsed.
    #[error(
        "the store record `{path}` is not valid JSON ({source}); `isco-dag verify --repair` moves it aside"
    )]
    BadRecord {
        /// The record's path.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// An object that a record points to is missing.
    #[error(
        "object {id} is not in the store at `{}`; re-run the stage that produced it (`isco-dag run --force <stage>`)",
        store.display()
    )]
    MissingObject {
        /// The object id.
        id: String,
        /// The store root.
        store: PathBuf,
    },
    /// A run id did not match any recorded run.
    #[error("no run `{0}` is recorded in this store; `isco-dag runs list` shows the recorded runs")]
    UnknownRun(String),
    /// A ref name is not set.
    #[error("the ref `{0}` is not set in this store; run a pipeline with a `promote` stage first")]
    UnknownRef(String),
    /// The lock is held by another process and waiting was not allowed.
    #[error(
        "the store `{path}` is locked by another isco-dag process ({holder}); wait for it to finish or run again"
    )]
    Locked {
        /// The store root.
        path: PathBuf,
        /// Who holds it, as recorded in the lock file.
        holder: String,
    },
    /// A Parquet or Arrow operation failed.
    #[error("could not {action} the table `{path}`: {message}")]
    Table {
        /// What was being done.
        action: &'static str,
        /// The table's path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn io(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.into(),
            source,
        })
    }
}
