//! What to train: [`FitSpec`] nests the configs of each model part, and
//! [`FineTuneSpec`] says how to continue a model on corrections.
//!
//! The configuration file keeps one flat list of keys under `[model]` and `[training]`
//! (`dim`, `transformer_lr`, `ann_candidates`, …), the layout users write and stage keys are
//! computed from. [`FitSpec`] reads and writes that layout by routing each key to the part
//! it configures — the `transformer_` prefix to [`TuneConfig`], the retrieval keys to
//! [`EnsembleConfig`] — so every part's settings are declared once, in its own struct.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::ann::SearchConfig;
use crate::artifact::ModelKind;
use crate::calibrate::CalibrationMethod;
use crate::features::FeatureConfig;
use crate::model::TrainConfig;
use crate::transformer::TuneConfig;

/// The retrieval half of an `ensemble`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleConfig {
    /// Longest token sequence the encoder reads (`encoder_max_seq_length`).
    pub max_seq_length: usize,
    /// Validation rows the mixing weights and the calibration are fitted on
    /// (`retrieval_fit_rows`).
    pub fit_rows: usize,
    /// Add the distinct training titles and duty clauses to the indexes
    /// (`retrieval_index_records`).
    pub index_records: bool,
    /// Also fine-tune the encoder as a transformer classifier and mix it in
    /// (`ensemble_transformer`).
    pub transformer: bool,
    /// When the indexes are searched through an HNSW graph (`exact_search_limit`,
    /// `ann_ef_construction`, `ann_candidates`).
    pub search: SearchConfig,
    /// Accuracy the cascade may give up against running the whole ensemble on every row,
    /// on the validation sample (`cascade_max_loss`; 0.002 is a fifth of a point).
    pub cascade_max_loss: f64,
    /// Fit a calibration and cascade threshold of their own for titles the model never saw
    /// given without duties (`title_only_calibration`; see [`crate::artifact::TitleOnly`]).
    pub title_only_calibration: bool,
    /// Fewest validation records with unseen titles to fit it on; with fewer, such titles
    /// are calibrated like every other row (`title_only_min_rows`).
    pub title_only_min_rows: usize,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            max_seq_length: 128,
            fit_rows: 5000,
            index_records: true,
            transformer: false,
            search: SearchConfig::default(),
            cascade_max_loss: 0.002,
            title_only_calibration: true,
            title_only_min_rows: 200,
        }
    }
}

/// Everything `fit` needs to know to train a model of any kind.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSpec {
    /// The kind of model (`model_kind`).
    pub kind: ModelKind,
    /// The featuriser of the n-gram network.
    pub features: FeatureConfig,
    /// The n-gram network and its training.
    pub train: TrainConfig,
    /// Add training examples from the reference file, when one is given
    /// (`reference_augmentation`).
    pub reference_augmentation: bool,
    /// Times each reference example is repeated per epoch (`augmentation_repeats`).
    pub augmentation_repeats: u32,
    /// How the confidence is calibrated on validation (`calibration`).
    pub calibration: CalibrationMethod,
    /// After every fit on validation, train the n-gram network again on the training and
    /// validation records together, and index validation's titles and duty clauses too
    /// (`refit`); what was fitted on validation is kept.
    pub refit: bool,
    /// The retrieval half (kind `ensemble`).
    pub ensemble: EnsembleConfig,
    /// The fine-tuned encoder (kind `transformer`, or an ensemble with one); its seed is
    /// the network's `seed`.
    pub transformer: TuneConfig,
    /// Where the encoder embeds and trains (`device`; kinds with an encoder).
    pub device: crate::device::DeviceChoice,
    /// The float type of the encoder's products there (`precision`; kinds with an encoder).
    pub precision: crate::device::Precision,
}

