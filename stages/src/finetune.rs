//! `fine-tune`: an adapter over [`classifier::training::fine_tune`]. It reads the base model
//! (the one `train` produced and `promote` made `best`), the corrections, the replay records
//! and the validation split, hands them to the classifier with the `[finetune]` settings
//! ([`FineTuneSpec`]), and saves the result — a complete model artifact like `train`'s.
//!
//! The result depends only on the base model, the accumulated corrections and the params, so
//! running the fine-tune pipeline again without new corrections executes nothing.

use classifier::artifact::Model;
use classifier::training::{Examples, FineTuneSpec, fine_tune};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};

use crate::clean::load_taxonomy;
use crate::embeddings::{Bar, provenance, shared_cache_root};
use crate::error::Error;
use crate::records::Records;

/// The `fine-tune` stage kind.
pub struct FineTune;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "model",
        required: true,
        many: false,
        help: "base model to start from (train.model)",
    },
    InputDecl {
        name: "corrections",
        required: true,
        many: false,
        help: "corrections to learn (corrections.train)",
    },
    InputDecl {
        name: "replay",
        required: false,
        many: false,
        help: "original training records to replay (split.train)",
    },
    InputDecl {
        name: "validation",
        required: false,
        many: false,
        help: "validation records to refit the calibration on (split.validation)",
    },
    InputDecl {
        name: "reference",
        required: false,
        many: false,
        help: "ISCO-08 reference CSV, for the titles of new codes",
    },
];

const OUTPUTS: &[OutputDecl] = &[OutputDecl {
    name: "model",
    file: "model",
    dir: true,
}];

impl Stage for FineTune {
    runner::stage_metadata!("fine-tune", version "10", "continue training the base model (and its re-ranker) on corrections plus a replay sample", INPUTS, OUTPUTS, FineTuneSpec);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let v = runner::stage::typed_params::<FineTuneSpec>(raw)?;
        let spec: FineTuneSpec = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        spec.validate()?;
        Ok(v)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let spec: FineTuneSpec = ctx.params()?;
        let base_dir = ctx.input("model")?;
        let (base_meta, base) = Model::load(base_dir)?;
        let corr_path = ctx.input("corrections")?;
        let corr = Records::read(corr_path)?;
        if corr.is_empty() {
            // The input is a store checkout: its path would tell the user nothing.
            return Err(Error::Empty(classifier::Error::NoCorrections.to_string()).into());
        }
        let replay = match ctx.input_opt("replay") {
            Some(path) => Records::read(path)?,
            None => Records::default(),
        };
        let validation = ctx.input_opt("validation").map(Records::read).transpose()?;
        let tax = load_taxonomy(ctx)?;
        let shared = shared_cache_root(ctx);
        let mut fitted = fine_tune(
            &spec,
            &base_meta,
            base,
            Examples::new(&corr.text, &corr.isco_code),
            Examples::new(&replay.text, &replay.isco_code),
            validation
                .as_ref()
                .map(|va| Examples::new(&va.text, &va.isco_code)),
            &tax,
            Some(&shared),
            &Bar(ctx.progress),
        )?;
        provenance(ctx, &mut fitted.meta);
        let out = ctx.output("model");
        fitted.save(&out)?;
        // A re-ranker goes with the model, reading the new codes' texts too, and learns the
        // corrections' codes for `reranker_seconds`.
        let carried =
            classifier::training::reranker::carry_reranker(base_dir, &out, &fitted.meta, &tax)?;
        let mut summary = vec![fitted.summary.line()];
        summary.extend(
            fitted
                .summary
                .title_only
                .as_ref()
                .map(classifier::training::title_only_line),
        );
        let mut metrics = serde_json::to_value(&fitted.summary)?;
        metrics["reranker_carried"] = carried.into();
        if carried {
            let tuned = classifier::training::reranker::tune_reranker(
                &out,
                spec.reranker_seconds,
                Examples::new(&corr.text, &corr.isco_code),
                Examples::new(&replay.text, &replay.isco_code),
                validation
                    .as_ref()
                    .map(|va| Examples::new(&va.text, &va.isco_code)),
                &Bar(ctx.progress),
            )?;
            if let Some(t) = tuned {
                t.save(&out, &out)?;
                summary.push(format!("re-ranker: {}", t.report.line(&t.fit)));
                metrics["reranker"] = serde_json::json!({"fit": t.fit, "training": t.report});
            }
        }
        metrics["base_model"] = serde_json::to_value(
            ctx.artifacts
                .get("model")
                .and_then(|v| v.first())
                .map(|o| o.id.clone()),
        )?;
        Ok(StageReport { summary, metrics })
    }
}
