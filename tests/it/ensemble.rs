//! `pipelines/ensemble.toml` end to end with a tiny randomly initialised BERT (no download):
//! the ensemble trains, evaluates, promotes and codes; a re-run executes nothing; new records
//! re-embed only their new titles; a missing encoder is a clear error; past
//! `exact_search_limit` entries the indexes are searched through saved HNSW graphs. The same encoder
//! fine-tuned as a `transformer` model trains inside its budget and codes.
//! `pipelines/ensemble-trained.toml` trains the retrieval's encoder first: an encoder setting
//! re-runs the encoder and what reads it, a model setting leaves the encoder alone, and
//! fine-tuning never re-trains it. An MPNet encoder (relative position bias, no segment
//! embeddings) trains, is saved under MPNet's own tensor names, and codes.

use crate::support::{Project, outcome_of, stage_of};

/// Puts the demo's corrections where the `corrections` stage reads them.
pub(crate) fn drop_demo_corrections(p: &Project) {
    std::fs::create_dir_all(p.path("data/corrections")).unwrap();
    std::fs::copy(
        p.path("data/demo/corrections_demo.csv"),
        p.path("data/corrections/demo.csv"),
    )
    .unwrap();
}

/// Writes a random encoder whose vocabulary covers the demo's title words.
pub(crate) fn random_encoder(p: &Project) {
    random_encoder_of(p, classifier::encoder::Family::Bert);
}

/// [`random_encoder`] of an architecture family, where the pipelines read the encoder.
fn random_encoder_of(p: &Project, family: classifier::encoder::Family) {
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
    classifier::encoder::write_random_family(
        &p.path("models/pretrained/all-MiniLM-L6-v2"),
        &refs,
        32,
        1,
        11,
        family,
    )
    .unwrap();
}

/// `models/latest` carries its encoder under `part/`, evaluate scored it above
/// `min_accuracy`, and `predict` codes the demo's new jobs with it.
fn scored_and_codes(p: &Project, part: &str, min_accuracy: f64) {
    assert!(
        p.path(&format!("models/latest/{part}/encoder/model.safetensors"))
            .is_file()
    );
    let metrics = p.json("models/latest_metrics.json");
    assert!(
        metrics["test"]["accuracy"].as_f64().unwrap() > min_accuracy,
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
}

/// The `decided_by` column of a coded CSV, one value per row.
pub(crate) fn decided_by(path: &std::path::Path) -> Vec<String> {
    crate::support::csv_column(path, "decided_by")
}

/// `train-encoder` trained the retrieval's encoder on pairs of the demo's titles, clauses and
/// unit groups, kept weights no worse on validation than the base's, and wrote a directory in
/// the layout a sentence-transformers user loads (`SentenceTransformer("models/encoder")`).
fn encoder_was_trained(p: &Project, run: &serde_json::Value) {
    let m = &stage_of(run, "train-encoder")["metrics"];
    for kind in ["title_title", "title_group", "clause_clause"] {
        assert!(m["pairs"][kind].as_u64().unwrap() > 0, "{kind}: {m}");
    }
    assert!(m["hard_negatives"].as_u64().unwrap() > 0, "{m}");
    assert!(m["steps"].as_u64().unwrap() > 0, "{m}");
    assert!(m["validation_pairs"].as_u64().unwrap() > 10, "{m}");
    let (before, after) = (
        m["validation_before"].as_f64().unwrap(),
        m["validation_after"].as_f64().unwrap(),
    );
    assert!(after > before, "training helped on validation: {m}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training.json",
    ] {
        assert!(p.path(&format!("models/encoder/{f}")).is_file(), "{f}");
    }
    // The model carries the trained encoder, not the base.
    let trained = std::fs::read(p.path("models/encoder/model.safetensors")).unwrap();
    let base =
        std::fs::read(p.path("models/pretrained/all-MiniLM-L6-v2/model.safetensors")).unwrap();
    let carried =
        std::fs::read(p.path("models/latest/retrieval/encoder/model.safetensors")).unwrap();
    assert_ne!(trained, base);
    assert_eq!(trained, carried);
}

/// The ensemble's cascade: fitted with the model, counted in the run record, and routing rows
/// by the n-gram network's calibrated confidence — none past the first step when the
/// threshold is 0, all of them when it is above 1 or the cascade is turned off.
fn the_cascade_routes_rows(p: &Project) {
    let run = p.last_run();
    let fit = &stage_of(&run, "train")["metrics"]["cascade"];
    let share = fit["first_step_share"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{fit}");
    assert!(
        fit["accuracy_full"].as_f64().unwrap() - fit["accuracy"].as_f64().unwrap()
            <= fit["max_loss"].as_f64().unwrap() + 1e-9,
        "{fit}"
    );
    let meta = p.json("models/latest/model.json");
    assert!(meta["cascade"]["threshold"].as_f64().is_some(), "{meta}");
    let counted = &stage_of(&run, "predict")["metrics"]["decided_by"];
    let rows = stage_of(&run, "predict")["metrics"]["rows"]
        .as_u64()
        .unwrap();
    let sum: u64 = counted
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(sum, rows, "{counted}");
    let steps = decided_by(&p.path("data/processed/predictions.csv"));
    assert_eq!(steps.len() as u64, rows);
    assert!(
        steps.iter().all(|s| s == "ngram" || s == "ensemble"),
        "{steps:?}"
    );

    let code = |model: &str, extra: &[&str], out: &str| {
        let mut args = vec![
            "predict",
            "--model",
            model,
            "--input",
            "data/demo/new_jobs.csv",
            "--output",
            out,
        ];
        args.extend(extra);
        let log = p.ok(&args);
        (decided_by(&p.path(out)), log)
    };
    // `isco-dag predict` reads `[inference] cascade` from the config like the stages.
    p.edit("config/default.toml", "cascade = false", "cascade = true");
    let (all, _) = code("models/latest", &["--no-cascade"], "full.csv");
    assert!(all.iter().all(|s| s == "ensemble"), "{all:?}");
    // A copy of the model with the threshold moved.
    let copy = |threshold: f64, dir: &str| {
        let status = std::process::Command::new("cp")
            .args(["-r", "models/latest", dir])
            .current_dir(p.path(""))
            .status()
            .unwrap();
        assert!(status.success());
        let json = p.path(&format!("{dir}/model.json"));
        let mut perms = std::fs::metadata(&json).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&json, perms).unwrap();
        let mut meta = p.json(&format!("{dir}/model.json"));
        meta["cascade"]["threshold"] = serde_json::json!(threshold);
        if meta["title_only"].is_object() {
            meta["title_only"]["cascade"]["threshold"] = serde_json::json!(threshold);
        }
        std::fs::write(&json, serde_json::to_vec(&meta).unwrap()).unwrap();
    };
    copy(0.0, "models/cascade_all_ngram");
    let (first, _) = code("models/cascade_all_ngram", &[], "first.csv");
    assert!(first.iter().all(|s| s == "ngram"), "{first:?}");
    copy(1.5, "models/cascade_none");
    let (second, _) = code("models/cascade_none", &[], "second.csv");
    assert!(second.iter().all(|s| s == "ensemble"), "{second:?}");

    // Shards of an ensemble's coding (every row embedded, each shard's encoder batches
    // holding other rows) merge into exactly the single process's output.
    let (one, _) = code("models/cascade_none", &[], "one.csv");
    assert!(one.iter().all(|s| s == "ensemble"), "{one:?}");
    for i in 0..2 {
        code(
            "models/cascade_none",
            &["--shard", &format!("{i}/2")],
            &format!("half-{i}.csv"),
        );
    }
    p.ok(&[
        "predict",
        "merge",
        "--output",
        "merged.csv",
        "half-1.csv",
        "half-0.csv",
    ]);
    assert_eq!(
        std::fs::read(p.path("one.csv")).unwrap(),
        std::fs::read(p.path("merged.csv")).unwrap()
    );

    // The service says which step decided.
    let s = crate::api::start(p, &[]);
    let r = crate::http::post_json(
        &s.addr,
        "/predict/job",
        r#"{"job_title":"Airship ward nurse"}"#,
    );
    let step = r.json()["decided_by"].as_str().unwrap().to_string();
    assert!(step == "ngram" || step == "ensemble", "{}", r.text());
    drop(s);
    p.edit("config/default.toml", "cascade = true", "cascade = false");
}

/// The `confidence` and `isco_code` columns of a coded CSV.
fn confidences(path: &std::path::Path) -> Vec<(String, f64)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|x| x == name).expect(name);
    let (code, conf) = (col("isco_code"), col("confidence"));
    r.records()
        .map(|row| {
            let row = row.unwrap();
            (row[code].to_string(), row[conf].parse().unwrap())
        })
        .collect()
}

