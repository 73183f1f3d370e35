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
    /// A kind that embeds text was given no encoder.
    #[error(
        "model_kind = \"{kind}\" needs the `encoder` input to list a pretrained encoder's files (config.json, model.safetensors, tokenizer.json), e.g. `encoder = \"models/pretrained/all-MiniLM-L6-v2/*.*\"`; run `isco-dag models fetch minilm` to download one"
    )]
    MissingEncoder {
        /// The kind.
        kind: crate::kind::ModelKind,
    },
    /// Validation has no example of a trained code.
    #[error(
        "model_kind = \"{kind}\" needs labelled validation records (for {needed_for}); the validation split has none with a trained code"
    )]
    NoLabelledValidation {
        /// The kind.
        kind: crate::kind::ModelKind,
        /// What they are for.
        needed_for: &'static str,
    },
    /// The base model cannot be fine-tuned.
    #[error(
        "fine-tune continues `ngram` and `ensemble` models; the base model is a `{kind}` model. Re-run `train` instead: the `corrections` stage writes records with the corrected codes (apply_to_records), which a transformer pipeline can train on"
    )]
    CannotFineTune {
        /// The base model's kind.
        kind: crate::kind::ModelKind,
    },
    /// There is nothing to fine-tune on.
    #[error(
        "there are no corrections to fine-tune on; drop corrections CSV files (job_title, duties_description, corrected_isco_code) into the folder the `corrections` stage reads, e.g. data/corrections/"
    )]
    NoCorrections,
}
