//! `pipelines/ensemble.toml` end to end with a tiny randomly initialised BERT (no download):
//! the ensemble trains, evaluates, promotes and codes; a re-run executes nothing; new records
//! re-embed only their new titles; a missing encoder is a clear error.

use crate::support::{Project, outcome_of, stage_of};

/// Writes a random encoder whose vocabulary covers the demo's title words.
fn random_encoder(p: &Project) {
    let text = std::fs::read_to_string(p.path("data/raw/historical_records.csv")).unwrap();
    let mut words: Vec<String> = text
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').next().unwrap_or("").split_whitespace())
        .map(|w| w.to_lowercase())
        .filter(|w| w.chars().all(char::is_alphabetic))
        .collect();
    words.sort();
    words.dedup();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    classifier::encoder::write_random_encoder(
        &p.path("models/pretrained/all-MiniLM-L6-v2"),
        &refs,
        32,
        1,
        11,
    )
    .unwrap();
}

#[test]
fn ensemble_pipeline_trains_caches_embeddings_and_codes() {
    let p = Project::new(1500);
    // Without an encoder the stage says how to get one.
    let (_, err) = p.fails(&["run", "pipelines/ensemble.toml"]);
    assert!(err.contains("models fetch minilm"), "{err}");

    random_encoder(&p);
    p.ok(&["run", "pipelines/ensemble.toml"]);
    let run = p.last_run();
    for s in ["train", "evaluate", "promote", "predict"] {
        assert_eq!(outcome_of(&run, s), "executed", "{s}");
    }
    let m = &stage_of(&run, "train")["metrics"]["retrieval"];
    assert!(m["title_entries"].as_u64().unwrap() > 100, "{m}");
    assert!(m["duty_entries"].as_u64().unwrap() > 10, "{m}");
    assert_eq!(m["cached_before"], 0, "{m}");
    let first = m["embedded_now"].as_u64().unwrap();
    let w = m["mix"]["weight"].as_f64().unwrap();
    assert!((0.0..=0.8).contains(&w), "{m}");
    let meta = p.json("models/latest/model.json");
    assert_eq!(meta["kind"], "ensemble");
    assert!(
        p.path("models/latest/retrieval/encoder/model.safetensors")
            .is_file()
    );
    // Evaluate scored the ensemble; predictions carry codes.
    let metrics = p.json("models/latest_metrics.json");
    assert!(
        metrics["test"]["accuracy"].as_f64().unwrap() > 0.5,
        "{metrics}"
    );
    let out = p.ok(&[
        "predict",
        "--model",
        "models/latest",
        "--input",
        "data/demo/new_jobs.csv",
    ]);
    assert!(out.lines().count() > 100, "{out}");

    // Nothing changed: nothing runs.
    p.ok(&["run", "pipelines/ensemble.toml"]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "train"), "skipped");
    assert_eq!(outcome_of(&run, "evaluate"), "skipped");

    // Two new records with new titles: the model retrains but embeds only what is new.
    p.append(
        "data/raw/historical_records.csv",
        "Airship ward nurse,nursing airship passengers,2221\nZeppelin ward nurse,administering medication on zeppelins,2221\n",
    );
    p.ok(&["run", "pipelines/ensemble.toml"]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "train"), "executed");
    let m = &stage_of(&run, "train")["metrics"]["retrieval"];
    assert!(m["cached_before"].as_u64().unwrap() > 100, "{m}");
    let now = m["embedded_now"].as_u64().unwrap();
    // The new titles, plus validation rows of that one class that the split reshuffled.
    assert!(
        now * 10 < first,
        "only new texts are embedded: {now} now vs {first} at first: {m}"
    );

    // Fine-tuning an ensemble keeps its retrieval half and adds the corrections' titles,
    // embedding only those.
    std::fs::create_dir_all(p.path("data/corrections")).unwrap();
    std::fs::copy(
        p.path("data/demo/corrections_demo.csv"),
        p.path("data/corrections/demo.csv"),
    )
    .unwrap();
    p.ok(&["run", "pipelines/finetune-ensemble.toml"]);
    let run = p.last_run();
    assert_eq!(
        outcome_of(&run, "train"),
        "skipped",
        "the ensemble is reused"
    );
    assert_eq!(outcome_of(&run, "fine-tune"), "executed");
    let m = &stage_of(&run, "fine-tune")["metrics"]["retrieval"];
    let added = m["correction_titles_added"].as_u64().unwrap();
    assert!(added > 0, "{m}");
    assert!(m["embedded_now"].as_u64().unwrap() <= added, "{m}");
    assert_eq!(p.json("models/finetuned/model.json")["kind"], "ensemble");
    let out = p.ok(&[
        "predict",
        "--model",
        "models/finetuned",
        "--input",
        "data/demo/new_jobs.csv",
    ]);
    assert!(out.lines().count() > 100, "{out}");
}