/// Titles the model never saw, given without duties, take the calibration fitted on such
/// validation titles; the same titles with duties, and titles it saw, keep the ensemble's.
fn unseen_titles_are_calibrated_apart(p: &Project) {
    let run = p.last_run();
    let fit = &stage_of(&run, "train")["metrics"]["retrieval"]["title_only"];
    assert!(fit["rows"].as_u64().unwrap() >= 10, "{fit}");
    let meta = p.json("models/latest/model.json");
    assert!(
        meta["title_only"]["cascade"]["threshold"]
            .as_f64()
            .is_some()
    );
    // The most frequent training titles are in the title index.
    let text = std::fs::read_to_string(p.path("data/raw/historical_records.csv")).unwrap();
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    for l in text.lines().skip(1) {
        *counts
            .entry(l.split(',').next().unwrap().to_string())
            .or_default() += 1;
    }
    let mut seen: Vec<(usize, String)> = counts.into_iter().map(|(t, n)| (n, t)).collect();
    seen.sort_by(|a, b| b.cmp(a));
    let unseen = [
        "airship ward nurse",
        "night bread artisan",
        "senior harbour vehicle pilot",
        "assistant dough technician",
    ];
    let mut csv = String::from("job_title,duties_description\n");
    for t in unseen {
        csv.push_str(&format!("{t},\n"));
    }
    for t in unseen {
        csv.push_str(&format!("{t},caring for patients; driving vehicles\n"));
    }
    for (_, t) in seen.iter().take(4) {
        csv.push_str(&format!("{t},\n"));
    }
    p.write("titles.csv", &csv);
    let code = |out: &str| {
        p.ok(&[
            "predict",
            "--model",
            "models/latest",
            "--input",
            "titles.csv",
            "--output",
            out,
        ]);
        confidences(&p.path(out))
    };
    let apart = code("apart.csv");
    p.edit(
        "config/default.toml",
        "title_only_calibration = true # ensemble: unseen titles",
        "title_only_calibration = false # ensemble: unseen titles",
    );
    let together = code("together.csv");
    p.edit(
        "config/default.toml",
        "title_only_calibration = false # ensemble: unseen titles",
        "title_only_calibration = true # ensemble: unseen titles",
    );
    assert_eq!(apart.len(), 12);
    assert_eq!(
        &apart[4..],
        &together[4..],
        "rows with duties and seen titles"
    );
    assert!(
        apart[..4]
            .iter()
            .zip(&together[..4])
            .any(|(a, b)| (a.1 - b.1).abs() > 1e-9),
        "{apart:?} {together:?}"
    );
    // The parts' agreement caps the unseen titles' confidence, and only theirs: the codes
    // stay, and no confidence rises.
    let agreement = &meta["title_only"]["agreement"];
    assert!(
        agreement["isotonic"]["x"]
            .as_array()
            .is_some_and(|x| !x.is_empty()),
        "{agreement}"
    );
    let f = &fit["agreement"];
    assert_eq!(f["rows"], fit["rows"], "{f}");
    p.edit(
        "config/default.toml",
        "title_only_agreement = true ",
        "title_only_agreement = false ",
    );
    let uncapped = code("uncapped.csv");
    p.edit(
        "config/default.toml",
        "title_only_agreement = false ",
        "title_only_agreement = true ",
    );
    assert_eq!(
        &apart[4..],
        &uncapped[4..],
        "rows with duties and seen titles"
    );
    for (a, u) in apart[..4].iter().zip(&uncapped[..4]) {
        assert!(a.0 == u.0 && a.1 <= u.1 + 1e-6, "{apart:?} {uncapped:?}");
    }
    // On the rows it was fitted on, the cap takes some titles out of the most confident.
    assert!(
        f["share_conf_90"].as_f64().unwrap() < f["share_conf_90_before"].as_f64().unwrap(),
        "{f}"
    );
    coded_alike_in_any_order(p, &seen);
}

