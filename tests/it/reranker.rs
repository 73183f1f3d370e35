//! `pipelines/ensemble-reranked.toml` end to end with a tiny randomly initialised BERT: the
//! `train-reranker` stage trains a cross-encoder for the trained model and writes the model
//! with it; the rows under its threshold say `reranker` in `decided_by` and the others do
//! not; `--no-rerank` turns it off; a re-ranker setting re-runs the re-ranker and what reads
//! its model only; a bad setting names its key.

use crate::ensemble::{decided_by, drop_demo_corrections, random_encoder};
use crate::support::{Project, outcome_of, stage_of};

/// Runs `pipelines/ensemble-reranked.toml` up to `evaluate`; its run record.
fn run_reranked(p: &Project) -> serde_json::Value {
    p.ok(&[
        "run",
        "pipelines/ensemble-reranked.toml",
        "--until",
        "evaluate",
    ]);
    p.last_run()
}

/// Codes the demo's new jobs with `model`; the `decided_by` column.
fn steps_of(p: &Project, model: &str, extra: &[&str]) -> Vec<String> {
    let out = p.path("coded.csv");
    let mut args = vec![
        "predict",
        "--model",
        model,
        "--input",
        "data/demo/new_jobs.csv",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    p.ok(&args);
    decided_by(&out)
}

/// The rows of a coded CSV, each a map of column to value.
fn rows_of(path: &std::path::Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|row| {
            let row = row.unwrap();
            headers
                .iter()
                .zip(row.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn a_reranker_is_trained_codes_the_doubtful_rows_and_is_keyed_by_its_settings() {
    let p = Project::new(900);
    random_encoder(&p);
    // A random encoder learns at a larger rate than a pretrained one is tuned with; the
    // threshold is set by hand because a random encoder's gain on validation is luck.
    p.edit("config/default.toml", "lr = 3e-5", "lr = 2e-3");
    p.edit(
        "config/default.toml",
        "max_queries = 20000",
        "max_queries = 1500",
    );
    p.edit(
        "config/default.toml",
        "# threshold = 0.6 ",
        "threshold = 0.95 ",
    );
    let run = run_reranked(&p);
    for s in ["train-encoder", "train", "train-reranker", "evaluate"] {
        assert_eq!(outcome_of(&run, s), "executed", "{s}");
    }
    // Every encoder setting's precision written out at its default, fp32, changes no key.
    let st: serde_json::Value = serde_json::from_str(&p.ok(&[
        "status",
        "pipelines/ensemble-reranked.toml",
        "--format",
        "json",
        "-S",
        "model.precision=fp32",
        "-S",
        "encoder_training.precision=fp32",
        "-S",
        "reranker_training.precision=fp32",
        "-S",
        "inference.precision=fp32",
    ]))
    .unwrap();
    for s in st.as_array().unwrap() {
        if ["train-encoder", "train", "train-reranker", "evaluate"]
            .contains(&s["id"].as_str().unwrap())
        {
            assert_eq!(s["state"], "fresh", "{s}");
        }
    }
    let m = &stage_of(&run, "train-reranker")["metrics"];
    assert!(m["queries"].as_u64().unwrap() > 100, "{m}");
    assert!(m["steps"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["fit"]["threshold"], 0.95, "{m}");
    assert!(
        m["fit"]["fit"]["reranked_rows"].as_u64().unwrap() > 0,
        "{m}"
    );
    // The re-ranker is saved where a sentence-transformers CrossEncoder loads it.
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "code_texts.json",
    ] {
        assert!(
            p.path(&format!("models/reranked/reranker/{f}")).is_file(),
            "{f}"
        );
    }
    let config = p.json("models/reranked/reranker/config.json");
    assert_eq!(config["num_labels"], 1, "{config}");
    let meta = p.json("models/reranked/model.json");
    assert_eq!(meta["reranker"]["threshold"], 0.95, "{meta}");
    // The re-ranked model is the one evaluated, with its steps counted.
    let metrics = p.json("models/latest_metrics.json");
    let counted = &metrics["test"]["decided_by"];
    assert!(counted["reranker"].as_u64().unwrap() > 0, "{metrics}");

    // Coding: rows under the threshold are re-read, the others keep their step.
    let steps = steps_of(&p, "models/reranked", &[]);
    assert!(steps.iter().any(|s| s == "reranker"), "{steps:?}");
    for s in &steps {
        assert!(
            ["ngram", "ensemble", "reranker"].contains(&s.as_str()),
            "{s}"
        );
    }
    let with = rows_of(&p.path("coded.csv"));
    let off = steps_of(&p, "models/reranked", &["--no-rerank"]);
    assert_eq!(off.len(), steps.len());
    assert!(off.iter().all(|s| s != "reranker"), "{off:?}");
    // It changes only the rows under its threshold: the others are coded to the byte alike.
    let without = rows_of(&p.path("coded.csv"));
    assert_eq!(with.len(), without.len());
    for (a, b) in with.iter().zip(&without) {
        if a["decided_by"] == "reranker" {
            let conf: f64 = b["confidence"].parse().unwrap();
            assert!(conf < 0.95, "{b:?}");
        } else {
            assert_eq!(a, b);
        }
    }
    // Without the re-ranker, the same model codes as the model it was trained for.
    let base = steps_of(&p, "models/latest", &[]);
    assert_eq!(off, base);

    // A re-ranker setting re-runs the re-ranker and what reads its model, nothing upstream.
    p.edit("config/default.toml", "negatives = 3 ", "negatives = 2 ");
    let run = run_reranked(&p);
    for s in ["clean", "split", "train-encoder", "train"] {
        assert_eq!(outcome_of(&run, s), "skipped", "{s}");
    }
    for s in ["train-reranker", "evaluate"] {
        assert_eq!(outcome_of(&run, s), "executed", "{s}");
    }
    assert_eq!(
        stage_of(&run, "train-reranker")["metrics"]["spec"]["negatives"],
        2
    );

    // Corrections fine-tune the re-ranked model: neither encoder nor re-ranker is trained
    // again from the start. With `reranker_seconds = 0` the re-ranker goes with the
    // fine-tuned model as it is ...
    drop_demo_corrections(&p);
    let finetune = |extra: &[&str]| {
        let mut args = vec!["run", "pipelines/finetune-ensemble-reranked.toml"];
        args.extend_from_slice(extra);
        p.ok(&args);
        let run = p.last_run();
        for s in ["train-encoder", "train", "train-reranker"] {
            assert_eq!(outcome_of(&run, s), "skipped", "{s}");
        }
        assert_eq!(outcome_of(&run, "fine-tune"), "executed");
        let m = stage_of(&run, "fine-tune")["metrics"].clone();
        assert_eq!(m["reranker_carried"], true, "{m}");
        m
    };
    let weights =
        |dir: &str| std::fs::read(p.path(&format!("{dir}/reranker/model.safetensors"))).unwrap();
    let m = finetune(&["-S", "finetune.reranker_seconds=0"]);
    assert!(m.get("reranker").is_none(), "{m}");
    assert_eq!(weights("models/finetuned"), weights("models/reranked"));
    // ... otherwise it learns the corrections (and keeps the threshold set by hand).
    let m = finetune(&[]);
    assert!(
        m["reranker"]["training"]["steps"].as_u64().unwrap() > 0,
        "{m}"
    );
    assert!(
        m["reranker"]["training"]["queries"].as_u64().unwrap() > 100,
        "{m}"
    );
    assert_eq!(m["reranker"]["fit"]["threshold"], 0.95, "{m}");
    // The checkpoint that ranks validation best is kept: the one it started from, or new weights.
    let training = &m["reranker"]["training"];
    assert!(
        !training["checkpoints"].as_array().unwrap().is_empty(),
        "{m}"
    );
    assert_eq!(
        training["best_step"] == 0,
        weights("models/finetuned") == weights("models/reranked"),
        "{m}"
    );
    let texts = p.json("models/finetuned/reranker/code_texts.json");
    let meta = p.json("models/finetuned/model.json");
    for code in meta["labels"].as_array().unwrap() {
        assert!(texts.get(code.as_str().unwrap()).is_some(), "{code}");
    }
    let tuned = steps_of(&p, "models/finetuned", &[]);
    assert!(tuned.iter().any(|s| s == "reranker"), "{tuned:?}");

    p.edit("config/default.toml", "negatives = 2 ", "negatives = 5 ");
    let (_, err) = p.fails(&["run", "pipelines/ensemble-reranked.toml"]);
    assert!(err.contains("negatives"), "{err}");
    assert!(err.contains("train-reranker"), "{err}");
}
