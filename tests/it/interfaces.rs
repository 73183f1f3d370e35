//! What a user meets around a run: Ctrl-C, the JSON log.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{Project, outcome_of};

const P: &str = "pipelines/full.toml";

/// Starts `run` and returns once `train` is running (a long training, so it still is).
fn run_until_train(p: &Project) -> std::process::Child {
    p.edit("config/default.toml", "epochs = 8", "epochs = 100000");
    p.edit(
        "config/default.toml",
        "early_stopping_patience = 2",
        "early_stopping_patience = 100000",
    );
    let mut child = p
        .cmd(&["run", P])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("the run printed nothing").unwrap();
        if l.starts_with("running   train") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

#[test]
fn ctrl_c_records_the_run_as_interrupted_and_keeps_what_finished() {
    let p = Project::new(600);
    let child = run_until_train(&p);
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("recorded as interrupted") && err.contains("(clean, corrections"),
        "{err}"
    );
    let run = p.last_run();
    assert_eq!(run["status"], "interrupted", "{run}");
    assert_eq!(outcome_of(&run, "split"), "executed");
    let list = p.ok(&["runs", "list"]);
    assert!(list.contains("interrupted"), "{list}");
    // The finished stages stay fresh; train says why it is stale, not "never run".
    let st: serde_json::Value =
        serde_json::from_str(&p.ok(&["status", P, "--format", "json"])).unwrap();
    let state = |id: &str| {
        st.as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    for id in ["clean", "corrections", "cluster-outliers", "split"] {
        assert_eq!(state(id)["state"], "fresh", "{st}");
    }
    assert_eq!(state("train")["state"], "stale");
    assert_eq!(state("train")["reasons"][0]["reason"], "never_run", "{st}");
    // The next run goes on without recovering a "dead" lock.
    p.edit("config/default.toml", "epochs = 100000", "epochs = 8");
    p.edit(
        "config/default.toml",
        "early_stopping_patience = 100000",
        "early_stopping_patience = 2",
    );
    let out = p.run(&["run", P]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("recovered the store lock"));
    assert_eq!(outcome_of(&p.last_run(), "split"), "skipped");
}

#[test]
fn the_json_log_alone_tells_what_a_run_did() {
    let p = Project::new(300);
    for expected in ["executed", "skipped"] {
        let out = p.run(&["run", P, "--log-format", "json"]);
        assert!(out.status.success());
        let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let of = |name: &str| -> Vec<&serde_json::Value> {
            events
                .iter()
                .filter(|e| e["fields"]["event"] == name)
                .collect()
        };
        assert_eq!(of("run_started").len(), 1);
        assert_eq!(of("run_finished").len(), 1);
        assert_eq!(of("run_finished")[0]["fields"]["status"], "succeeded");
        let finished = of("stage_finished");
        assert_eq!(finished.len(), 8, "{events:?}");
        for e in finished {
            let f = &e["fields"];
            assert_eq!(f["outcome"], expected, "{e}");
            assert!(f["duration_s"].is_number() && f["key"].as_str().unwrap().len() == 64);
        }
        if expected == "executed" {
            assert_eq!(of("stage_started").len(), 8);
            let train = of("stage_finished")
                .into_iter()
                .find(|e| e["fields"]["stage"] == "train")
                .unwrap();
            let metrics: serde_json::Value =
                serde_json::from_str(train["fields"]["metrics"].as_str().unwrap()).unwrap();
            assert!(metrics.is_object() && !metrics.as_object().unwrap().is_empty());
        }
    }
}

/// Every CSV table under `dir` (recursively).
fn csv_tables(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten() {
        let p = e.unwrap().path();
        if p.is_dir() {
            csv_tables(&p, out);
        } else if p.extension().is_some_and(|x| x == "csv") {
            out.push(p);
        }
    }
}

#[test]
fn every_table_keeps_its_codes_as_text() {
    let p = Project::new(600);
    p.ok(&["run", P]);
    p.ok(&[
        "predict",
        "--input",
        "data/demo/new_jobs.csv",
        "--output",
        "coded.csv",
        "--explain",
    ]);
    let mut tables = Vec::new();
    for dir in ["data/processed", "data/review", "models"] {
        csv_tables(&p.path(dir), &mut tables);
    }
    tables.push(p.path("coded.explain.csv"));
    assert!(tables.len() >= 15, "{tables:?}");
    let mut codes_seen = 0;
    let mut leading_zero = 0;
    for csv in &tables {
        let parquet = csv.with_extension("parquet");
        let t = artifacts::table::Table::read_parquet(&parquet)
            .unwrap_or_else(|e| panic!("{} has no Parquet twin: {e}", csv.display()));
        let mut r = csv::Reader::from_path(csv).unwrap();
        let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(t.num_rows(), rows.len(), "{}", csv.display());
        for (name, col) in &t.columns {
            let is_code = name.ends_with("code") || name == "group";
            if !is_code {
                continue;
            }
            let artifacts::table::Column::Str(values) = col else {
                panic!(
                    "{}: column {name} is not text in Parquet",
                    parquet.display()
                );
            };
            let i = header.iter().position(|h| h == name).unwrap();
            // A quarantine file holds the raw values that were refused, codes or not.
            let raw = csv.to_string_lossy().contains("quarantine");
            for (v, row) in values.iter().zip(&rows) {
                assert!(
                    raw || v.is_empty() || (v.len() <= 4 && v.bytes().all(|b| b.is_ascii_digit())),
                    "{}: {name} = {v:?}",
                    parquet.display()
                );
                assert_eq!(v, &row[i], "{}: {name}", csv.display());
                codes_seen += 1;
                leading_zero += v.starts_with('0') as usize;
            }
        }
    }
    assert!(codes_seen > 1000, "{codes_seen}");
    assert!(
        leading_zero > 0,
        "the demo has codes starting with 0 (armed forces)"
    );
}

#[test]
fn experiments_set_params_for_one_run_and_diff_names_them() {
    let p = Project::new(300);
    p.ok(&["run", P]);
    // One run has nothing to be compared with, and the message says so.
    let (_, err) = p.fails(&["runs", "diff"]);
    assert!(
        err.contains("no run `last~1`: this store has recorded 1 run; `runs diff` compares two"),
        "{err}"
    );
    // `runs show` alone shows the last run.
    let id = p
        .ok(&["runs", "list"])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(
        p.ok(&["runs", "show"])
            .starts_with(&format!("run {id} of {P}"))
    );
    // A param the ngram model does not read leaves its key alone.
    let st = p.ok(&["status", P, "-S", "model.transformer_lr=0.5"]);
    assert!(st.contains("[FRESH] train"), "{st}");
    p.ok(&[
        "run",
        P,
        "-S",
        "training.epochs=3",
        "-S",
        "training.lr_embedding=0.1",
    ]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "train"), "executed");
    assert_eq!(
        run["overrides"],
        serde_json::json!(["training.epochs=3", "training.lr_embedding=0.1"])
    );
    // The files were not edited: without -S the first model's key is back (restored).
    let cfg = std::fs::read_to_string(p.path("config/default.toml")).unwrap();
    assert!(cfg.contains("epochs = 8"));
    let diff = p.ok(&["runs", "diff", "last~1", "last"]);
    assert!(diff.contains("param epochs changed 8 -> 3"), "{diff}");
    assert_eq!(
        p.ok(&["runs", "diff"]),
        diff,
        "the last two runs by default"
    );
    assert!(
        diff.contains("param lr_embedding changed 0.2 -> 0.1"),
        "{diff}"
    );
    let lineage = p.ok(&["lineage", "models/latest"]);
    assert!(lineage.contains("lr_embedding=0.1,"), "{lineage}");
    assert!(!lineage.contains("0.10000000149011612"), "{lineage}");
    // Each artifact once: split.train and split.validation come from one split execution,
    // but a shared upstream (clean's records via corrections) is printed once.
    let full: Vec<&str> = lineage
        .lines()
        .filter(|l| l.contains("<- stage clean"))
        .collect();
    assert!(full.len() <= 1, "{lineage}");
    // A copy of the epochs=3 model, which no stage record or ref holds once the next run
    // restores the first model, is still known by its files.
    std::fs::create_dir_all(p.path("old_model")).unwrap();
    for e in std::fs::read_dir(p.path("models/latest")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), p.path("old_model").join(e.file_name())).unwrap();
    }
    p.ok(&["run", P]);
    assert_eq!(outcome_of(&p.last_run(), "train"), "restored");
    let old = p.ok(&["lineage", "old_model"]);
    assert!(old.contains("epochs=3,"), "{old}");
    assert!(!p.ok(&["lineage", "models/latest"]).contains("epochs=3,"));
    // `runs list` says which params each run set, and gives the metrics asked for; `runs
    // show` names the nested ones the same way.
    let list = p.ok(&[
        "runs",
        "list",
        "--metric",
        "train.epochs_run",
        "--metric",
        "evaluate.test.accuracy",
    ]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[1].contains("  train.epochs_run=3  evaluate.test.accuracy=0.")
            && lines[1].ends_with("  -S training.epochs=3  -S training.lr_embedding=0.1"),
        "{list}"
    );
    assert!(!lines[2].contains("-S"), "{list}");
    assert!(
        p.ok(&["runs", "show", "last~1"])
            .lines()
            .next()
            .unwrap()
            .ends_with(" -S training.epochs=3 -S training.lr_embedding=0.1")
    );
    assert!(
        p.ok(&["runs", "show"]).contains("      test.accuracy = 0."),
        "nested metrics in runs show"
    );
    // A run id's start names a run when one run has it, and says how many when several do.
    let first = lines[0].split_whitespace().next().unwrap();
    assert!(
        p.ok(&["runs", "show", &first[..first.len() - 2]])
            .starts_with(&format!("run {first} "))
    );
    let (_, err) = p.fails(&["runs", "show", &first[..4]]);
    assert!(
        err.contains(&format!(
            "`{}` is the start of 3 run ids ({first}, ",
            &first[..4]
        )),
        "{err}"
    );
    let (code, err) = p.fails(&["runs", "list", "--metric", "evaluate.accuracy"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no run recorded the metric `evaluate.accuracy`"),
        "{err}"
    );
    // Bad -S values are configuration errors that say which -S.
    let (code, err) = p.fails(&["run", P, "-S", "training.epochs=many"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("-S training.epochs=many") && err.contains("`epochs`"),
        "{err}"
    );
    let (code, err) = p.fails(&["run", P, "-S", "nosuch.epochs=3"]);
    assert_eq!(code, 2);
    assert!(err.contains("neither a section"), "{err}");
    let (_, err) = p.fails(&["run", P, "-S", "trainig.epochs=3"]);
    assert!(err.contains("(did you mean `training`?)"), "{err}");
    let (code, _) = p.fails(&["run", P, "-S", "epochs"]);
    assert_eq!(code, 2);
    // [training] sets lr_embedding after [model] for train: a -S into [model] would do nothing.
    let (code, err) = p.fails(&["run", P, "-S", "model.lr_embedding=0.1"]);
    assert_eq!(code, 2);
    assert!(err.contains("later section"), "{err}");
    // A mistyped key is named as unknown, with the param it resembles.
    let (code, err) = p.fails(&["run", P, "-S", "training.epoch=3"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "no stage reading [training] (train) has a param `epoch` (did you mean `epochs`?)"
        ),
        "{err}"
    );
    let (code, err) = p.fails(&["run", P, "-S", "train.epoch=3"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("has no param `epoch` (did you mean `epochs`?)"),
        "{err}"
    );
}

#[test]
fn a_mistyped_stage_on_the_command_line_is_named_before_anything_runs() {
    let p = Project::new(50);
    for flag in ["--until", "--only", "--force"] {
        let (code, err) = p.fails(&["run", "pipelines/full.toml", flag, "trian"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("no stage `trian` (did you mean `train`?)"),
            "{flag}: {err}"
        );
    }
    // Nothing ran, so there is no run record and no summary.
    assert!(!p.path("artifacts/store/runs").exists() || p.ok(&["runs", "list"]).trim().is_empty());
    // Without a pipeline file, `run`, `status` and `dag` take the main one, as `lineage` does.
    let (code, err) = p.fails(&["run", "--only", "trian"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did you mean `train`?"), "{err}");
    assert_eq!(
        p.ok(&["dag"]),
        p.ok(&["dag", "pipelines/full.toml"]),
        "dag without a pipeline file"
    );
    assert!(p.ok(&["status"]).contains("[DIRTY] clean: never run"));
    // An encoder `models fetch` does not know is a usage error listing the ones it knows,
    // found before anything is downloaded.
    let (code, err) = p.fails(&["models", "fetch", "bert", "--dir", "enc"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'bert'") && err.contains("minilm") && err.contains("mpnet"),
        "{err}"
    );
    assert!(!p.path("enc").exists());
}

#[test]
fn kinds_lists_every_stage_kind_as_a_table() {
    let p = Project::new(50);
    let out = p.ok(&["kinds"]);
    for kind in [
        "clean",
        "train",
        "train-encoder",
        "train-reranker",
        "promote",
    ] {
        assert!(
            out.contains(&format!("\n{kind} (v")) || out.starts_with(&format!("{kind} (v")),
            "{kind}: {out}"
        );
    }
    // Every input and output name is padded to one width, so the descriptions line up.
    let starts: std::collections::BTreeSet<usize> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("  input  ")
                .or_else(|| l.strip_prefix("  output "))
        })
        // Where the description starts: after the name and its padding.
        .map(|rest| rest.len() - rest.split_once(' ').unwrap().1.trim_start().len())
        .collect();
    assert_eq!(starts.len(), 1, "{out}");
}