/// A row is coded alike whatever other rows its file holds, among them titles whose
/// confidence the parts' agreement caps: a file of made-up titles (two words of different
/// seen titles) without duties, the same with duties and seen titles, coded as it is and in
/// reverse order, through the cascade and with every part on every row.
fn coded_alike_in_any_order(p: &Project, seen: &[(usize, String)]) {
    let known: std::collections::HashSet<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
    let words: Vec<&str> = seen
        .iter()
        .take(30)
        .flat_map(|(_, t)| t.split_whitespace())
        .collect();
    let mut made = std::collections::BTreeSet::new();
    for (i, a) in words.iter().enumerate() {
        for b in words.iter().skip(i + 1).step_by(7) {
            let t = format!("{a} {b}");
            if a != b && !known.contains(t.as_str()) && made.len() < 40 {
                made.insert(t);
            }
        }
    }
    let mut lines = Vec::new();
    for (k, t) in made.iter().enumerate() {
        lines.push(format!("{t},"));
        if k % 4 == 0 {
            lines.push(format!("{t},caring for patients; driving vehicles"));
            lines.push(format!("{},", seen[k % seen.len()].1));
        }
    }
    p.write(
        "mixed.csv",
        &format!("job_title,duties_description\n{}\n", lines.join("\n")),
    );
    lines.reverse();
    p.write(
        "reversed.csv",
        &format!("job_title,duties_description\n{}\n", lines.join("\n")),
    );
    let code = |input: &str, flags: &[&str]| {
        let mut args = vec![
            "predict",
            "--model",
            "models/latest",
            "--input",
            input,
            "--output",
            "coded.csv",
        ];
        args.extend(flags);
        p.ok(&args);
        confidences(&p.path("coded.csv"))
    };
    // The project's config turns the cascade off; `-S` turns it on for the first pass.
    for flags in [&["-S", "inference.cascade=true"][..], &["--no-cascade"][..]] {
        let forward = code("mixed.csv", flags);
        let steps = decided_by(&p.path("coded.csv"));
        let through_cascade = flags[0] == "-S";
        assert_eq!(
            steps.iter().any(|s| s == "ngram"),
            through_cascade,
            "{flags:?}: {steps:?}"
        );
        let uncapped = code(
            "mixed.csv",
            &[flags, &["-S", "inference.title_only_agreement=false"]].concat(),
        );
        assert!(
            forward.iter().zip(&uncapped).any(|(a, u)| a.1 < u.1 - 1e-3),
            "{flags:?}: the cap binds on none of {forward:?}"
        );
        let mut backward = code("reversed.csv", flags);
        backward.reverse();
        assert_eq!(forward.len(), backward.len());
        let differ: Vec<_> = forward
            .iter()
            .zip(&backward)
            .enumerate()
            .filter(|(_, (f, b))| f.0 != b.0 || (f.1 - b.1).abs() >= 1e-4)
            .map(|(i, (f, b))| (i, &lines[lines.len() - 1 - i], f, b))
            .collect();
        assert!(differ.is_empty(), "{flags:?}: {differ:?}");
    }
}

