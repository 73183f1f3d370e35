use std::path::PathBuf;

/// Errors of the stage kinds. Messages are full sentences that name the file (and row and
/// column where there is one) and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file is unusable as a whole (missing column, not CSV/Parquet, …).
    #[error("{}: {message}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// An input file lacks a column it must have.
    #[error(
        "{}: has no column `{column}` (columns: {}); name one column `{column}` in the header row{}{hint}",
        path.display(),
        columns.join(", "),
        like.as_ref().map(|l| format!(" (`{l}` looks like it)")).unwrap_or_default()
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column looked for.
        column: String,
        /// The columns the header has.
        columns: Vec<String>,
        /// A column of the header that differs from `column` only in case, spaces or
        /// punctuation (`Job Title` for `job_title`).
        like: Option<String>,
        /// Another way to fix it, starting with "; " or empty (e.g. the param naming the
        /// column).
        hint: String,
    },
    /// A file could not be written.
    #[error("could not write `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The artifact store or a table failed.
    #[error(transparent)]
    Artifacts(#[from] artifacts::Error),
    /// `train-encoder` was given no encoder to start from.
    #[error(
        "the `encoder` input of `train-encoder` lists no model.safetensors; point it at a pretrained encoder's files, e.g. `encoder = \"models/pretrained/all-MiniLM-L6-v2/*.*\"` (run `isco-dag models fetch minilm` first)"
    )]
    NoBaseEncoder,
    /// Nothing usable is left to work with.
    #[error("{0}")]
    Empty(String),
    /// A command was given inputs that do not go together (shards of different runs, …).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// A missing column's error ending with `hint(column)`, the way to fix it that the
    /// caller knows of (the setting that names the column); any other error as it is.
    pub fn with_column_hint(mut self, hint: impl FnOnce(&str) -> String) -> Error {
        if let Error::MissingColumn {
            column, hint: h, ..
        } = &mut self
        {
            *h = hint(column);
        }
        self
    }
}
