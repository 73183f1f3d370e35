//! Run, re-run, edit one thing: exactly the right stages re-run.

use crate::support::{Project, outcome_of, outcomes, stage_of};

const P: &str = "pipelines/full.toml";

fn all(run: &serde_json::Value, outcome: &str) -> bool {
    outcomes(run).iter().all(|(_, o)| o == outcome)
}

#[test]
fn second_run_executes_nothing() {
    let p = Project::new(600);
    p.ok(&["run", P]);
    assert!(all(&p.last_run(), "executed"));
    let out = p.ok(&["run", P]);
    let run = p.last_run();
    assert!(all(&run, "skipped"), "{run}");
    assert!(out.contains("0 executed"), "{out}");
    let st = p.ok(&["status", P]);
    assert!(!st.contains("[DIRTY]"), "{st}");
    // `status -q` answers by its exit code alone: 0 when nothing would run, 1 when something
    // would.
    assert_eq!(p.ok(&["status", "-q", P]), "");
    let out = p.run(&["status", "-q", P, "-S", "data.seed=7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}

#[test]
fn changed_input_reruns_exactly_its_downstream() {
    let p = Project::new(600);
    p.ok(&["run", P]);
    p.append(
        "data/raw/historical_records.csv",
        "barista,making coffee,5131\n",
    );
    let st = p.ok(&["status", P, "--format", "json"]);
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(st[0]["id"], "clean");
    assert_eq!(st[0]["state"], "stale");
    assert_eq!(st[0]["reasons"][0]["reason"], "input_changed");
    assert_eq!(st[1]["reasons"][0]["reason"], "upstream_stale");
    let text = p.ok(&["status", P]);
    assert!(
        text.contains("[DIRTY] clean: input data/raw/historical_records.csv changed (blake3 "),
        "{text}"
    );
    let out = p.ok(&["run", P, "-v"]);
    // The run record gives the same reason objects as `status`.
    assert_eq!(
        stage_of(&p.last_run(), "clean")["reasons"],
        st[0]["reasons"],
        "{st}"
    );
    assert!(
        out.contains("[DIRTY] corrections: upstream clean changed"),
        "{out}"
    );
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "clean"), "executed");
    assert_eq!(outcome_of(&run, "split"), "executed");
}

#[test]
fn param_change_reruns_only_its_stage_and_changing_back_restores() {
    let p = Project::new(600);
    p.ok(&["run", P]);
    p.edit(
        "config/default.toml",
        "test_fraction = 0.15",
        "test_fraction = 0.2",
    );
    let text = p.ok(&["status", P]);
    assert!(text.contains("[FRESH] clean"), "{text}");
    assert!(
        text.contains("[DIRTY] split: param test_fraction changed 0.15 -> 0.2"),
        "{text}"
    );
    p.ok(&["run", P]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "clean"), "skipped");
    assert_eq!(outcome_of(&run, "split"), "executed");
    let test_02 = std::fs::read(p.path("data/processed/test.parquet")).unwrap();

    p.edit(
        "config/default.toml",
        "test_fraction = 0.2",
        "test_fraction = 0.15",
    );
    p.ok(&["run", P]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "split"), "restored");
    assert_ne!(
        std::fs::read(p.path("data/processed/test.parquet")).unwrap(),
        test_02
    );
    // And back again: also a restore, the workspace copy follows.
    p.edit(
        "config/default.toml",
        "test_fraction = 0.15",
        "test_fraction = 0.2",
    );
    p.ok(&["run", P]);
    assert_eq!(outcome_of(&p.last_run(), "split"), "restored");
    assert_eq!(
        std::fs::read(p.path("data/processed/test.parquet")).unwrap(),
        test_02
    );
}