/// The train stage's `titles` input: titles coded outside the records (here in ESCO's
/// layout) join the rows that calibrate titles the model never saw, those the title index
/// holds or whose codes it does not know left out; the model keeps them for fine-tuning; a
/// code that is not a unit group stops the run naming the file, row and column.
fn titles_coded_elsewhere_join_the_calibration(p: &Project) {
    // The records' 20 most frequent titles (as the model normalises them: those the training
    // split surely holds), each with its first code.
    let norm = |t: &str| {
        t.to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut rdr = csv::Reader::from_path(p.path("data/raw/historical_records.csv")).unwrap();
    let mut seen: std::collections::HashMap<String, (usize, String)> = Default::default();
    for row in rdr.records() {
        let row = row.unwrap();
        seen.entry(norm(&row[0]))
            .or_insert_with(|| (0, row[2].to_string()))
            .0 += 1;
    }
    let mut frequent: Vec<(usize, String, String)> =
        seen.into_iter().map(|(t, (n, c))| (n, t, c)).collect();
    frequent.sort_by(|a, b| b.cmp(a));
    let mut csv = String::from("esco_uri,isco_code,preferred_label,alt_labels\n");
    let mut unseen = 0;
    for (i, (_, title, code)) in frequent.iter().take(20).enumerate() {
        // The preferred label is a title the records hold (left out); the alternatives are not.
        csv.push_str(&format!(
            "u{i},{code},{title},\"{title} grade two|visiting {title} apprentice\"\n"
        ));
        unseen += 2;
    }
    // A code the records never show cannot be scored: left out.
    csv.push_str("u99,0110,commissioned armed forces officer,\n");
    p.write("data/reference/titles_elsewhere.csv", &csv);
    let with_titles = |pipeline: &str| {
        p.edit(
            pipeline,
            "encoder = \"models/pretrained/all-MiniLM-L6-v2/*.*\" }",
            "encoder = \"models/pretrained/all-MiniLM-L6-v2/*.*\", titles = \"data/reference/titles_elsewhere.csv\" }",
        );
    };
    with_titles("pipelines/ensemble.toml");
    with_titles("pipelines/finetune-ensemble.toml");
    let before = p.json("models/latest/model.json")["title_only"]["fit"]["rows"]
        .as_u64()
        .unwrap();
    p.ok(&["run", "pipelines/ensemble.toml"]);
    let run = p.last_run();
    assert_eq!(
        outcome_of(&run, "train"),
        "executed",
        "a new input re-trains"
    );
    assert_eq!(
        stage_of(&run, "train")["metrics"]["ngram_reused"],
        true,
        "only the calibration reads the titles: the n-gram network is not trained again"
    );
    let fit = &stage_of(&run, "train")["metrics"]["retrieval"]["title_only"];
    assert_eq!(fit["external_rows"], unseen, "{fit}");
    assert_eq!(fit["rows"].as_u64().unwrap(), before + unseen, "{fit}");
    // Every title read is kept for fine-tuning, in a table beside the description.
    let meta = p.json("models/latest/model.json");
    assert!(meta["title_only"].get("external").is_none(), "{meta}");
    let kept = p.path("models/latest/title_only_titles.parquet");
    let kept = artifacts::table::Table::read_parquet(&kept).unwrap();
    assert_eq!(kept.num_rows() as u64, unseen * 3 / 2 + 1);
    let pairs: Vec<(String, String)> = kept
        .str_col("title", std::path::Path::new("kept"))
        .unwrap()
        .iter()
        .cloned()
        .zip(
            kept.str_col("code", std::path::Path::new("kept"))
                .unwrap()
                .iter()
                .cloned(),
        )
        .collect();
    let (_, title, code) = &frequent[0];
    assert!(
        pairs.contains(&(format!("{title} grade two"), code.clone())),
        "{pairs:?}"
    );

    p.append(
        "data/reference/titles_elsewhere.csv",
        "u100,2221,night nurse,\nu101,22,nurses,\n",
    );
    let (code, err) = p.fails(&["run", "pipelines/ensemble.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("titles_elsewhere.csv")
            && err.contains("row 24 column `isco_code`: `22` is not a 4-digit ISCO-08 unit group"),
        "{err}"
    );
    p.write("data/reference/titles_elsewhere.csv", &csv);
    p.ok(&["run", "pipelines/ensemble.toml"]);
    assert_eq!(outcome_of(&p.last_run(), "train"), "skipped");
}

/// `[inference] precision = "bf16"` embeds the queries on the bfloat16 kernel where the CPU
/// has AVX-512 BF16: the vectors move a little, the codes hardly; elsewhere the setting is a
/// configuration error naming the key.
fn bf16_codes_as_fp32_does(p: &Project) {
    let code = |out: &str| {
        p.run(&[
            "predict",
            "--no-cascade",
            "--model",
            "models/latest",
            "--input",
            "data/demo/new_jobs.csv",
            "--output",
            out,
        ])
    };
    let line = "precision = \"fp32\"           # its products";
    let fp32 = code("fp32.csv");
    assert!(fp32.status.success(), "{fp32:?}");
    p.edit(
        "config/default.toml",
        line,
        "precision = \"bf16\"           # its products",
    );
    let bf16 = code("bf16.csv");
    p.edit(
        "config/default.toml",
        "precision = \"bf16\"           # its products",
        line,
    );
    // `models check` says whether bf16 runs here.
    let check = p.ok(&["models", "check", "models/pretrained/all-MiniLM-L6-v2"]);
    if !classifier::bf16::available() {
        assert!(
            check.contains("\"bf16\" does not run here") && check.contains("AVX-512 BF16"),
            "{check}"
        );
        let err = String::from_utf8_lossy(&bf16.stderr);
        assert_eq!(bf16.status.code(), Some(2), "{err}");
        assert!(
            err.contains("precision") && err.contains("AVX-512 BF16"),
            "{err}"
        );
        return;
    }
    assert!(check.contains("\"bf16\" runs on this CPU"), "{check}");
    let cosine: f64 = check.rsplit(' ').next().unwrap().trim().parse().unwrap();
    assert!(cosine > 0.99 && cosine <= 1.0 + 1e-6, "{check}");
    assert!(bf16.status.success(), "{bf16:?}");
    let (a, b) = (
        confidences(&p.path("fp32.csv")),
        confidences(&p.path("bf16.csv")),
    );
    assert_eq!(a.len(), b.len());
    let same = a.iter().zip(&b).filter(|(x, y)| x.0 == y.0).count();
    assert!(
        same * 100 >= a.len() * 95,
        "{same} of {} codes agree",
        a.len()
    );
    // The products really ran in 16 bits.
    assert!(a.iter().zip(&b).any(|(x, y)| (x.1 - y.1).abs() > 1e-9));
}

/// The review queue file and the API carry similar past records with their codes.
fn reviewers_see_similar_records(p: &Project) {
    // Every prediction goes to review (the small model is confident about anything).
    p.edit(
        "config/default.toml",
        "review_threshold = 0.5",
        "review_threshold = 0.99999",
    );
    p.ok(&["run", "pipelines/ensemble.toml"]);
    assert_eq!(outcome_of(&p.last_run(), "predict"), "executed");
    let dir = p.path("data/review");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| {
            f.extension().is_some_and(|e| e == "csv") && f.to_string_lossy().contains("to_review_")
        })
        .expect("predict wrote a review queue");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().ends_with(",similar_records"),
        "{text}"
    );
    let queued: Vec<&str> = lines.collect();
    assert!(queued.len() > 50, "{text}");
    for l in &queued {
        assert_eq!(l.matches(" -> ").count(), 3, "three similar records: {l}");
    }

    let s = crate::api::start(p, &[]);
    let r = crate::http::post_json(
        &s.addr,
        "/predict/job",
        r#"{"job_title":"Airship ward nurse","similar":4}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let near = v["similar"].as_array().unwrap();
    assert_eq!(near.len(), 4, "{v}");
    let sims: Vec<f64> = near
        .iter()
        .map(|n| n["similarity"].as_f64().unwrap())
        .collect();
    assert!(sims.windows(2).all(|w| w[0] >= w[1]), "best first: {v}");
    for n in near {
        assert_eq!(n["isco_code"].as_str().unwrap().len(), 4, "{v}");
        assert!(["record", "reference"].contains(&n["source"].as_str().unwrap()));
        assert!(!n["title"].as_str().unwrap().is_empty(), "{v}");
    }
    // A past record's title is its own nearest neighbour.
    let records = std::fs::read_to_string(p.path("data/raw/historical_records.csv")).unwrap();
    let title = records
        .lines()
        .skip(1)
        .find(|l| !l.contains('"'))
        .and_then(|l| l.split(',').next())
        .unwrap();
    let r = crate::http::post_json(
        &s.addr,
        "/predict/job",
        &serde_json::json!({"job_title": title, "similar": 1}).to_string(),
    );
    let v = r.json();
    assert!(
        v["similar"][0]["similarity"].as_f64().unwrap() > 0.999,
        "{title}: {v}"
    );
    let q = crate::http::get(&s.addr, "/review/queue?limit=2").json();
    let items = q["items"].as_array().unwrap();
    assert!(!items.is_empty(), "{q}");
    for it in items {
        assert_eq!(it["similar"].as_array().unwrap().len(), 3, "{it}");
    }
}

#[test]
fn ensemble_pipeline_trains_caches_embeddings_and_codes() {
    let p = Project::new(1500);
    // Without an encoder the pipeline is refused before anything runs, saying how to get one.
    let (code, err) = p.fails(&["run", "pipelines/ensemble.toml"]);
    assert!(err.contains("models fetch minilm"), "{err}");
    assert_eq!(code, 2, "{err}");
    assert!(!p.path("data/processed/train.parquet").exists());

    random_encoder(&p);
    // Every part on every row, so every test row is embedded (the cascade's routing is
    // checked on its own below).
    p.edit("config/default.toml", "cascade = true", "cascade = false");
    // The demo's validation split has few titles the training split lacks.
    p.edit(
        "config/default.toml",
        "title_only_min_rows = 200",
        "title_only_min_rows = 10",
    );
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
    let computed = |run: &serde_json::Value| {
        stage_of(run, "evaluate")["metrics"]["embeddings_computed"]
            .as_u64()
            .unwrap()
    };
    assert!(computed(&run) > 0, "the test rows were embedded");
    // Evaluate scored the ensemble; predictions carry codes.
    scored_and_codes(&p, "retrieval", 0.5);
    unseen_titles_are_calibrated_apart(&p);
    titles_coded_elsewhere_join_the_calibration(&p);
    bf16_codes_as_fp32_does(&p);
    the_cascade_routes_rows(&p);

    // Nothing changed: nothing runs.
    p.ok(&["run", "pipelines/ensemble.toml"]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "train"), "skipped");
    assert_eq!(outcome_of(&run, "evaluate"), "skipped");
    // Evaluating again finds every test row's vectors in the store's shared cache.
    p.ok(&["run", "pipelines/ensemble.toml", "--force", "evaluate"]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "evaluate"), "executed");
    assert_eq!(computed(&run), 0, "{}", stage_of(&run, "evaluate"));
    assert_eq!(outcome_of(&run, "promote"), "skipped", "same metrics file");
    reviewers_see_similar_records(&p);

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
    // embedding only those — and none here: coding the same rows first (as the review queue
    // does) left their vectors in the store's shared cache.
    drop_demo_corrections(&p);
    p.ok(&[
        "predict",
        "--input",
        "data/corrections/demo.csv",
        "--output",
        "corrections_coded.csv",
    ]);
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
    // The corrections' duty clauses join the base's duties index.
    let base_duties = p.json("models/latest/retrieval/index.json")["duties"]
        .as_array()
        .unwrap()
        .len() as u64;
    let clauses = m["correction_clauses_added"].as_u64().unwrap();
    assert_eq!(
        m["duty_entries"].as_u64().unwrap(),
        base_duties + clauses,
        "{m}"
    );
    assert_eq!(m["embedded_now"].as_u64().unwrap(), 0, "{m}");
    // Its embedding cache is the base's, file for file, and one more file with the
    // corrections' vectors: a store keeps the base's once.
    let caches = |model: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(p.path(&format!("{model}/retrieval")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("cache-"))
            .collect();
        names.sort();
        names
    };
    let (base, tuned) = (caches("models/latest"), caches("models/finetuned"));
    assert_eq!(tuned.len(), base.len() + 1, "{base:?} {tuned:?}");
    for f in &base {
        assert_eq!(
            std::fs::read(p.path(&format!("models/latest/retrieval/{f}"))).unwrap(),
            std::fs::read(p.path(&format!("models/finetuned/retrieval/{f}"))).unwrap(),
            "{f}"
        );
    }
    // The fine-tuned model's unseen titles are calibrated on the base's titles coded
    // elsewhere too.
    let fit = &stage_of(&run, "fine-tune")["metrics"]["title_only"];
    assert!(fit["external_rows"].as_u64().unwrap() > 0, "{fit}");
    // The cap by the parts' agreement is refitted on the same rows against the new index.
    assert_eq!(fit["agreement"]["rows"], fit["rows"], "{fit}");
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

