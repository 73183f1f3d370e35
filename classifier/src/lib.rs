//! # classifier — ISCO-08 taxonomy, text features, burn networks, inference with fallback
//!
//! | module | job |
//! |---|---|
//! | [`rng`] | seedable SplitMix64 for reproducible shuffles and splits |
//! | [`taxonomy`] | ISCO-08 codes, titles and parent links at 1/2/3/4 digits, read from the ILO, ESCO or isco-dag reference CSV layouts (or codes only, without a file) |
//! | [`kind`] | the model kinds (`ngram`, `ensemble`, `transformer`) |
//! | [`features`] | fastText-style hashed word, bigram and character n-gram features |
//! | [`text`] | the text normalisation every stage and the predictor share |
//! | [`titles`] | occupation titles coded outside the records (ESCO labels, an index of titles), which calibrate titles the model never saw |
//! | [`bf16`] | the encoders' linear products in bfloat16 on CPUs with AVX-512 BF16 |
//! | [`encoder`] | pretrained BERT/RoBERTa/MPNet sentence encoders (safetensors + tokenizers) as burn modules |
//! | [`model`] | the `ngram` network (embedding bag + head) and its sparse-aware burn training loop |
//! | [`augment`] | reference augmentation: training examples from ISCO titles, tasks and example occupations |
//! | [`calibrate`] | temperature scaling and expected calibration error |
//! | [`metrics`] | accuracy, macro-F1, top-3, per-level accuracy, ECE, production rate, error analysis |
//! | [`ann`] | approximate nearest-neighbour search (HNSW) for retrieval indexes beyond a size limit |
//! | [`retrieval`] | bi-encoder retrieval over the reference and past records, and its ensemble with the ngram model |
//! | [`training`] | the training API: `fit` a model of any kind from a spec, `fine_tune` it on corrections |
//! | [`transformer`] | the `transformer` kind: a pretrained encoder fine-tuned as a classifier within a CPU budget |
//! | [`reranker`] | the cross-encoder that re-reads a record with its best candidate codes' texts, and how its scores join the model |
//! | [`artifact`] | model kinds, `model.json`, the typed parts of each kind, saving and loading |
//! | [`predict`] | inference with grades, hierarchical fallback, top-k, explanations, LRU cache |
//! | [`rank`] | top-k selection shared by inference and search |
#![warn(missing_docs)]
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod agreement;
pub mod ann;
pub mod artifact;
pub mod augment;
pub mod bf16;
pub mod calibrate;
pub mod device;
pub mod encoder;
mod error;
pub mod features;
pub mod kind;
pub mod metrics;
pub mod model;
pub mod predict;
pub mod rank;
mod record;
pub mod reranker;
pub mod retrieval;
pub mod rng;
pub mod taxonomy;
pub mod text;
pub mod titles;
pub mod training;
pub mod transformer;

pub use error::Error;
pub use rng::Rng;
pub use taxonomy::{IscoCode, Taxonomy};

/// The largest absolute difference between two vectors, element by element (for tests that
/// compare two computations of the same numbers).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
