use std::path::PathBuf;

/// Errors of the artifact store. Messages are full sentences that say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("could not {action} `{path}`: {source}{}", io_hint(source))]
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
    /// A run id prefix matched more than one recorded run.
    #[error(
        "`{prefix}` is the start of {count} run ids ({first}, {second}…); give more of the id (`isco-dag runs list` shows them)"
    )]
    AmbiguousRun {
        /// The prefix given.
        prefix: String,
        /// How many runs it matches.
        count: usize,
        /// The oldest of them.
        first: String,
        /// The next.
        second: String,
    },
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
    /// A table given to read holds more than the reader was allowed to take.
    #[error("the table `{path}` is too large: {message}")]
    TooLarge {
        /// The table's path (or the name it was uploaded under).
        path: PathBuf,
        /// What is too large, by how much, and what to do.
        message: String,
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
    /// The `[remote]` settings are not usable.
    #[error("the [remote] settings are not usable: {0}")]
    RemoteConfig(String),
    /// A request to the remote failed.
    #[error(
        "could not {action} `{url}` on the remote: {message}; check the [remote] url and endpoint, that the server is reachable, and the AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    )]
    Remote {
        /// What was being done ("upload", "download", "list", …).
        action: &'static str,
        /// The remote object (`s3://bucket/prefix/…`).
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A remote object's content does not hash to its name.
    #[error(
        "the remote object `{url}` is damaged: its content hashes to {got}, not to its name; nothing was taken from it. Delete it on the remote, then `isco-dag push` from a store that holds it intact (or re-run the stage that makes it)"
    )]
    RemoteCorrupt {
        /// The remote object.
        url: String,
        /// What its content hashes to.
        got: String,
    },
    /// A remote record (run-cache entry, run, ref) cannot be parsed.
    #[error(
        "the remote record `{url}` is not valid ({message}); delete it on the remote and push again from a store that has it"
    )]
    RemoteBadRecord {
        /// The remote record.
        url: String,
        /// The parse error.
        message: String,
    },
    /// A ref was moved on the remote by another store since this one last synced, and moved
    /// here too.
    #[error(
        "the ref `{name}` moved on the remote to {remote} (set {remote_at}) while this store moved it to {local} (set {local_at}); neither was overwritten. Keep the remote's with `isco-dag pull --theirs`, or replace it with this store's with `isco-dag push --ours`"
    )]
    RefConflict {
        /// Ref name.
        name: String,
        /// This store's target object.
        local: String,
        /// When this store set it.
        local_at: String,
        /// The remote's target object.
        remote: String,
        /// When the remote's was set.
        remote_at: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do about an I/O error, where the error alone does not say it.
fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull => {
            "; free space on that disk (`isco-dag gc` removes the store's objects that no kept run, stage record or ref needs, and what failed runs left in its `tmp/`)"
        }
        _ => "",
    }
}

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