/// `refit = true`: the n-gram network is trained again with the validation records and the
/// indexes take validation's titles and clauses, while the calibration, cascade and mix fitted
/// on validation stay as they were; a later run that changes only those fits takes the
/// refitted network from the previous model, and turning the setting off finds the model
/// trained without it.
#[test]
fn a_refitted_ensemble_learns_validation_and_keeps_its_fits() {
    let p = Project::new(1500);
    random_encoder(&p);
    let until = ["run", "pipelines/ensemble.toml", "--until", "evaluate"];
    p.ok(&until);
    let first = p.json("models/latest/model.json");
    let first_net = std::fs::read(p.path("models/latest/model.bpk")).unwrap();
    let entries = |part: &str| {
        p.json("models/latest/retrieval/index.json")[part]
            .as_array()
            .unwrap()
            .len() as u64
    };
    let (titles, clauses) = (entries("titles"), entries("duties"));
    let fits = |m: &serde_json::Value| {
        serde_json::json!([
            m["temperature"],
            m["isotonic"],
            m["cascade"],
            m["title_only"]
        ])
    };
    let mix =
        |run: &serde_json::Value| stage_of(run, "train")["metrics"]["retrieval"]["mix"].clone();
    let first_mix = mix(&p.last_run());

    let refit = [&until[..], &["-S", "training.refit=true"]].concat();
    let out = p.ok(&refit);
    assert!(
        out.contains("refit: the n-gram network trained again"),
        "{out}"
    );
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "train"), "executed");
    assert_eq!(outcome_of(&run, "evaluate"), "executed");
    let m = &stage_of(&run, "train")["metrics"]["refit"];
    let validation = m["training"]["validation_records"].as_u64().unwrap();
    assert!(validation > 100, "{m}");
    assert_eq!(m["reused"], false, "{m}");
    let added = &m["index_entries_added"];
    assert!(added[0].as_u64().unwrap() > 0, "{m}");
    assert_eq!(entries("titles"), titles + added[0].as_u64().unwrap());
    assert_eq!(entries("duties"), clauses + added[1].as_u64().unwrap());
    let refitted = p.json("models/latest/model.json");
    assert_eq!(
        fits(&refitted),
        fits(&first),
        "what was fitted on validation is kept"
    );
    assert_eq!(mix(&run), first_mix);
    assert_eq!(
        refitted["ngram_training"]["key"], first["ngram_training"]["key"],
        "the first training is the same"
    );
    assert_eq!(
        refitted["ngram_training"]["refit"]["validation_records"],
        validation
    );
    let refit_net = std::fs::read(p.path("models/latest/model.bpk")).unwrap();
    assert_ne!(refit_net, first_net, "the network is trained again");
    scored_and_codes(&p, "retrieval", 0.5);

    // A setting only the fits on validation read: the refitted network is the previous one.
    let ece = [&refit[..], &["-S", "training.calibration=ece"]].concat();
    p.ok(&ece);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "train"), "executed");
    assert_eq!(stage_of(&run, "train")["metrics"]["refit"]["reused"], true);
    assert_eq!(
        std::fs::read(p.path("models/latest/model.bpk")).unwrap(),
        refit_net
    );
    // Fine-tuning a refitted model fits nothing on validation again (its network learned
    // those records): the base's calibrations and cascade stay.
    drop_demo_corrections(&p);
    let out = p.ok(&[
        "run",
        "pipelines/finetune-ensemble.toml",
        "-S",
        "training.refit=true",
    ]);
    assert!(
        out.contains("the base model was refitted with validation"),
        "{out}"
    );
    let run = p.last_run();
    assert_eq!(
        stage_of(&run, "fine-tune")["metrics"]["base_refitted"],
        true
    );
    let tuned = p.json("models/finetuned/model.json");
    assert_eq!(fits(&tuned), fits(&refitted));

    // Without the setting, the model trained without it.
    p.ok(&until);
    assert_eq!(outcome_of(&p.last_run(), "train"), "restored");
    assert_eq!(
        std::fs::read(p.path("models/latest/model.bpk")).unwrap(),
        first_net
    );
}