impl Default for FitSpec {
    fn default() -> Self {
        FitSpec {
            kind: ModelKind::Ngram,
            features: FeatureConfig {
                // The duties' character n-grams carry unseen occupations; field weights keep
                // them from drowning the title.
                duties_char_ngrams: true,
                field_weights: Some([2.0, 1.5, 1.0]),
                ..FeatureConfig::default()
            },
            train: TrainConfig::default(),
            reference_augmentation: true,
            augmentation_repeats: 2,
            calibration: CalibrationMethod::Isotonic,
            refit: false,
            ensemble: EnsembleConfig::default(),
            transformer: TuneConfig::default(),
            device: crate::device::DeviceChoice::Auto,
            precision: crate::device::Precision::Fp32,
        }
    }
}

/// Configuration keys of the ensemble's settings and the field each sets.
const ENSEMBLE_KEYS: [(&str, &str); 7] = [
    ("encoder_max_seq_length", "max_seq_length"),
    ("retrieval_fit_rows", "fit_rows"),
    ("retrieval_index_records", "index_records"),
    ("ensemble_transformer", "transformer"),
    ("cascade_max_loss", "cascade_max_loss"),
    ("title_only_calibration", "title_only_calibration"),
    ("title_only_min_rows", "title_only_min_rows"),
];
/// Configuration keys of the approximate search and the field each sets.
const SEARCH_KEYS: [(&str, &str); 3] = [
    ("exact_search_limit", "exact_limit"),
    ("ann_ef_construction", "ef_construction"),
    ("ann_candidates", "candidates"),
];
/// The prefix of the transformer's keys.
const TRANSFORMER: &str = "transformer_";
/// Keys of the spec itself.
const OWN_KEYS: [&str; 7] = [
    "device",
    "precision",
    "model_kind",
    "calibration",
    "refit",
    "reference_augmentation",
    "augmentation_repeats",
];

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("configs serialise")
}

impl FitSpec {
    /// The flat configuration layout: one key per setting, as `[model]` and `[training]`
    /// hold them.
    pub fn to_flat(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("model_kind".into(), to_value(&self.kind));
        out.insert("calibration".into(), to_value(&self.calibration));
        out.insert("refit".into(), self.refit.into());
        out.insert("device".into(), to_value(&self.device));
        out.insert("precision".into(), to_value(&self.precision));
        out.insert(
            "reference_augmentation".into(),
            self.reference_augmentation.into(),
        );
        out.insert(
            "augmentation_repeats".into(),
            self.augmentation_repeats.into(),
        );
        let mut features = object(to_value(&self.features));
        // The flat layout writes "no field weights" as an empty list.
        if features.get("field_weights").is_none_or(Value::is_null) {
            features.insert("field_weights".into(), Value::Array(Vec::new()));
        }
        out.extend(features);
        out.extend(object(to_value(&self.train)));
        let ensemble = object(to_value(&self.ensemble));
        for (key, field) in ENSEMBLE_KEYS {
            out.insert(key.into(), ensemble[field].clone());
        }
        let search = object(to_value(&self.ensemble.search));
        for (key, field) in SEARCH_KEYS {
            out.insert(key.into(), search[field].clone());
        }
        for (field, v) in object(to_value(&self.transformer)) {
            if field != "seed" {
                out.insert(format!("{TRANSFORMER}{field}"), v);
            }
        }
        out
    }

