//! `train-reranker`: an adapter over [`classifier::training::train_reranker`]. It trains a
//! cross-encoder re-ranker for a trained model — queries from the training split and the
//! reference, negatives from the model's own most probable wrong codes — inside a CPU
//! budget, fits on validation the confidence under which it re-reads a row's candidates and
//! the weight of its scores, and writes the model again with the re-ranker in `reranker/`.
//! Its key holds the model, the records, the reference, the base encoder and the
//! `[reranker_training]` settings, so a re-ranker setting re-runs this stage and what reads
//! its model, and nothing upstream.

use classifier::training::{Examples, RerankerTrainSpec, train_reranker};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};

use crate::clean::load_taxonomy;
use crate::embeddings::{Bar, encoder_dir};
use crate::records::Records;

/// The `train-reranker` stage kind.
pub struct TrainReranker;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "model",
        required: true,
        many: false,
        help: "the trained model the re-ranker joins (train.model)",
    },
    InputDecl {
        name: "train",
        required: true,
        many: false,
        help: "training records (split.train): their texts and titles are the queries",
    },
    InputDecl {
        name: "validation",
        required: true,
        many: false,
        help: "validation records (split.validation): the checks, and the fit of the threshold and weight",
    },
    InputDecl {
        name: "reference",
        required: false,
        many: false,
        help: "ISCO-08 reference CSV: the codes' texts the re-ranker reads, and more title queries",
    },
    InputDecl {
        name: "encoder",
        required: true,
        many: true,
        help: "files of the encoder the re-ranker starts from (config.json, model.safetensors, tokenizer.json; `isco-dag models fetch minilm`)",
    },
];

const OUTPUTS: &[OutputDecl] = &[OutputDecl {
    name: "model",
    file: "model",
    dir: true,
}];

impl Stage for TrainReranker {
    runner::stage_metadata!("train-reranker", version "2", "train a cross-encoder that re-reads the best codes of the rows the model is unsure of (hard negatives from the model, CPU budget); writes the model with it", INPUTS, OUTPUTS, RerankerTrainSpec);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let v = runner::stage::typed_params::<RerankerTrainSpec>(raw)?;
        let spec =
            serde_json::from_value::<RerankerTrainSpec>(v.clone()).map_err(|e| e.to_string())?;
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
        let spec: RerankerTrainSpec = ctx.params()?;
        let model = ctx.input("model")?;
        let tr = Records::read(ctx.input("train")?)?;
        let va = Records::read(ctx.input("validation")?)?;
        let tax = load_taxonomy(ctx)?;
        let base = encoder_dir(ctx).ok_or(crate::Error::NoBaseEncoder)?;
        let trained = train_reranker(
            model,
            &base,
            &spec,
            Examples::new(&tr.text, &tr.isco_code),
            Examples::new(&va.text, &va.isco_code),
            &tax,
            &Bar(ctx.progress),
        )?;
        trained.save(model, &ctx.output("model"))?;
        let mut metrics = serde_json::to_value(&trained.report)?;
        metrics["fit"] = serde_json::to_value(&trained.fit)?;
        Ok(StageReport {
            summary: vec![trained.report.line(&trained.fit)],
            metrics,
        })
    }
}
