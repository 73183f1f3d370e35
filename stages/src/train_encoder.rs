//! `train-encoder`: an adapter over [`classifier::training::train_encoder`]. It trains the
//! retrieval's sentence encoder on pairs from the training split and the reference
//! (MultipleNegativesRanking with in-batch and mined hard negatives, inside a CPU budget) and
//! writes an encoder directory in the standard layout, which the ensemble's `train` reads as
//! its `encoder` input. Its key holds the records, the reference, the base encoder and the
//! `[encoder_training]` settings, so new records re-train it and a mix setting does not.

use classifier::training::{EncoderTrainSpec, Examples, train_encoder};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};

use crate::clean::load_taxonomy;
use crate::embeddings::{Bar, encoder_dir, shared_cache_root};
use crate::records::Records;

/// The `train-encoder` stage kind.
pub struct TrainEncoder;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "train",
        required: true,
        many: false,
        help: "training records (split.train): their titles and duty clauses become pairs",
    },
    InputDecl {
        name: "validation",
        required: true,
        many: false,
        help: "validation records (split.validation): the checks that pick the weights kept",
    },
    InputDecl {
        name: "reference",
        required: false,
        many: false,
        help: "ISCO-08 reference CSV: unit titles, example occupations, definitions and tasks become pairs too",
    },
    InputDecl {
        name: "encoder",
        required: true,
        many: true,
        help: "files of the base encoder directory (config.json, model.safetensors, tokenizer.json; `isco-dag models fetch minilm`)",
    },
];

const OUTPUTS: &[OutputDecl] = &[OutputDecl {
    name: "encoder",
    file: "encoder",
    dir: true,
}];

impl Stage for TrainEncoder {
    runner::stage_metadata!("train-encoder", version "1", "train the retrieval's sentence encoder on the office's title and duty pairs (MultipleNegativesRanking, hard negatives, CPU budget); writes an encoder directory", INPUTS, OUTPUTS, EncoderTrainSpec);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let v = runner::stage::typed_params::<EncoderTrainSpec>(raw)?;
        let spec =
            serde_json::from_value::<EncoderTrainSpec>(v.clone()).map_err(|e| e.to_string())?;
        spec.validate()?;
        Ok(crate::embeddings::without_default_precision(v))
    }

    fn check_inputs(
        &self,
        _params: &serde_json::Value,
        files: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<(), String> {
        crate::embeddings::check_encoder_given(files)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let spec: EncoderTrainSpec = ctx.params()?;
        let tr = Records::read(ctx.input("train")?)?;
        let va = Records::read(ctx.input("validation")?)?;
        let tax = load_taxonomy(ctx)?;
        let base = encoder_dir(ctx).ok_or(crate::Error::NoBaseEncoder)?;
        let shared = shared_cache_root(ctx);
        let trained = train_encoder(
            &base,
            &spec,
            Examples::new(&tr.text, &tr.isco_code),
            Examples::new(&va.text, &va.isco_code),
            &tax,
            Some(&shared),
            &Bar(ctx.progress),
        )?;
        trained.save(&ctx.output("encoder"))?;
        Ok(StageReport {
            summary: vec![trained.report.line()],
            metrics: serde_json::to_value(&trained.report)?,
        })
    }
}
