//! The kinds of model: what `model_kind` names and `model.json` records.

use serde::{Deserialize, Serialize};

/// The kinds of model `train` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// The fastText-style n-gram network alone.
    #[default]
    Ngram,
    /// The n-gram network mixed with bi-encoder retrieval (and optionally a transformer).
    Ensemble,
    /// A pretrained encoder fine-tuned as a classifier.
    Transformer,
}

impl ModelKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [ModelKind; 3] = [
        ModelKind::Ngram,
        ModelKind::Ensemble,
        ModelKind::Transformer,
    ];

    /// The name used in configuration and `model.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Ngram => "ngram",
            ModelKind::Ensemble => "ensemble",
            ModelKind::Transformer => "transformer",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}