    /// Reads the flat layout; keys not given keep their defaults. An unknown key or a value
    /// of the wrong type is an error naming the key.
    pub fn from_flat(given: &Map<String, Value>) -> Result<FitSpec, String> {
        let mut flat = FitSpec::default().to_flat();
        for (k, v) in given {
            if !flat.contains_key(k) {
                let mut known: Vec<&String> = flat.keys().collect();
                known.sort();
                return Err(format!(
                    "unknown field `{k}`, expected one of {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            flat.insert(k.clone(), v.clone());
        }
        let mut features = Map::new();
        let mut train = Map::new();
        let mut ensemble = Map::new();
        let mut search = Map::new();
        let mut transformer = Map::new();
        // Which part a key belongs to: the keys each part's defaults serialise to.
        let feature_keys = object(to_value(&FeatureConfig::default()));
        let train_keys = object(to_value(&TrainConfig::default()));
        for (k, v) in &flat {
            if let Some((_, f)) = ENSEMBLE_KEYS.iter().find(|(key, _)| key == k) {
                ensemble.insert((*f).into(), v.clone());
            } else if let Some((_, f)) = SEARCH_KEYS.iter().find(|(key, _)| key == k) {
                search.insert((*f).into(), v.clone());
            } else if let Some(f) = k.strip_prefix(TRANSFORMER) {
                transformer.insert(f.into(), v.clone());
            } else if k == "field_weights" || feature_keys.contains_key(k) {
                features.insert(k.clone(), v.clone());
            } else if train_keys.contains_key(k) {
                train.insert(k.clone(), v.clone());
            } else {
                debug_assert!(OWN_KEYS.contains(&k.as_str()), "{k} has no home");
            }
        }
        if let Some(Value::Array(w)) = features.get("field_weights") {
            match w.len() {
                0 => {
                    features.remove("field_weights");
                }
                3 => {}
                _ => {
                    return Err(format!(
                        "`field_weights` {w:?} must be empty (plain mean) or three non-negative shares [title, duties words, duties characters] that are not all 0"
                    ));
                }
            }
        }
        let own = |key: &str| flat[key].clone();
        transformer.insert("seed".into(), flat["seed"].clone());
        let mut ensemble_value = ensemble;
        ensemble_value.insert("search".into(), Value::Object(search));
        Ok(FitSpec {
            kind: typed("model_kind", own("model_kind"))?,
            calibration: typed("calibration", own("calibration"))?,
            refit: typed("refit", own("refit"))?,
            device: typed("device", own("device"))?,
            precision: typed("precision", own("precision"))?,
            reference_augmentation: typed("reference_augmentation", own("reference_augmentation"))?,
            augmentation_repeats: typed("augmentation_repeats", own("augmentation_repeats"))?,
            features: typed_part(Value::Object(features), &|f| f.to_string())?,
            train: typed_part(Value::Object(train), &|f| f.to_string())?,
            ensemble: typed_part(Value::Object(ensemble_value), &|f| {
                let f = f.strip_prefix("search.").unwrap_or(f);
                ENSEMBLE_KEYS
                    .iter()
                    .chain(&SEARCH_KEYS)
                    .find(|(_, field)| *field == f)
                    .map(|(key, _)| key.to_string())
                    .unwrap_or_else(|| f.to_string())
            })?,
            transformer: typed_part(Value::Object(transformer), &|f| format!("{TRANSFORMER}{f}"))?,
        })
    }

    /// Whether this kind reads the configuration key `key`. Every kind trains the n-gram
    /// network (a transformer is explained by it, an ensemble mixes it in); only an ensemble
    /// reads the retrieval keys, and only a transformer (or an ensemble with one) the
    /// `transformer_*` keys. A stage's key holds only the keys its kind reads, so a setting
    /// of another kind does not re-train the model.
    pub fn reads(&self, key: &str) -> bool {
        let ensemble = self.kind == ModelKind::Ensemble;
        if ENSEMBLE_KEYS
            .iter()
            .chain(&SEARCH_KEYS)
            .any(|(k, _)| *k == key)
        {
            return ensemble;
        }
        if key.starts_with(TRANSFORMER) {
            return self.has_transformer();
        }
        if key == "device" {
            return ensemble || self.has_transformer();
        }
        if key == "refit" {
            // A model that is not refitted is what a key without `refit` stands for, so
            // the models trained before the setting existed keep their keys; a transformer
            // codes with its encoder, whose network only explains, so it is not refitted.
            return self.refit && self.kind != ModelKind::Transformer;
        }
        if key == "precision" {
            // fp32 is the computation a key without `precision` stands for: written out or
            // left out, it gives the same key, so stored results are found under it.
            return !self.precision.is_fp32() && (ensemble || self.has_transformer());
        }
        true
    }

    /// Whether the model reads a sentence encoder (the `encoder` input): an ensemble's
    /// retrieval embeds text, a transformer fine-tunes one.
    pub fn embeds_text(&self) -> bool {
        self.kind != ModelKind::Ngram
    }

    /// Whether the model gets a fine-tuned encoder.
    pub fn has_transformer(&self) -> bool {
        match self.kind {
            ModelKind::Transformer => true,
            ModelKind::Ensemble => self.ensemble.transformer,
            ModelKind::Ngram => false,
        }
    }

    /// The transformer's settings, with the network's seed.
    pub fn tune_config(&self) -> TuneConfig {
        TuneConfig {
            seed: self.train.seed,
            ..self.transformer.clone()
        }
    }

    /// Refuses settings that cannot train; the message starts with the key.
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.transformer;
        if self.has_transformer() {
            positive(&[
                ("transformer_batch_size", t.batch_size),
                ("transformer_grad_accumulation", t.grad_accumulation),
                ("transformer_epochs", t.epochs),
                ("transformer_eval_rows", t.eval_rows),
            ])?;
            if t.max_seq_length < 8 {
                return Err(format!(
                    "transformer_max_seq_length is {}, but the encoder needs at least 8 tokens a text",
                    t.max_seq_length
                ));
            }
        }
        if self.kind == ModelKind::Ensemble && self.ensemble.fit_rows < 100 {
            return Err("retrieval_fit_rows must be at least 100".into());
        }
        let loss = self.ensemble.cascade_max_loss;
        if !(0.0..=1.0).contains(&loss) {
            return Err(format!(
                "cascade_max_loss is {loss}, but it is a share of accuracy: give a number from 0 (every row the first step is unsure of goes on) to 1"
            ));
        }
        self.ensemble.search.validate()?;
        if self.embeds_text() {
            if self.has_transformer() {
                self.precision.check_training()?;
            }
            crate::device::place(self.device, self.precision)?;
        }
        positive(&[
            ("buckets", self.features.buckets),
            ("dim", self.train.dim),
            ("batch_size", self.train.batch_size),
            ("epochs", self.train.epochs),
        ])?;
        crate::model::check_model_size(self.features.buckets, self.train.dim, self.train.hidden)?;
        if let Some(w) = self.features.field_weights
            && (w.iter().any(|w| !w.is_finite() || *w < 0.0) || w.iter().sum::<f32>() <= 0.0)
        {
            return Err(format!(
                "field_weights {w:?} must be empty (plain mean) or three non-negative shares [title, duties words, duties characters] that are not all 0"
            ));
        }
        if self.features.minn > self.features.maxn {
            return Err(format!(
                "minn ({}) must not exceed maxn ({})",
                self.features.minn, self.features.maxn
            ));
        }
        Ok(())
    }
}

/// Refuses the first of `keys` whose value is 0, naming it first so that the message points
/// at that key's line of the configuration rather than at another key checked with it.
pub fn positive(keys: &[(&str, usize)]) -> Result<(), String> {
    match keys.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(format!("`{key}` is 0, but it must be at least 1")),
        None => Ok(()),
    }
}

/// One key's value as its type; the message names the key.
fn typed<T: DeserializeOwned>(key: &str, v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("`{key}`: {e}"))
}

