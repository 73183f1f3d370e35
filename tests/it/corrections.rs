//! Corrections and fine-tuning: `finetune.toml` after `full.toml` re-runs only what new
//! corrections make stale, learns them, and ignores re-exports.

use crate::support::{Project, outcome_of, stage_of};
use std::collections::BTreeSet;

const FULL: &str = "pipelines/full.toml";
const FT: &str = "pipelines/finetune.toml";

fn accuracy(p: &Project, metrics: &str, set: &str) -> f64 {
    p.json(metrics)[set]["accuracy"].as_f64().unwrap()
}

#[test]
fn finetune_skips_the_historical_stages_learns_and_ignores_reexports() {
    let p = Project::new(1500);
    p.ok(&["run", FULL]);
    // Before any correction, fine-tuning says what to do, without a path inside the store.
    let (_, err) = p.fails(&["run", FT]);
    assert!(
        err.contains("fine-tune failed: there are no corrections to fine-tune on")
            && !err.contains("checkouts/"),
        "{err}"
    );
    let demo = std::fs::read_to_string(p.path("data/demo/corrections_demo.csv")).unwrap();
    p.write("data/corrections/batch1.csv", &demo);

    let out = p.ok(&["run", FT]);
    let run = p.last_run();
    for id in [
        "clean",
        "cluster-outliers",
        "split",
        "train",
        "evaluate",
        "promote",
    ] {
        assert_eq!(outcome_of(&run, id), "skipped", "{id}: {out}");
    }
    for id in [
        "corrections",
        "fine-tune",
        "evaluate-finetune",
        "promote-finetune",
    ] {
        assert_eq!(outcome_of(&run, id), "executed", "{id}: {out}");
    }
    let c = &stage_of(&run, "corrections")["metrics"];
    assert_eq!(c["files"], 1);
    assert!(c["conflicts"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["records_overridden"], 0);

    // The corrections teach the occupations the records never show.
    let before = accuracy(&p, "models/latest_metrics.json", "new_occupations_eval");
    let after = accuracy(&p, "models/finetuned_metrics.json", "new_occupations_eval");
    assert!(after >= before + 0.2, "{before} -> {after}");
    let m = p.json("models/finetuned_metrics.json");
    assert!(
        m["corrections_holdout"]["accuracy"].as_f64().unwrap() > 0.5,
        "{m}"
    );
    let test_before = accuracy(&p, "models/latest_metrics.json", "test");
    let test_after = accuracy(&p, "models/finetuned_metrics.json", "test");
    assert!(
        test_after >= test_before - 0.03,
        "{test_before} -> {test_after}"
    );
    let decision = &stage_of(&run, "promote-finetune")["metrics"];
    assert_eq!(decision["promoted"], true, "{out}");
    // `models/best` now holds the fine-tuned model; its lineage says so, although the main
    // pipeline (lineage's default) writes that folder too. The ref name answers the same.
    let lineage = p.ok(&["lineage", "models/best"]);
    assert!(
        lineage.starts_with("promote-finetune.best ") && lineage.contains("<- stage fine-tune "),
        "{lineage}"
    );
    assert_eq!(p.ok(&["lineage", "best"]), lineage);
    // Runs of pipelines with names of different lengths line up in `runs list`.
    let list = p.ok(&["runs", "list"]);
    let at: BTreeSet<Option<usize>> = list.lines().map(|l| l.find("  executed ")).collect();
    assert_eq!(at.len(), 1, "{list}");
    assert!(list.contains("pipelines/full.toml ") && list.contains("pipelines/finetune.toml "));
    // Any folder is known by its files: a copy of the model answers as the model, and a copy
    // whose files were changed is not taken for it.
    std::fs::create_dir_all(p.path("copy")).unwrap();
    for e in std::fs::read_dir(p.path("models/best")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), p.path("copy").join(e.file_name())).unwrap();
    }
    assert_eq!(p.ok(&["lineage", "copy"]), lineage);
    let json = p.path("copy/model.json");
    let mut perm = std::fs::metadata(&json).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&json, perm).unwrap();
    p.append("copy/model.json", " ");
    let (_, err) = p.fails(&["lineage", "copy"]);
    assert!(
        err.contains("`copy` does not hold an output the store recorded"),
        "{err}"
    );

    // The main pipeline, all fresh, leaves the fine-tuned model in `models/best`: that folder
    // shows the model the ref points at, which the fine-tune's promotion moved.
    let files = |dir: &str| -> Vec<(std::ffi::OsString, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(p.path(dir))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let out = p.ok(&["run", FULL]);
    assert!(
        out.contains("0 executed") && !out.contains("models/best"),
        "{out}"
    );
    assert_eq!(files("models/best"), files("models/finetuned"));
    assert_eq!(p.ok(&["status", "-q", FULL]), "", "nothing for a run to do");
    // So does a promotion restored from the run-cache: a setting changed and changed back
    // restores the main pipeline's stages, and the folder still shows the ref's model.
    p.ok(&["run", FULL, "-S", "training.epochs=2"]);
    let out = p.ok(&["run", FULL]);
    assert!(out.contains("restored  promote"), "{out}");
    assert_eq!(
        p.ok(&["lineage", "models/best"]),
        p.ok(&["lineage", "best"])
    );
    assert_eq!(p.ok(&["status", "-q", FULL]), "");

    // Nothing new: nothing runs.
    p.ok(&["run", FT]);
    let run = p.last_run();
    assert!(
        run["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "skipped"),
        "{run}"
    );

    // The same corrections, re-exported in another order under another name: only the
    // ingest runs, and it writes the same tables, so fine-tune stays fresh.
    let mut lines: Vec<&str> = demo.lines().collect();
    lines[1..].reverse();
    std::fs::remove_file(p.path("data/corrections/batch1.csv")).unwrap();
    p.write(
        "data/corrections/export-2026-11.csv",
        &(lines.join("\n") + "\n"),
    );
    p.ok(&["run", FT]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "corrections"), "executed");
    for id in [
        "fine-tune",
        "evaluate-finetune",
        "promote-finetune",
        "split",
        "train",
    ] {
        assert_eq!(outcome_of(&run, id), "skipped", "{id}");
    }

    // A new batch re-runs the fine-tune, still not the historical stages.
    p.write(
        "data/corrections/batch2.csv",
        "text,corrected_isco_code\nweb page designer creating website graphics,2166\n",
    );
    p.ok(&["run", FT]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "fine-tune"), "executed");
    assert_eq!(outcome_of(&run, "train"), "skipped");
}

