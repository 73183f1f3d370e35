//! What training reads: labelled texts, the files around them, and a way to report progress.

use std::path::Path;

use crate::features::{FeatureConfig, FeatureMatrix};

/// Labelled records: normalised texts (`title | duties`) and their 4-digit codes.
#[derive(Debug, Clone, Copy)]
pub struct Examples<'a> {
    /// Normalised texts.
    pub text: &'a [String],
    /// Their codes.
    pub isco_code: &'a [String],
}

impl<'a> Examples<'a> {
    /// Texts and codes of the same length.
    pub fn new(text: &'a [String], isco_code: &'a [String]) -> Examples<'a> {
        assert_eq!(text.len(), isco_code.len(), "a code per text");
        Examples { text, isco_code }
    }

    /// No examples.
    pub fn empty() -> Examples<'static> {
        Examples {
            text: &[],
            isco_code: &[],
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// Files training reads besides the records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Files<'a> {
    /// A pretrained sentence encoder's directory (`ensemble`, `transformer`).
    pub encoder: Option<&'a Path>,
    /// The directory of the model this training run produced last time: its embedding cache
    /// spares embedding the same index texts again, and its n-gram network, when trained on
    /// the same examples and settings, spares training that again.
    pub previous_model: Option<&'a Path>,
    /// Train every part again, taking nothing from the previous model but its embedding
    /// cache (the stage was forced: `run --force`).
    pub forced: bool,
    /// Where sentence vectors are shared between stages (one directory per encoder).
    pub shared_cache: Option<&'a Path>,
    /// Titles coded outside the records ([`crate::titles`]): an ensemble's calibration of
    /// titles it never saw is fitted on them too. Never trained on or indexed.
    pub external_titles: &'a [crate::titles::LabelledTitle],
}

impl<'a> Files<'a> {
    /// The previous model whose trained parts this run may take when their inputs are
    /// unchanged: none when the stage was forced.
    pub fn reusable_model(&self) -> Option<&'a Path> {
        self.previous_model.filter(|_| !self.forced)
    }
}

/// Progress of a long training step, shown by the caller (a progress bar, a log).
pub trait Progress: Sync {
    /// A new phase of `len` steps.
    fn start(&self, len: u64, message: &str);
    /// `n` steps done.
    fn inc(&self, n: u64);
    /// What is happening now.
    fn message(&self, message: &str);
}

/// Progress nobody watches.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: u64, _: &str) {}
    fn inc(&self, _: u64) {}
    fn message(&self, _: &str) {}
}

/// Class indices of codes (codes outside `labels` are `None`).
pub fn encode(labels: &[String], codes: &[String]) -> Vec<Option<u32>> {
    codes
        .iter()
        .map(|c| labels.binary_search(c).ok().map(|i| i as u32))
        .collect()
}

/// Features and class indices of the examples whose code is a label (validation scoring and
/// calibration; examples of other codes cannot be scored and are left out).
pub fn labelled_features(
    fc: &FeatureConfig,
    labels: &[String],
    examples: Examples<'_>,
) -> (FeatureMatrix, Vec<u32>) {
    let (idx, y): (Vec<usize>, Vec<u32>) = encode(labels, examples.isco_code)
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .unzip();
    let texts: Vec<String> = idx.iter().map(|&i| examples.text[i].clone()).collect();
    (FeatureMatrix::build(fc, &texts), y)
}

/// The seeded sample of labelled validation examples an ensemble's mix and calibration are
/// fitted on: (texts, class indices). Training and fine-tuning draw the same sample, so the
/// fine-tune finds its queries in the base model's embedding cache.
pub fn fit_sample(
    va: Examples<'_>,
    labels: &[String],
    seed: u64,
    rows: usize,
) -> (Vec<String>, Vec<u32>) {
    let y_all = encode(labels, va.isco_code);
    let mut idx: Vec<usize> = (0..va.len()).filter(|&i| y_all[i].is_some()).collect();
    crate::Rng::new(seed).shuffle(&mut idx);
    idx.truncate(rows);
    idx.sort_unstable();
    let texts = idx.iter().map(|&i| va.text[i].clone()).collect();
    let y = idx.iter().map(|&i| y_all[i].expect("labelled")).collect();
    (texts, y)
}