/// One part from its keys; a type error names the configuration key (`rename` turns the
/// part's field path back into it).
fn typed_part<T: DeserializeOwned>(v: Value, rename: &dyn Fn(&str) -> String) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        format!("`{}`: {}", rename(&path), e.into_inner())
    })
}

impl Serialize for FitSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_flat().serialize(s)
    }
}

impl<'de> Deserialize<'de> for FitSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let flat = Map::<String, Value>::deserialize(d)?;
        FitSpec::from_flat(&flat).map_err(serde::de::Error::custom)
    }
}

/// How `fine_tune` continues a model on corrections (config section `[finetune]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineTuneSpec {
    /// Passes over the corrections and the replay sample.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Adagrad learning rate of the embedding rows (the base model's `train` used 0.2).
    pub lr_embedding: f64,
    /// Adam learning rate of the head (the base model's `train` used 0.01).
    pub lr_head: f64,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// Times each correction is seen per epoch.
    pub corrections_repeats: u32,
    /// Records sampled from the original training split and replayed (0: none).
    pub replay_size: usize,
    /// Fewest optimisation steps: small correction sets get more epochs, so that a handful
    /// of corrections still moves the model.
    pub min_steps: usize,
    /// Seed for the replay sample and shuffling.
    pub seed: u64,
    /// Calibration refitted on validation.
    pub calibration: CalibrationMethod,
    /// Seconds the re-ranker of a model that has one trains further on the corrections
    /// (0: it is carried unchanged).
    pub reranker_seconds: f64,
}

