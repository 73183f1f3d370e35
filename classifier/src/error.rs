use std::path::PathBuf;

/// Errors of the classifier crate; messages name the file and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reference or model file is unusable.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// An I/O error.
    #[error("could not {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Training or inference cannot proceed.
    #[error("{0}")]
    Model(String),
}