#[test]
fn a_deleted_or_edited_workspace_copy_is_put_back_and_the_edit_kept() {
    let p = Project::new(400);
    p.ok(&["run", P]);
    // One output deleted, one replaced by a file of the user's own, one folder deleted.
    std::fs::remove_file(p.path("data/processed/split_report.json")).unwrap();
    std::fs::remove_file(p.path("data/processed/outliers.csv")).unwrap();
    p.write("data/processed/outliers.csv", "my own notes\n");
    std::fs::remove_dir_all(p.path("models/latest_report")).unwrap();

    let st = p.ok(&["status", P]);
    for line in [
        "[FRESH] split: `data/processed/split_report.json` is not in the workspace; `run` puts the stage's output there",
        "[FRESH] cluster-outliers: `data/processed/outliers.csv` was changed in the workspace; `run` moves the changed copy to the store's quarantine/",
        "[FRESH] evaluate: `models/latest_report` is not in the workspace",
        "8 stages: 8 fresh, 0 stale; 3 workspace copies to put back",
    ] {
        assert!(st.contains(line), "{line}\n{st}");
    }
    let out = p.run(&["status", "-q", P]);
    assert_eq!(out.status.code(), Some(1), "a run has something to do");
    let json: serde_json::Value =
        serde_json::from_str(&p.ok(&["status", P, "--format", "json"])).unwrap();
    let copies: Vec<(String, String)> = json
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["workspace"].as_array().unwrap().clone())
        .map(|w| {
            (
                w["path"].as_str().unwrap().to_string(),
                w["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        copies,
        [
            ("data/processed/outliers.csv", "edited"),
            ("data/processed/split_report.json", "missing"),
            ("models/latest_report", "missing"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // A dry run says what it would do and does none of it.
    let out = p.ok(&["run", P, "--dry-run"]);
    assert!(
        out.contains("would put `data/processed/split_report.json` back"),
        "{out}"
    );
    assert!(
        out.contains("would move the changed `data/processed/outliers.csv`"),
        "{out}"
    );
    assert!(!p.path("data/processed/split_report.json").exists());
    assert_eq!(
        std::fs::read_to_string(p.path("data/processed/outliers.csv")).unwrap(),
        "my own notes\n"
    );

    // The run executes nothing, puts every copy back and keeps the edited one.
    let out = p.ok(&["run", P]);
    assert!(out.contains("0 executed, 8 skipped"), "{out}");
    assert!(
        out.contains("put `data/processed/split_report.json` back (it was not in the workspace)"),
        "{out}"
    );
    assert!(out.contains("put `models/latest_report` back"), "{out}");
    let moved = out
        .lines()
        .find_map(|l| l.split_once("changed in the workspace was moved to "))
        .map(|(_, to)| std::path::PathBuf::from(to.trim()))
        .unwrap_or_else(|| panic!("{out}"));
    let moved = if moved.is_absolute() {
        moved
    } else {
        p.path("").join(moved)
    };
    assert_eq!(std::fs::read_to_string(&moved).unwrap(), "my own notes\n");
    assert!(
        std::fs::read_to_string(p.path("data/processed/outliers.csv"))
            .unwrap()
            .starts_with("row,"),
        "the stage's table is back"
    );
    assert!(p.path("data/processed/split_report.json").is_file());
    assert!(p.path("models/latest_report/report.html").is_file());
    assert_eq!(p.ok(&["status", "-q", P]), "");

    // A dated output (the review queue) stays under the day the run that made it wrote it:
    // on a later day a fresh `predict` does not copy it to that day's name.
    for f in std::fs::read_dir(p.path("data/review")).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let (stem, ext) = name.split_once('.').unwrap();
        let earlier = format!("{}20200101.{ext}", &stem[..stem.len() - 8]);
        std::fs::rename(&f, f.with_file_name(earlier)).unwrap();
    }
    assert_eq!(p.ok(&["status", "-q", P]), "");
    p.ok(&["run", P]);
    let mut queues: Vec<String> = std::fs::read_dir(p.path("data/review"))
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    queues.sort();
    assert_eq!(
        queues,
        ["to_review_20200101.csv", "to_review_20200101.parquet"]
    );

    // A stage that executes writes over an edited copy the same way: the edit is kept.
    std::fs::remove_file(p.path("data/processed/split_report.json")).unwrap();
    p.write("data/processed/split_report.json", "{\"mine\": true}\n");
    let out = p.ok(&["run", P, "--force", "split"]);
    assert!(
        out.contains("`data/processed/split_report.json` had been changed in the workspace; the changed copy was moved to "),
        "{out}"
    );
}

#[test]
fn dry_run_changes_nothing() {
    let p = Project::new(400);
    p.ok(&["run", P]);
    let runs_before = p.ok(&["runs", "list"]);
    let records = std::fs::read(p.path("data/raw/historical_records.csv")).unwrap();
    p.append(
        "data/raw/historical_records.csv",
        "baker,baking bread,7512\n",
    );
    let out = p.ok(&["run", P, "--dry-run", "-v"]);
    assert!(out.contains("would_run clean"), "{out}");
    assert!(out.contains("would_run split"), "{out}");
    assert_eq!(p.ok(&["runs", "list"]), runs_before);
    let st = p.ok(&["status", P]);
    assert!(st.contains("[DIRTY] clean"), "{st}");

    // A stage the run-cache holds would be restored: the dry run says so, restores nothing,
    // and does not count it as restored.
    std::fs::write(p.path("data/raw/historical_records.csv"), &records).unwrap();
    p.ok(&["run", P, "-S", "data.seed=7"]);
    let test_7 = std::fs::read(p.path("data/processed/test.parquet")).unwrap();
    let out = p.ok(&["run", P, "--dry-run"]);
    assert!(
        out.contains("restore   split              would be restored"),
        "{out}"
    );
    assert!(out.contains("full (dry run): "), "{out}");
    assert!(
        out.contains("would be restored, 3 skipped") && !out.contains("executed"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(p.path("data/processed/test.parquet")).unwrap(),
        test_7
    );
}

#[test]
fn force_until_and_only_select_stages() {
    let p = Project::new(400);
    p.ok(&["run", P, "--until", "clean"]);
    assert_eq!(
        outcomes(&p.last_run()),
        vec![("clean".into(), "executed".into())]
    );
    let (code, err) = p.fails(&["run", P, "--only", "split"]);
    assert_eq!(code, 1);
    assert!(err.contains("needs the outputs of `corrections`"), "{err}");
    p.ok(&["run", P, "--until", "cluster-outliers"]);
    let out = p.run(&["run", P, "--only", "split"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("stale"), "{err}");
    assert_eq!(
        outcomes(&p.last_run()),
        vec![("split".into(), "executed".into())]
    );
    p.ok(&["run", P, "--force", "split"]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "clean"), "skipped");
    assert_eq!(outcome_of(&run, "split"), "executed");
    assert_eq!(stage_of(&run, "split")["reasons"][0]["reason"], "forced");
    p.ok(&["run", P, "--force"]);
    assert!(all(&p.last_run(), "executed"));
    // With an upstream stage stale, `--only` still runs on its last outputs and says so.
    p.append(
        "data/raw/historical_records.csv",
        "barista,making coffee,5131\n",
    );
    let out = p.run(&["run", P, "--only", "split"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(
            "warning: upstream stages are stale (clean: input data/raw/historical_records.csv changed"
        ),
        "{err}"
    );
    assert!(
        err.contains("; corrections: upstream clean is stale;"),
        "{err}"
    );
    assert!(err.contains("Run with `--until split`"), "{err}");
    assert_eq!(
        outcomes(&p.last_run()),
        vec![("split".into(), "skipped".into())]
    );
    // `runs diff` compares the stages that partial run left out as the run before left them.
    let before = p.ok(&["runs", "show", "last~1", "--format", "json"]);
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    p.ok(&["run", P]);
    let diff = p.ok(&["runs", "diff"]);
    let partial = p.ok(&["runs", "show", "last~1", "--format", "json"]);
    let partial: serde_json::Value = serde_json::from_str(&partial).unwrap();
    assert!(
        diff.contains(&format!(
            "(run {} did not include clean, corrections, cluster-outliers, train, evaluate, promote, predict: compared as run {} left them)",
            partial["id"].as_str().unwrap(),
            before["id"].as_str().unwrap()
        )),
        "{diff}"
    );
    assert!(
        diff.lines()
            .any(|l| l.starts_with("  clean.rows_in: ") && l.ends_with(" (+1)")),
        "{diff}"
    );
}

#[test]
fn reordered_rows_with_same_content_cut_off_downstream() {
    // Renaming a stage output path does not change its content: downstream stays fresh.
    let p = Project::new(300);
    p.ok(&["run", P]);
    p.edit(
        "pipelines/full.toml",
        "data/processed/clean.parquet",
        "data/processed/clean2.parquet",
    );
    p.ok(&["run", P]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "clean"), "skipped");
    assert!(p.path("data/processed/clean2.parquet").is_file());
}

#[test]
fn extending_pipeline_reuses_base_stages() {
    let p = Project::new(300);
    p.ok(&["run", P]);
    p.write(
        "pipelines/child.toml",
        r#"[pipeline]
extends = "full.toml"
name = "child"

[[stage]]
id = "split"
kind = "split"
replace = true
inputs = { records = "clean.records" }
params = { seed = 7 }
"#,
    );
    p.ok(&["run", "pipelines/child.toml"]);
    let run = p.last_run();
    assert_eq!(run["pipeline"], "pipelines/child.toml");
    assert_eq!(outcome_of(&run, "clean"), "skipped");
    assert_eq!(outcome_of(&run, "split"), "executed");
}

#[test]
fn failing_branch_blocks_its_dependents_while_others_finish() {
    let p = Project::new(300);
    p.write(
        "data/raw/bad.csv",
        "job_title,duties_description,isco_code\nx,y,12\n",
    );
    p.write(
        "pipelines/two.toml",
        r#"[pipeline]
name = "two"

[[stage]]
id = "clean_bad"
kind = "clean"
inputs = { records = "data/raw/bad.csv" }

[[stage]]
id = "split_bad"
kind = "split"
inputs = { records = "clean_bad.records" }

[[stage]]
id = "clean_good"
kind = "clean"
inputs = { records = "data/raw/historical_records.csv" }

[[stage]]
id = "split_good"
kind = "split"
inputs = { records = "clean_good.records" }
"#,
    );
    let (code, err) = p.fails(&["run", "pipelines/two.toml"]);
    assert_eq!(code, 1);
    // The stage writes no quarantine file when it fails, so its error gives the reasons.
    assert!(
        err.contains("bad.csv: no usable rows remain after cleaning (all 1 quarantined): 1 × `12` is not a 4-digit ISCO-08 unit group code (first: row 0 (line 2), column `isco_code`)"),
        "{err}"
    );
    let run = p.last_run();
    assert_eq!(run["status"], "failed");
    assert_eq!(outcome_of(&run, "clean_bad"), "failed");
    assert_eq!(outcome_of(&run, "split_bad"), "blocked");
    assert_eq!(outcome_of(&run, "split_good"), "executed");
    // The failure recorded no key: the next run tries again.
    let _ = p.fails(&["run", "pipelines/two.toml"]);
    assert_eq!(outcome_of(&p.last_run(), "clean_bad"), "failed");
    assert_eq!(outcome_of(&p.last_run(), "split_good"), "skipped");
    // A file with only its header says so, not that its rows were quarantined.
    p.write(
        "data/raw/bad.csv",
        "job_title,duties_description,isco_code\n",
    );
    let (_, err) = p.fails(&["run", "pipelines/two.toml"]);
    assert!(err.contains("bad.csv: has a header but no rows"), "{err}");
    // Once the file is fixed, `runs diff` says what it can of the failed and blocked stages.
    p.write(
        "data/raw/bad.csv",
        "job_title,duties_description,isco_code\nchef,cooking,5120\ncook,soups,5120\nbaker,bread,7512\nbaker,cakes,7512\n",
    );
    let _ = p.run(&["run", "pipelines/two.toml"]);
    let diff = p.ok(&["runs", "diff", "last~1", "last"]);
    let line = |id: &str| {
        diff.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("clean_bad").ends_with("failed    -> executed  key changed"),
        "{diff}"
    );
    // What changed for the stage that failed: its input file, from the failed run's record.
    let after: Vec<&str> = diff
        .lines()
        .skip_while(|l| l.split_whitespace().next() != Some("clean_bad"))
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .collect();
    assert!(
        after
            .iter()
            .any(|l| l.contains("input data/raw/bad.csv changed")),
        "{diff}"
    );
    assert!(
        line("split_bad").contains("blocked   -> ")
            && line("split_bad").contains("no key to compare"),
        "{diff}"
    );
    assert!(line("split_good").ends_with("same key"), "{diff}");
}

#[test]
fn runs_diff_and_lineage() {
    let p = Project::new(300);
    p.ok(&["run", P]);
    p.edit("config/default.toml", "seed = 42", "seed = 43");
    p.ok(&["run", P]);
    let d: serde_json::Value =
        serde_json::from_str(&p.ok(&["runs", "diff", "last~1", "last", "--format", "json"]))
            .unwrap();
    let split = d["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "split")
        .unwrap();
    assert_eq!(split["key_changed"], true);
    let lin = p.ok(&["lineage", "data/processed/train.parquet"]);
    assert!(lin.contains("split.train"), "{lin}");
    assert!(lin.contains("seed=43"), "{lin}");
    assert!(
        lin.contains("file data/raw/historical_records.csv"),
        "{lin}"
    );
    let dot = p.ok(&["dag", P, "--format", "dot"]);
    assert!(dot.contains("\"corrections\" -> \"split\""), "{dot}");
    let mer = p.ok(&["dag", P, "--format", "mermaid"]);
    assert!(
        mer.contains("corrections -->|records -> records| split"),
        "{mer}"
    );
}

/// A setting only the calibration reads re-runs `train` but not the n-gram network's training:
/// the network is the previous run's (the seconds its training took, a measurement no two
/// trainings repeat, are the previous run's too), and the report says so; `--force` and a
/// setting the network's training reads train it again.
#[test]
fn a_calibration_setting_keeps_the_trained_network() {
    let p = Project::new(600);
    // The train stage's metrics of a run, and the run's output.
    let train = |args: &[&str]| {
        let out = p.ok(&[&["run", P][..], args].concat());
        let run = p.last_run();
        assert_eq!(outcome_of(&run, "train"), "executed");
        (stage_of(&run, "train")["metrics"].clone(), out)
    };
    train(&[]);
    let before = p.json("models/latest/model.json");
    let network = || std::fs::read(p.path("models/latest/model.bpk")).unwrap();
    let first_network = network();
    let key = before["ngram_training"]["key"].as_str().unwrap();
    assert_eq!(key.len(), 64, "a blake3 digest in hex: {key}");

    p.edit(
        "config/default.toml",
        "calibration = \"isotonic\"  #",
        "calibration = \"ece\"  #",
    );
    let (m, out) = train(&[]);
    assert_eq!(m["ngram_reused"], true, "{m}");
    assert!(
        out.contains("(the previous run's network: same examples and settings)"),
        "{out}"
    );
    let after = p.json("models/latest/model.json");
    assert_eq!(after["ngram_training"], before["ngram_training"]);
    assert_ne!(after["isotonic"], before["isotonic"], "calibrated again");
    for k in ["best_epoch", "validation_macro_f1", "train_seconds"] {
        assert_eq!(m[k], before["summary"]["metrics"][k], "{k}");
    }
    // The network taken over is written as the same bytes, so the store keeps it once.
    assert!(first_network == network(), "the same network, other bytes");

    // `--force` trains everything again; training is deterministic, so to the same bytes.
    let (m, _) = train(&["--force", "train"]);
    assert_eq!(m["ngram_reused"], false, "{m}");
    assert!(first_network == network(), "trained again, other bytes");

    p.edit(
        "config/default.toml",
        "lr_embedding = 0.2",
        "lr_embedding = 0.25",
    );
    let (m, _) = train(&[]);
    assert_eq!(m["ngram_reused"], false, "{m}");
    assert_ne!(
        m["train_seconds"], before["summary"]["metrics"]["train_seconds"],
        "trained again"
    );
    assert_ne!(
        p.json("models/latest/model.json")["ngram_training"]["key"],
        before["ngram_training"]["key"]
    );
}