impl Default for FineTuneSpec {
    fn default() -> Self {
        FineTuneSpec {
            epochs: 3,
            batch_size: 256,
            lr_embedding: 0.1,
            lr_head: 0.001,
            label_smoothing: 0.1,
            corrections_repeats: 4,
            replay_size: 20_000,
            min_steps: 200,
            seed: 42,
            calibration: CalibrationMethod::Isotonic,
            reranker_seconds: 120.0,
        }
    }
}

impl FineTuneSpec {
    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<(), String> {
        positive(&[
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("corrections_repeats", self.corrections_repeats as usize),
        ])?;
        if !self.reranker_seconds.is_finite() || self.reranker_seconds < 0.0 {
            return Err(
                "reranker_seconds must be 0 (carry the re-ranker unchanged) or more".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flat_layout_round_trips_and_routes_each_key_to_its_part() {
        let d = FitSpec::default();
        assert_eq!(FitSpec::from_flat(&d.to_flat()).unwrap(), d);
        let given = serde_json::json!({
            "model_kind": "ensemble",
            "transformer_lr": 0.5,
            "ann_candidates": 7,
            "retrieval_fit_rows": 300,
            "dim": 16,
            "field_weights": [],
            "seed": 9,
        });
        let s = FitSpec::from_flat(given.as_object().unwrap()).unwrap();
        assert_eq!(s.kind, ModelKind::Ensemble);
        assert_eq!(s.transformer.lr, 0.5);
        assert_eq!(s.ensemble.search.candidates, 7);
        assert_eq!(s.ensemble.fit_rows, 300);
        assert_eq!(s.train.dim, 16);
        assert_eq!(s.features.field_weights, None);
        assert_eq!(s.tune_config().seed, 9);
        // The transformer's seed is the network's: no key of its own.
        assert!(!s.to_flat().contains_key("transformer_seed"));
        assert_eq!(FitSpec::from_flat(&s.to_flat()).unwrap(), s);
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let e = |v: Value| FitSpec::from_flat(v.as_object().unwrap()).unwrap_err();
        assert!(e(serde_json::json!({"dimm": 3})).starts_with("unknown field `dimm`"));
        let t = e(serde_json::json!({"transformer_lr": "fast"}));
        assert!(t.starts_with("`transformer_lr`"), "{t}");
        let t = e(serde_json::json!({"ann_candidates": -1}));
        assert!(t.starts_with("`ann_candidates`"), "{t}");
        let t = e(serde_json::json!({"model_kind": "fasttext"}));
        assert!(t.starts_with("`model_kind`"), "{t}");
        assert!(e(serde_json::json!({"field_weights": [1.0]})).starts_with("`field_weights`"));
    }

    #[test]
    fn a_kind_reads_only_its_parts_keys() {
        let mut s = FitSpec::default();
        assert!(s.reads("dim") && !s.reads("ann_candidates") && !s.reads("transformer_lr"));
        assert!(
            !s.reads("cascade_max_loss"),
            "an ngram model has no cascade"
        );
        s.kind = ModelKind::Ensemble;
        assert!(
            s.reads("ann_candidates") && s.reads("cascade_max_loss") && !s.reads("transformer_lr")
        );
        // fp32 adds nothing to the key; another precision does, for kinds with an encoder.
        assert!(s.reads("device") && !s.reads("precision"));
        s.precision = crate::device::Precision::Bf16;
        assert!(s.reads("precision"));
        s.ensemble.transformer = true;
        assert!(s.reads("transformer_lr"));
        s.kind = ModelKind::Transformer;
        assert!(s.reads("transformer_lr") && !s.reads("retrieval_fit_rows"));
        s.kind = ModelKind::Ngram;
        assert!(!s.reads("precision"), "an ngram model has no encoder");
    }
}
