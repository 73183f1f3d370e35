//! What the model stages share: the encoder directory behind an `encoder` input, the store's
//! shared embedding cache, progress bars for the classifier's training, and the provenance
//! written into a model's description.

use std::path::{Path, PathBuf};

use classifier::artifact::ModelMeta;
use classifier::predict::Predictor;
use runner::StageContext;

/// The encoder directory behind a stage's `encoder` input, if it names one: the directory
/// of its listed `model.safetensors`, or a directory output holding one (`train-encoder`'s).
pub fn encoder_dir(ctx: &StageContext<'_>) -> Option<PathBuf> {
    let files = ctx.inputs.get("encoder")?;
    files.iter().find_map(|f| {
        if f.is_dir() && f.join("model.safetensors").is_file() {
            Some(f.clone())
        } else if f.file_name().is_some_and(|n| n == "model.safetensors") {
            f.parent().map(Path::to_path_buf)
        } else {
            None
        }
    })
}

/// Refuses, before anything runs, an `encoder` input that names no file (a glob such as
/// `models/pretrained/all-MiniLM-L6-v2/*.*` before the encoder is downloaded), for a stage
/// that reads one.
pub fn check_encoder_given(files: &dyn Fn(&str) -> Option<usize>) -> Result<(), String> {
    match files("encoder") {
        Some(n) if n > 0 => Ok(()),
        _ => Err("the `encoder` input names no file; list a sentence encoder's files (config.json, model.safetensors, tokenizer.json), e.g. `encoder = \"models/pretrained/all-MiniLM-L6-v2/*.*\"`, and run `isco-dag models fetch minilm` to download that one".into()),
    }
}

/// A stage's resolved params without `precision` when it is fp32, the computation a stage's
/// key already stands for without it: written out or left out, fp32 gives the same key, so it
/// re-runs nothing and finds the results stored under that key.
pub fn without_default_precision(mut params: serde_json::Value) -> serde_json::Value {
    if let serde_json::Value::Object(m) = &mut params
        && m.get("precision")
            .and_then(|p| p.as_str())
            .is_some_and(|p| p.parse::<classifier::device::Precision>() == Ok(Default::default()))
    {
        m.remove("precision");
    }
    params
}

/// Where stages share sentence vectors: `<store>/shared/embeddings/<encoder fingerprint>/`
/// (see [`classifier::retrieval::DiskCache`]; safe to delete).
pub fn shared_cache_root(ctx: &StageContext<'_>) -> PathBuf {
    ctx.store.shared_dir("embeddings")
}

/// Attaches the shared embedding cache to an ensemble model (other kinds have no encoder
/// vectors to share). A cache that cannot be opened only costs time, so it is a warning.
pub fn attach_shared_cache(ctx: &StageContext<'_>, pred: &Predictor) {
    if let Some(r) = pred.retrieval()
        && let Err(e) = r.attach_shared_cache(&shared_cache_root(ctx))
    {
        tracing::warn!("the shared embedding cache is not used: {e}");
    }
}

/// Writes the vectors an ensemble model embedded to the shared cache and returns how many it
/// had to compute (`None` for other kinds).
pub fn flush_shared_cache(pred: &Predictor) -> Option<usize> {
    let r = pred.retrieval()?;
    Some(r.flush_shared_cache().unwrap_or_else(|e| {
        tracing::warn!("could not write to the shared embedding cache: {e}");
        0
    }))
}

/// The stage's progress bar, for the classifier's training.
pub struct Bar<'a>(pub &'a runner::Progress);

impl classifier::training::Progress for Bar<'_> {
    fn start(&self, len: u64, message: &str) {
        self.0.start(len, message);
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn message(&self, message: &str) {
        self.0.message(message);
    }
}

/// Records which run and stage trained the model, and when, beside its training summary.
pub fn provenance(ctx: &StageContext<'_>, meta: &mut ModelMeta) {
    if let serde_json::Value::Object(m) = &mut meta.summary {
        m.insert("run_id".into(), ctx.run_id.into());
        m.insert("stage".into(), ctx.id.into());
        m.insert("trained_at".into(), artifacts::timestamp().into());
    }
}
