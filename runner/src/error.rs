use std::path::PathBuf;

/// Errors of the pipeline runner. Messages are full sentences that say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file (or the one it extends) is not a file.
    #[error("no pipeline file at `{path}`{hint}")]
    NoPipelineFile {
        /// The path given.
        path: PathBuf,
        /// What to give instead, when something close exists.
        hint: String,
    },
    /// A file could not be read.
    #[error("could not read `{path}`: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A TOML file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the line, column and key).
        message: String,
    },
    /// A semantic error in a pipeline or config file, located by line when known.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Spec {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong and what to do.
        message: String,
    },
    /// The stages form a cycle.
    #[error("{}: the stages form a cycle: {}; remove one of these dependencies", path.display(), cycle.join(" -> "))]
    Cycle {
        /// The pipeline file.
        path: PathBuf,
        /// The stage ids around the cycle, first repeated at the end.
        cycle: Vec<String>,
    },
    /// A stage named on the command line does not exist.
    #[error("the pipeline has no stage `{name}`{hint}; `isco-dag dag <pipeline>` lists its stages")]
    UnknownStage {
        /// The name given.
        name: String,
        /// ` (did you mean `…`?)` for a near stage id, else empty.
        hint: String,
    },
    /// `--only` was asked for a stage whose upstream has never produced outputs.
    #[error(
        "stage `{stage}` needs the outputs of `{upstream}`, which has no successful run in this store; run without --only first"
    )]
    UpstreamMissing {
        /// The stage asked for.
        stage: String,
        /// The upstream stage without a record.
        upstream: String,
    },
    /// The artifact store failed.
    #[error(transparent)]
    Store(#[from] artifacts::Error),
    /// A stage's upstream outputs are not known when it is about to run.
    #[error("stage `{stage}` cannot run: the outputs of {} are not available; run the whole pipeline", upstream.join(", "))]
    UpstreamUnavailable {
        /// The stage.
        stage: String,
        /// The upstream stages without outputs.
        upstream: Vec<String>,
    },
    /// A stage returned an error (the message holds its whole chain of causes).
    #[error("{0}")]
    StageFailed(String),
    /// A stage panicked.
    #[error("the stage panicked: {0}; this is a bug, please report it")]
    StagePanicked(String),
    /// A stage finished without writing a declared output.
    #[error(
        "stage kind `{kind}` did not write its output `{output}` ({file}); this is a bug in the stage"
    )]
    OutputNotWritten {
        /// The stage kind.
        kind: String,
        /// The output's name.
        output: String,
        /// The file it should have written.
        file: String,
    },
    /// One or more stages failed.
    #[error("{failed} stage(s) failed: {}; see the errors above and `isco-dag runs show last`", stages.join(", "))]
    StagesFailed {
        /// How many.
        failed: usize,
        /// Which.
        stages: Vec<String>,
    },
    /// An artifact given to `lineage` was not found.
    #[error(
        "no artifact `{0}` is known to the store; give a workspace output path, `stage.output`, a ref name such as `best`, or an object id prefix"
    )]
    UnknownArtifact(String),
    /// A directory given to `lineage` holds no output the store recorded.
    #[error(
        "`{0}` does not hold an output the store recorded: its files were changed since a stage wrote them, or another store's run wrote them; run the pipeline that writes it again, or give `stage.output` or a ref name"
    )]
    UnrecordedDirectory(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