#[test]
fn corrections_of_historical_texts_relabel_them_on_a_full_run_only() {
    let p = Project::new(600);
    p.ok(&["run", FULL]);
    // The first record's exact text, corrected to another code.
    let records = std::fs::read_to_string(p.path("data/raw/historical_records.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(records.as_bytes());
    let first = rdr.records().next().unwrap().unwrap();
    let code = if &first[2] == "9112" { "5120" } else { "9112" };
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record([
        "job_title",
        "duties_description",
        "corrected_isco_code",
        "coder",
        "timestamp",
    ])
    .unwrap();
    w.write_record([&first[0], &first[1], code, "ana", "2026-11-20T09:00:00Z"])
        .unwrap();
    p.write(
        "data/corrections/fix.csv",
        &String::from_utf8(w.into_inner().unwrap()).unwrap(),
    );

    // finetune.toml keeps the historical split and model (frozen) ...
    let out = p.ok(&["run", FT]);
    let run = p.last_run();
    assert!(
        stage_of(&run, "corrections")["metrics"]["records_overridden"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(outcome_of(&run, "split"), "skipped", "{out}");
    assert_eq!(outcome_of(&run, "train"), "skipped");
    // A stage kept frozen reports the metrics of the execution it keeps, as a fresh one does.
    assert!(
        stage_of(&run, "train")["metrics"]["train_records"].as_u64() > Some(0),
        "{run}"
    );
    assert!(
        out.contains("frozen (stale, kept its last results)"),
        "{out}"
    );
    let st = p.ok(&["status", FT]);
    assert!(
        st.contains("[FROZEN] split: keeps its last results although upstream corrections changed"),
        "{st}"
    );

    // A frozen stage whose own params change still re-runs (on the kept split).
    p.edit("config/default.toml", "epochs = 8", "epochs = 7");
    p.ok(&["run", FT]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "split"), "skipped");
    assert_eq!(outcome_of(&run, "train"), "executed");

    // ... and a full run re-splits and re-trains with the corrected label.
    p.ok(&["run", FULL]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "split"), "executed");
    assert_eq!(outcome_of(&run, "train"), "executed");
}

#[test]
fn bad_correction_rows_are_quarantined_and_conflicts_reported() {
    let p = Project::new(50);
    p.write(
        "data/corrections/a.csv",
        "job_title,duties_description,corrected_isco_code,coder,timestamp\n\
         roofer,laying tiles,7121,ana,2026-11-01T10:00:00Z\n\
         roofer,laying tiles,9112,bo,2026-11-02T10:00:00Z\n\
         slater,,99999,ana,\n\
         ,,7121,ana,\n\
         thatcher,,7121,ana,last tuesday\n",
    );
    p.write(
        "data/corrections/b.csv",
        "job_title,duties_description,corrected_isco_code,coder,timestamp\n\
         roofer,laying tiles,7121,cy,03.11.2026 08:00\n",
    );
    p.ok(&["run", FULL, "--until", "corrections"]);
    let run = p.last_run();
    let m = &stage_of(&run, "corrections")["metrics"];
    assert_eq!(m["rows_in"], 6);
    assert_eq!(m["quarantined"], 3);
    assert_eq!(m["corrections"], 1);
    assert_eq!(m["conflicts"], 1);
    let q = std::fs::read_to_string(p.path("data/processed/corrections_quarantine.csv")).unwrap();
    assert!(q.contains("a.csv,2,4,corrected_isco_code,"), "{q}");
    assert!(q.contains("a.csv,3,5,job_title,the text is empty"), "{q}");
    assert!(
        q.contains("a.csv,4,6,timestamp,`last tuesday` is not a date"),
        "{q}"
    );
    let c = std::fs::read_to_string(p.path("data/processed/corrections_conflicts.csv")).unwrap();
    // The latest (b.csv, 3 November, written day first as a spreadsheet saves it) wins over
    // a.csv's 9112 of 2 November.
    assert!(c.contains("roofer | laying tiles,7121,9112,"), "{c}");
}

#[test]
fn an_office_exports_corrections_under_its_own_headings() {
    let p = Project::new(50);
    p.ok(&["run", FULL, "--until", "corrections"]);
    let key = |p: &Project| stage_of(&p.last_run(), "corrections")["key"].clone();
    let standard_key = key(&p);
    // The office's export, `;`-separated under the headings its records have, beside a
    // file the review page wrote.
    p.write(
        "data/corrections/office.csv",
        "Job Title;Duties;ISCO;coder\nroofer;laying tiles;7121;ana\nslater;;99999;ana\n",
    );
    p.write(
        "data/corrections/review.csv",
        "job_title,duties_description,corrected_isco_code\nthatcher,,7121\n",
    );
    let (_, err) = p.fails(&["run", FULL, "--until", "corrections"]);
    assert!(
        err.contains("office.csv: has neither a `job_title` nor a `text` column")
            && err.contains("or set `title_column` in [data] to the name it has"),
        "{err}"
    );
    let named = [
        "-S",
        "corrections.title_column=Job Title",
        "-S",
        "corrections.duties_column=Duties",
        "-S",
        "corrections.code_column=ISCO",
    ];
    let mut args = vec!["run", FULL, "--until", "corrections"];
    args.extend(named);
    p.ok(&args);
    let run = p.last_run();
    let m = &stage_of(&run, "corrections")["metrics"];
    assert_eq!(m["rows_in"], 3, "{m}");
    assert_eq!(m["corrections"], 2, "{m}");
    assert_eq!(m["quarantined"], 1, "{m}");
    let q = std::fs::read_to_string(p.path("data/processed/corrections_quarantine.csv")).unwrap();
    assert!(q.contains("office.csv,1,3,ISCO,"), "{q}");
    let t = std::fs::read_to_string(p.path("data/processed/corrections_report.json")).unwrap();
    assert!(t.contains("\"codes\": 1"), "{t}");
    // The standard names, given or not, leave the stage's key as it was.
    std::fs::remove_file(p.path("data/corrections/office.csv")).unwrap();
    std::fs::remove_file(p.path("data/corrections/review.csv")).unwrap();
    p.ok(&[
        "run",
        FULL,
        "--until",
        "corrections",
        "-S",
        "corrections.title_column=job_title",
    ]);
    assert_eq!(key(&p), standard_key);
}

#[test]
fn codes_the_model_never_saw_get_new_output_rows() {
    let p = Project::new(600);
    // Without reference augmentation the base model knows only the codes of the records.
    p.edit(
        "config/default.toml",
        "reference_augmentation = true",
        "reference_augmentation = false",
    );
    p.ok(&["run", FULL]);
    let demo = std::fs::read_to_string(p.path("data/demo/corrections_demo.csv")).unwrap();
    p.write("data/corrections/new.csv", &demo);
    p.ok(&["run", FT]);
    let run = p.last_run();
    let ft = &stage_of(&run, "fine-tune")["metrics"];
    assert_eq!(ft["new_classes"], 4, "{ft}");
    let base: serde_json::Value = p.json("models/latest/model.json");
    let tuned: serde_json::Value = p.json("models/finetuned/model.json");
    let n = |m: &serde_json::Value| m["labels"].as_array().unwrap().len();
    assert_eq!(n(&tuned), n(&base) + 4);
    p.write(
        "jobs.csv",
        "job_title,duties_description\nroof tiler,laying roof tiles and slates\n",
    );
    let out = p.ok(&[
        "predict",
        "--input",
        "jobs.csv",
        "--model",
        "models/finetuned",
    ]);
    assert!(out.lines().nth(1).unwrap().contains(",7121,"), "{out}");
}