#[test]
fn ensemble_beyond_the_exact_search_limit_searches_an_hnsw_graph() {
    let p = Project::new(1500);
    random_encoder(&p);
    p.ok(&["run", "pipelines/ensemble.toml", "--until", "evaluate"]);
    let run = p.last_run();
    let search = |run: &serde_json::Value, stage: &str| {
        stage_of(run, stage)["metrics"]["retrieval"]["search"].clone()
    };
    assert_eq!(search(&run, "train")["titles"], "exact");
    assert!(!p.path("models/latest/retrieval/ann-titles.cbor").exists());
    let accuracy = || {
        p.json("models/latest_metrics.json")["test"]["accuracy"]
            .as_f64()
            .unwrap()
    };
    let exact = accuracy();

    // A bad value is refused before anything runs, naming the key.
    p.edit(
        "config/default.toml",
        "ann_candidates = 200",
        "ann_candidates = 0",
    );
    let (code, err) = p.fails(&["run", "pipelines/ensemble.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ann_candidates"), "{err}");
    p.edit(
        "config/default.toml",
        "ann_candidates = 0",
        "ann_candidates = 200",
    );

    // Every index over the limit: the model is trained again with graphs, saved with it,
    // and codes about as the exact search does (the graph returns the nearest 200 entries; the
    // mix is fitted again on the approximate scores).
    p.edit(
        "config/default.toml",
        "exact_search_limit = 200000",
        "exact_search_limit = 0",
    );
    p.ok(&["run", "pipelines/ensemble.toml", "--until", "evaluate"]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "split"), "skipped");
    assert_eq!(outcome_of(&run, "train"), "executed");
    let s = search(&run, "train");
    assert_eq!(s["titles"], "hnsw", "{s}");
    assert_eq!(s["duties"], "hnsw", "{s}");
    for f in ["ann-titles.cbor", "ann-duties.cbor"] {
        assert!(
            p.path(&format!("models/latest/retrieval/{f}")).is_file(),
            "{f}"
        );
    }
    let approx = accuracy();
    assert!(
        (approx - exact).abs() <= 0.03,
        "HNSW {approx} vs exact {exact}"
    );
    scored_and_codes(&p, "retrieval", 0.5);

    // Fine-tuning adds the corrections' entries and builds the graphs again.
    drop_demo_corrections(&p);
    p.ok(&["run", "pipelines/finetune-ensemble.toml"]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "fine-tune"), "executed");
    let m = &stage_of(&run, "fine-tune")["metrics"]["retrieval"];
    assert!(m["correction_titles_added"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["search"]["titles"], "hnsw", "{m}");
    // The saved graph covers the new entries (loading checks the count).
    assert!(
        p.path("models/finetuned/retrieval/ann-titles.cbor")
            .is_file()
    );
    let out = p.ok(&[
        "predict",
        "--model",
        "models/finetuned",
        "--input",
        "data/corrections/demo.csv",
    ]);
    assert!(out.lines().count() > 10, "{out}");
}

