//! The served model: loaded once, shared by every request, swapped without a pause when the
//! `best` ref moves (requests in flight finish on the model they started with).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use artifacts::Store;
use classifier::predict::{InferenceConfig, Predictor};
use serde_json::{Value, json};

/// A loaded model and what `/model` tells about it.
pub struct Loaded {
    /// The predictor.
    pub predictor: Predictor,
    /// Version: the store object id of the model artifact.
    pub version: artifacts::ObjectId,
    /// Ref details: promoted_at, training run, metrics.
    pub info: Value,
}

/// Holds the current model.
pub struct ModelHolder {
    current: RwLock<Option<Arc<Loaded>>>,
    store_dir: PathBuf,
    ref_name: String,
    inference: InferenceConfig,
}

impl ModelHolder {
    /// A holder that loads `ref_name` from the store at `store_dir`.
    pub fn new(store_dir: PathBuf, ref_name: String, inference: InferenceConfig) -> ModelHolder {
        ModelHolder {
            current: RwLock::new(None),
            store_dir,
            ref_name,
            inference,
        }
    }

    /// The current model, if one is loaded.
    pub fn get(&self) -> Option<Arc<Loaded>> {
        self.current.read().expect("model lock").clone()
    }

    /// Checks the ref and loads its target if it changed. Returns the new version when a
    /// model was (re)loaded. Blocking: call from a blocking thread.
    pub fn refresh(&self) -> Result<Option<artifacts::ObjectId>, String> {
        // No store yet (the pipeline has not run here): nothing to load. Opening one would
        // create an empty store wherever the service was started.
        if !self.store_dir.is_dir() {
            return Ok(None);
        }
        let store = Store::open(&self.store_dir).map_err(|e| e.to_string())?;
        let Some(r) = store.get_ref(&self.ref_name).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if self.get().is_some_and(|m| m.version == r.target.id) {
            return Ok(None);
        }
        let dir = store.checkout(&r.target).map_err(|e| e.to_string())?;
        let predictor = Predictor::load(&dir, self.inference.clone()).map_err(|e| e.to_string())?;
        // An ensemble reads the sentence vectors the pipeline's stages left in the store
        // (training titles, test and predicted rows), so it embeds only texts never seen.
        if let Some(r) = predictor.retrieval()
            && let Err(e) = r.attach_shared_cache(&store.shared_dir("embeddings"))
        {
            tracing::warn!("the shared embedding cache is not used: {e}");
        }
        let summary = &predictor.meta.summary;
        let info = json!({
            "ref": self.ref_name,
            "promoted_at": r.updated_at,
            "training_run": summary["run_id"],
            "training_stage": summary["stage"],
            "trained_at": summary["trained_at"],
            "kind": predictor.meta.kind,
            "classes": predictor.meta.labels.len(),
            "training_metrics": summary["metrics"],
            "evaluation": r.details.get("candidate").map(|c| c["metrics"].clone()).unwrap_or(Value::Null),
            "promotion_reason": r.details.get("reason").cloned().unwrap_or(Value::Null),
        });
        let version = r.target.id.clone();
        *self.current.write().expect("model lock") = Some(Arc::new(Loaded {
            predictor,
            version: version.clone(),
            info,
        }));
        Ok(Some(version))
    }
}
