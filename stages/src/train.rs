//! `train`: an adapter over [`classifier::training::fit`]. It reads the training and
//! validation splits, the reference, the encoder files and titles coded outside the records,
//! hands them to the classifier with the `[model]` / `[training]` settings ([`FitSpec`]), and
//! saves the model artifact with its provenance. What a model kind is and how it trains lives
//! in `classifier`. The stage's previous model is handed on too: its embedding cache and, when
//! its training inputs are unchanged and the stage is not forced, its n-gram network spare work
//! a re-run would repeat.

use classifier::training::{Examples, Files, FitSpec, fit};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};

use crate::clean::load_taxonomy;
use crate::embeddings::{Bar, encoder_dir, provenance, shared_cache_root};
use crate::records::Records;

/// The `train` stage kind.
pub struct Train;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "train",
        required: true,
        many: false,
        help: "training records (split.train)",
    },
    InputDecl {
        name: "validation",
        required: true,
        many: false,
        help: "validation records (split.validation)",
    },
    InputDecl {
        name: "reference",
        required: false,
        many: false,
        help: "ISCO-08 reference CSV for titles and augmentation",
    },
    InputDecl {
        name: "encoder",
        required: false,
        many: true,
        help: "files of a pretrained encoder directory (config.json, model.safetensors, tokenizer.json; `isco-dag models fetch minilm`) for model_kind = \"ensemble\" or \"transformer\"",
    },
    InputDecl {
        name: "titles",
        required: false,
        many: false,
        help: "occupation titles coded outside the records (CSV: `isco_code` and `job_title` or ESCO's `preferred_label` with `alt_labels`), never trained on: an ensemble calibrates the titles it never saw, given without duties, on them as well as on validation's",
    },
];

const OUTPUTS: &[OutputDecl] = &[OutputDecl {
    name: "model",
    file: "model",
    dir: true,
}];

impl Stage for Train {
    runner::stage_metadata!("train", version "10", "train the ngram classifier (and for an ensemble its retrieval half, for a transformer the fine-tuned encoder), calibrate it, write the model artifact", INPUTS, OUTPUTS, FitSpec);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let mut v = runner::stage::typed_params::<FitSpec>(raw)?;
        let spec = serde_json::from_value::<FitSpec>(v.clone()).map_err(|e| e.to_string())?;
        spec.validate()?;
        // The key holds only what this model kind reads: a transformer setting must not
        // re-train an ngram model. (The run reads the rest back as defaults it never uses.)
        if let serde_json::Value::Object(m) = &mut v {
            m.retain(|k, _| spec.reads(k));
        }
        Ok(v)
    }

    fn check_inputs(
        &self,
        params: &serde_json::Value,
        files: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<(), String> {
        let spec = serde_json::from_value::<FitSpec>(params.clone()).map_err(|e| e.to_string())?;
        if spec.embeds_text() && files("encoder").unwrap_or(0) == 0 {
            return Err(classifier::Error::MissingEncoder { kind: spec.kind }.to_string());
        }
        Ok(())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let spec: FitSpec = ctx.params()?;
        let tr = Records::read(ctx.input("train")?)?;
        let va = Records::read(ctx.input("validation")?)?;
        let tax = load_taxonomy(ctx)?;
        let encoder = encoder_dir(ctx);
        let previous = ctx
            .previous
            .get("model")
            .and_then(|o| ctx.store.checkout(o).ok());
        let shared = shared_cache_root(ctx);
        let external = match ctx.input_opt("titles") {
            Some(path) => {
                if spec.kind != classifier::kind::ModelKind::Ensemble {
                    tracing::warn!(
                        "the `titles` input is used by an ensemble only; a model of kind `{}` is not calibrated on `{}` (remove the input)",
                        spec.kind,
                        path.display()
                    );
                }
                classifier::titles::load_labelled_titles(path, &tax)?
            }
            None => Vec::new(),
        };
        let files = Files {
            encoder: encoder.as_deref(),
            previous_model: previous.as_deref(),
            forced: ctx.forced,
            shared_cache: Some(&shared),
            external_titles: &external,
        };
        let mut fitted = fit(
            &spec,
            Examples::new(&tr.text, &tr.isco_code),
            Examples::new(&va.text, &va.isco_code),
            &tax,
            &files,
            &Bar(ctx.progress),
        )?;
        provenance(ctx, &mut fitted.meta);
        fitted.save(&ctx.output("model"))?;
        Ok(StageReport {
            summary: fitted.summary.lines(),
            metrics: serde_json::to_value(&fitted.summary)?,
        })
    }
}