#[test]
fn transformer_pipeline_fine_tunes_the_encoder_and_codes() {
    let p = Project::new(1500);
    let (code, err) = p.fails(&["run", "pipelines/transformer.toml"]);
    assert!(err.contains("models fetch minilm"), "{err}");
    assert_eq!(code, 2, "{err}");

    random_encoder(&p);
    p.ok(&["run", "pipelines/transformer.toml"]);
    let run = p.last_run();
    for s in ["train", "evaluate", "promote", "predict"] {
        assert_eq!(outcome_of(&run, s), "executed", "{s}");
    }
    let m = &stage_of(&run, "train")["metrics"]["transformer"];
    let r = &m["report"];
    assert_eq!(r["train_layers"], 1, "capped at the encoder's depth: {m}");
    assert!(r["steps"].as_u64().unwrap() > 50, "{m}");
    // A tiny random encoder: it learns (the loss falls, accuracy is far above the 1/40 of
    // chance), not much more.
    assert!(
        r["best_validation_accuracy"].as_f64().unwrap() > 0.15,
        "{m}"
    );
    let cps = r["checkpoints"].as_array().unwrap();
    let loss = |c: &serde_json::Value| c["loss"].as_f64().unwrap();
    assert!(loss(cps.last().unwrap()) < loss(&cps[0]), "{m}");
    assert!(m["calibration_rows"].as_u64().unwrap() > 50, "{m}");
    let meta = p.json("models/latest/model.json");
    assert_eq!(meta["kind"], "transformer");
    assert_eq!(meta["transformer"]["batch_size"], 16);
    // Evaluate scored the transformer (far above chance over ~40 codes).
    scored_and_codes(&p, "transformer", 0.15);

    // Nothing changed: nothing runs.
    p.ok(&["run", "pipelines/transformer.toml"]);
    assert_eq!(outcome_of(&p.last_run(), "train"), "skipped");

    // A setting only the calibration reads: the fine-tuned encoder and the n-gram network are
    // the previous run's (their training's report, seconds included, is), calibrated again;
    // `--force` fine-tunes again.
    let report = r.clone();
    let out = p.ok(&[
        "run",
        "pipelines/transformer.toml",
        "-S",
        "training.calibration=ece",
    ]);
    assert!(
        out.contains("(the previous run's encoder: same sample and settings)"),
        "{out}"
    );
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "train"), "executed");
    let m = &stage_of(&run, "train")["metrics"];
    assert_eq!(m["ngram_reused"], true, "{m}");
    assert_eq!(m["transformer"]["reused"], true, "{m}");
    assert_eq!(m["transformer"]["report"], report, "{m}");
    let meta = p.json("models/latest/model.json");
    assert_eq!(meta["transformer_training"]["report"], report);
    p.ok(&["run", "pipelines/transformer.toml", "--force", "train"]);
    let run = p.last_run();
    let m = &stage_of(&run, "train")["metrics"];
    assert_eq!(m["transformer"]["reused"], false, "{m}");
    assert_ne!(
        m["transformer"]["report"]["seconds"], report["seconds"],
        "{m}"
    );

    // A budget of one second stops early, by the budget, and still gives a model.
    p.write(
        "pipelines/tiny.toml",
        r#"[pipeline]
name = "tiny"
extends = "transformer.toml"

[[stage]]
id = "train"
kind = "train"
replace = true
inputs = { train = "split.train", validation = "split.validation", reference = "data/reference/isco08_demo.csv", encoder = "models/pretrained/all-MiniLM-L6-v2/*.*" }
params_from = ["model", "training"]
params = { model_kind = "transformer", transformer_max_seconds = 1, transformer_epochs = 50, transformer_patience = 1000 }
outputs = { model = "models/latest" }
"#,
    );
    p.ok(&["run", "pipelines/tiny.toml", "--until", "train"]);
    let run = p.last_run();
    let m = &stage_of(&run, "train")["metrics"];
    assert_eq!(m["transformer"]["reused"], false, "other settings: {m}");
    assert_eq!(
        m["ngram_reused"], true,
        "which the n-gram network does not read: {m}"
    );
    let r = &m["transformer"]["report"];
    assert_eq!(r["stopped_by"], "budget", "{r}");
    assert!(r["planned_steps"].as_u64().unwrap() < 50 * 60, "{r}");

    // fine-tune continues ngram and ensemble models; on a transformer it says what to do.
    drop_demo_corrections(&p);
    p.write(
        "pipelines/finetune-tiny.toml",
        &std::fs::read_to_string(p.path("pipelines/tiny.toml"))
            .unwrap()
            .replace(
                "extends = \"transformer.toml\"",
                "extends = \"finetune.toml\"",
            ),
    );
    let (_, err) = p.fails(&["run", "pipelines/finetune-tiny.toml"]);
    assert!(err.contains("Re-run `train` instead"), "{err}");
}

/// A fine-tuned ensemble remembers the validation sample its mix was fitted on, so fine-tuning
/// it again refits the calibration on that same sample (whose queries its cache holds)
/// instead of a default-sized one.
#[test]
fn fine_tuning_an_ensemble_twice_keeps_its_fit_sample() {
    let p = Project::new(1500);
    random_encoder(&p);
    p.edit(
        "config/default.toml",
        "retrieval_fit_rows = 5000",
        "retrieval_fit_rows = 120",
    );
    p.edit(
        "config/default.toml",
        "title_only_min_rows = 200",
        "title_only_min_rows = 10",
    );
    drop_demo_corrections(&p);
    p.write(
        "pipelines/finetune-twice.toml",
        r#"[pipeline]
name = "finetune-twice"
extends = "finetune-ensemble.toml"

[[stage]]
id = "fine-tune-again"
kind = "fine-tune"
inputs = { model = "fine-tune.model", corrections = "corrections.train", validation = "split.validation", reference = "data/reference/isco08_demo.csv" }
params_from = ["finetune"]
outputs = { model = "models/finetuned_twice" }
"#,
    );
    p.ok(&["run", "pipelines/finetune-twice.toml"]);
    let run = p.last_run();
    let fit_rows = stage_of(&run, "train")["metrics"]["retrieval"]["fit_rows"]
        .as_u64()
        .unwrap();
    assert_eq!(fit_rows, 120, "the sample is drawn at the configured size");
    for (stage, model) in [
        ("fine-tune", "models/finetuned"),
        ("fine-tune-again", "models/finetuned_twice"),
    ] {
        assert_eq!(outcome_of(&run, stage), "executed", "{stage}");
        let m = &stage_of(&run, stage)["metrics"];
        assert_eq!(m["calibration_rows"], fit_rows, "{stage}: {m}");
        let meta = p.json(&format!("{model}/model.json"));
        assert_eq!(meta["kind"], "ensemble");
        assert_eq!(meta["fit_sample"]["rows"], fit_rows, "{model}: {meta}");
        assert!(
            m["retrieval"]["title_entries"].as_u64().unwrap() > 100,
            "{m}"
        );
        // The calibration of unseen titles is refitted with the fine-tuned network.
        assert!(m["title_only"]["rows"].as_u64().unwrap() >= 10, "{m}");
        assert!(meta["title_only"]["cascade"]["threshold"].is_number());
    }
}

/// Runs `pipelines/ensemble-trained.toml` up to `evaluate`; its run record.
/// A random encoder of `family` through `pipelines/ensemble-trained.toml` up to `evaluate`:
/// every stage runs and the encoder is trained.
fn trains_a_random_encoder(p: &Project, family: classifier::encoder::Family) {
    random_encoder_of(p, family);
    // A random encoder learns at a larger rate than a pretrained one is fine-tuned with.
    p.edit("config/default.toml", "lr = 5e-5", "lr = 2e-3");
    p.edit(
        "config/default.toml",
        "epochs = 1\nmax_pairs",
        "epochs = 3\nmax_pairs",
    );
    let run = run_trained(p);
    for s in ["train-encoder", "train", "evaluate"] {
        assert_eq!(outcome_of(&run, s), "executed", "{s}");
    }
    encoder_was_trained(p, &run);
}

fn run_trained(p: &Project) -> serde_json::Value {
    p.ok(&[
        "run",
        "pipelines/ensemble-trained.toml",
        "--until",
        "evaluate",
    ]);
    p.last_run()
}

/// `pipelines/ensemble-trained.toml`: `train-encoder` trains the retrieval's encoder and the
/// ensemble is built on it. Its key: an `[encoder_training]` setting re-trains the encoder and
/// re-runs what reads it; a `[model]` setting re-runs `train` and leaves the encoder as it
/// is; new corrections fine-tune without re-training it; a bad setting is refused before
/// anything runs, naming the key.
#[test]
fn a_trained_encoder_is_keyed_by_its_settings_and_kept_through_fine_tuning() {
    let p = Project::new(900);
    // No base encoder yet: refused before anything runs, saying how to get one.
    let (code, err) = p.fails(&["run", "pipelines/ensemble-trained.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`train-encoder`") && err.contains("models fetch minilm"),
        "{err}"
    );
    trains_a_random_encoder(&p, classifier::encoder::Family::Bert);
    let first = std::fs::read(p.path("models/encoder/model.safetensors")).unwrap();

    p.edit("config/default.toml", "scale = 20.0", "scale = 10.0");
    let run = run_trained(&p);
    for s in ["train-encoder", "train", "evaluate"] {
        assert_eq!(outcome_of(&run, s), "executed", "{s}");
    }
    for s in ["clean", "split"] {
        assert_eq!(outcome_of(&run, s), "skipped", "{s}");
    }
    let m = &stage_of(&run, "train-encoder")["metrics"];
    assert_eq!(m["spec"]["scale"], 10.0, "{m}");
    let second = std::fs::read(p.path("models/encoder/model.safetensors")).unwrap();
    assert_ne!(first, second, "another scale trains other weights");

    p.edit(
        "config/default.toml",
        "retrieval_fit_rows = 5000",
        "retrieval_fit_rows = 100",
    );
    let run = run_trained(&p);
    assert_eq!(outcome_of(&run, "train-encoder"), "skipped");
    assert_eq!(outcome_of(&run, "train"), "executed");
    // The trained encoder's vectors are all in the shared cache already.
    let m = &stage_of(&run, "train")["metrics"]["retrieval"];
    assert_eq!(m["embedded_now"], 0, "{m}");

    // Corrections: the ensemble and its encoder are reused, the corrections' titles join.
    drop_demo_corrections(&p);
    p.ok(&["run", "pipelines/finetune-ensemble-trained.toml"]);
    let run = p.last_run();
    for s in ["train-encoder", "train"] {
        assert_eq!(outcome_of(&run, s), "skipped", "{s}");
    }
    assert_eq!(outcome_of(&run, "fine-tune"), "executed");
    let m = &stage_of(&run, "fine-tune")["metrics"]["retrieval"];
    assert!(m["correction_titles_added"].as_u64().unwrap() > 0, "{m}");
    let carried =
        std::fs::read(p.path("models/finetuned/retrieval/encoder/model.safetensors")).unwrap();
    assert_eq!(
        carried, second,
        "the fine-tuned model keeps the trained encoder"
    );

    p.edit("config/default.toml", "batch_size = 64", "batch_size = 1");
    let (_, err) = p.fails(&["run", "pipelines/ensemble-trained.toml"]);
    assert!(err.contains("batch_size"), "{err}");
    assert!(err.contains("train-encoder"), "{err}");
}

/// An MPNet encoder through `pipelines/ensemble-trained.toml`: `train-encoder` trains it and
/// saves it under MPNet's tensor names (what sentence-transformers loads back as MPNet), the
/// ensemble is built on it, and the promoted model codes the demo's new jobs.
#[test]
fn an_mpnet_encoder_trains_and_codes() {
    let p = Project::new(900);
    trains_a_random_encoder(&p, classifier::encoder::Family::Mpnet);
    // A safetensors file opens with the length of its JSON header, which names the tensors.
    let saved = std::fs::read(p.path("models/encoder/model.safetensors")).unwrap();
    let len = u64::from_le_bytes(saved[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&saved[8..8 + len]).unwrap();
    let names: Vec<&String> = header.as_object().unwrap().keys().collect();
    for name in [
        "encoder.relative_attention_bias.weight",
        "encoder.layer.0.attention.attn.q.weight",
        "encoder.layer.0.attention.LayerNorm.weight",
    ] {
        assert!(names.iter().any(|n| *n == name), "{name}: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("token_type")), "{names:?}");
    let config = p.json("models/encoder/config.json");
    assert_eq!(config["model_type"], "mpnet");
    p.ok(&["run", "pipelines/ensemble-trained.toml"]);
    scored_and_codes(&p, "retrieval", 0.3);
}
