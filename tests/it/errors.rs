//! Strict validation: every error names the file and the line or key.

use crate::support::Project;

fn pipeline_error(p: &Project, body: &str) -> String {
    p.write("pipelines/bad.toml", body);
    let (code, err) = p.fails(&["run", "pipelines/bad.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.toml"), "{err}");
    err
}

#[test]
fn unknown_key_in_pipeline() {
    let p = Project::new(50);
    let err = pipeline_error(
        &p,
        "[[stage]]\nid = \"clean\"\nkind = \"clean\"\ninputz = { records = \"data/raw/historical_records.csv\" }\n",
    );
    assert!(err.contains("unknown field `inputz`"), "{err}");
    assert!(err.contains("line 4"), "{err}");
}

#[test]
fn unknown_param_names_the_key() {
    let p = Project::new(50);
    let err = pipeline_error(
        &p,
        "[[stage]]\nid = \"split\"\nkind = \"split\"\ninputs = { records = \"data/raw/historical_records.csv\" }\nparams = { test_fracton = 0.2 }\n",
    );
    assert!(err.contains("bad.toml:5"), "{err}");
    assert!(err.contains("unknown field `test_fracton`"), "{err}");
    assert!(err.contains("test_fraction"), "{err}");
}

#[test]
fn unknown_key_in_config_names_file_section_and_line() {
    let p = Project::new(50);
    p.edit("config/default.toml", "seed = 42", "seed = 42\nsed = 1");
    let (code, err) = p.fails(&["run", "pipelines/full.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("default.toml:"), "{err}");
    assert!(
        err.contains("unknown key `sed` in [data] (did you mean `seed`?)"),
        "{err}"
    );
}

#[test]
fn unknown_kind_missing_input_duplicate_id() {
    let p = Project::new(50);
    let err = pipeline_error(&p, "[[stage]]\nid = \"x\"\nkind = \"trian\"\n");
    assert!(
        err.contains("bad.toml:3") && err.contains("unknown stage kind `trian`"),
        "{err}"
    );
    let err = pipeline_error(
        &p,
        "[[stage]]\nid = \"clean\"\nkind = \"clean\"\ninputs = { records = \"data/raw/nope.csv\" }\n",
    );
    assert!(
        err.contains("bad.toml:4")
            && err.contains("data/raw/nope.csv")
            && err.contains("does not exist"),
        "{err}"
    );
    let err = pipeline_error(
        &p,
        "[[stage]]\nid = \"clean\"\nkind = \"clean\"\ninputs = { records = \"data/raw/historical_records.csv\" }\n\n[[stage]]\nid = \"clean\"\nkind = \"split\"\ninputs = { records = \"data/raw/historical_records.csv\" }\n",
    );
    assert!(
        err.contains("bad.toml:7")
            && err.contains("duplicate stage id `clean`")
            && err.contains("bad.toml:2"),
        "{err}"
    );
    let err = pipeline_error(&p, "[[stage]]\nid = \"clean\"\nkind = \"clean\"\n");
    assert!(err.contains("needs the input `records`"), "{err}");
    let err = pipeline_error(
        &p,
        "[[stage]]\nid = \"s\"\nkind = \"split\"\ninputs = { records = \"clean.recrods\" }\n[[stage]]\nid = \"clean\"\nkind = \"clean\"\ninputs = { records = \"data/raw/historical_records.csv\" }\n",
    );
    assert!(err.contains("has no output `recrods`"), "{err}");
}

#[test]
fn cycle_is_named() {
    let p = Project::new(50);
    let err = pipeline_error(
        &p,
        "[[stage]]\nid = \"a\"\nkind = \"split\"\ninputs = { records = \"b.train\" }\n[[stage]]\nid = \"b\"\nkind = \"split\"\ninputs = { records = \"a.train\" }\n",
    );
    assert!(
        err.contains("the stages form a cycle: a -> b -> a"),
        "{err}"
    );
}

#[test]
fn a_demo_of_no_records_is_refused_and_writes_nothing() {
    let p = Project::new(50);
    let (code, err) = p.fails(&["demo", "--dir", "empty", "--rows", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'--rows <ROWS>'"), "{err}");
    assert!(!p.path("empty").exists());
}

#[test]
fn a_pipeline_path_that_is_not_a_file_says_what_to_give() {
    let p = Project::new(50);
    for (given, says) in [
        ("full.toml", "did you mean `pipelines/full.toml`?"),
        ("pipelines/ful.toml", "did you mean `pipelines/full.toml`?"),
        ("pipelines", "it is a folder: name one of its files, "),
    ] {
        for cmd in ["run", "status"] {
            let (code, err) = p.fails(&[cmd, given]);
            assert_eq!(code, 2, "{err}");
            assert!(
                err.contains(&format!("no pipeline file at `{given}`; {says}")),
                "{cmd} {given}: {err}"
            );
        }
    }
}

#[test]
fn bad_rows_are_quarantined_with_row_and_reason() {
    let p = Project::new(50);
    p.append(
        "data/raw/historical_records.csv",
        "nurse,caring,22x1\ncook,soups, sauces,5120\n\"unterminated,quote,1234\n",
    );
    let out = p.ok(&["run", "pipelines/full.toml"]);
    // So few records leave a handful of validation rows: no calibration is fitted on them,
    // and the report says so.
    let run = p.last_run();
    let m = &crate::support::stage_of(&run, "train")["metrics"];
    let rows = m["calibration_rows"].as_u64().unwrap();
    assert!(rows < 30 && m["temperature"] == 1.0, "{m}");
    assert!(
        out.contains(&format!(
            "not calibrated: {rows} validation rows, fewer than the 30"
        )),
        "{out}"
    );
    let q = std::fs::read_to_string(p.path("data/processed/quarantine.csv")).unwrap();
    assert!(q.starts_with("row,line,column,reason,"), "{q}");
    assert!(
        q.contains("isco_code,`22x1` is not a 4-digit ISCO-08 unit group code"),
        "{q}"
    );
    assert!(
        q.contains(
            ",,the row has 4 fields where the header has 3; quote a value that holds a comma,"
        ),
        "{q}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.path("data/processed/clean_report.json")).unwrap(),
    )
    .unwrap();
    let c = &report["counts"];
    assert_eq!(
        c["rows_in"].as_u64().unwrap(),
        c["kept"].as_u64().unwrap() + c["quarantined"].as_u64().unwrap()
    );
}

#[test]
fn records_saved_in_a_legacy_code_page_are_read_in_the_encoding_data_names() {
    // A spreadsheet's plain "CSV" export on Windows is in windows-1252, not UTF-8.
    let p = Project::new(50);
    let records = "data/raw/historical_records.csv";
    let text = std::fs::read_to_string(p.path(records)).unwrap()
        + "pâtissière,bakes pastries; decorates cakes,7512\nchef cuisinière,cooks,51x0\n";
    let line = text.lines().count();
    let legacy: Vec<u8> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 character"))
        .collect();
    std::fs::write(p.path(records), legacy).unwrap();
    let quarantine = || std::fs::read_to_string(p.path("data/processed/quarantine.csv")).unwrap();
    let kept = || {
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(p.path("data/processed/clean_report.json")).unwrap(),
        )
        .unwrap();
        report["counts"]["kept"].as_u64().unwrap()
    };
    // Read as UTF-8, both rows are refused for their bytes, and the reason says what to set.
    p.ok(&["run", "pipelines/full.toml", "--until", "clean"]);
    let q = quarantine();
    assert_eq!(
        q.matches("is not valid UTF-8; re-save the file as UTF-8, or set `encoding` in [data] to the one it was saved in").count(),
        2,
        "{q}"
    );
    let as_utf8 = kept();
    // Read in its encoding, the first row is kept and the second refused for its code alone,
    // on its own line and with its text as written.
    p.ok(&[
        "run",
        "pipelines/full.toml",
        "--until",
        "clean",
        "-S",
        "data.encoding=windows-1252",
    ]);
    assert_eq!(kept(), as_utf8 + 1);
    let q = quarantine();
    assert!(
        q.contains(&format!(
            "{},{line},isco_code,`51x0` is not a 4-digit ISCO-08 unit group code,chef cuisinière,cooks,51x0",
            line - 2
        )),
        "{q}"
    );
    assert!(!q.contains("UTF-8"), "{q}");
    // UTF-8 named as such is the default: it changes no stage's key.
    std::fs::write(p.path(records), text).unwrap();
    p.ok(&["run", "pipelines/full.toml"]);
    let out = p.ok(&["run", "pipelines/full.toml", "-S", "data.encoding=utf-8"]);
    assert!(out.contains(": 0 executed"), "{out}");
}

#[test]
fn rows_of_a_crlf_file_are_named_by_their_own_lines() {
    // A spreadsheet on Windows saves its CSV files with CRLF line ends, an old one on a Mac
    // with CR alone.
    let p = Project::new(50);
    let records = "data/raw/historical_records.csv";
    let text = std::fs::read_to_string(p.path(records))
        .unwrap()
        .replace("\r\n", "\n")
        + "nurse,caring,22x1\n";
    let line = text.lines().count();
    for end in ["\r\n", "\r"] {
        p.write(records, &text.replace('\n', end));
        p.ok(&["run", "pipelines/full.toml", "--until", "clean"]);
        let q = std::fs::read_to_string(p.path("data/processed/quarantine.csv")).unwrap();
        let expected = format!(
            "\n{},{line},isco_code,`22x1` is not a 4-digit ISCO-08 unit group code,nurse,",
            line - 2
        );
        assert!(q.contains(&expected), "{end:?}: {expected:?} not in {q}");
    }
}

#[test]
fn frozen_unknown_stage_and_glob_over_an_output_are_errors() {
    let p = Project::new(50);
    p.write(
        "pipelines/bad.toml",
        "[pipeline]\nextends = \"full.toml\"\nfrozen = [\"trian\"]\n",
    );
    let (code, err) = p.fails(&["run", "pipelines/bad.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.toml:3") && err.contains("`frozen` names stage `trian`"),
        "{err}"
    );
    let err = pipeline_error(
        &p,
        "[[stage]]\nid = \"clean\"\nkind = \"clean\"\ninputs = { records = \"data/raw/historical_records.csv\" }\n\n[[stage]]\nid = \"corrections\"\nkind = \"corrections\"\ninputs = { files = \"data/processed/clean/*.csv\" }\n",
    );
    assert!(
        err.contains("`data/processed/clean/*.csv` of stage `corrections` matches `data/processed/clean/quarantine.csv`, which stage `clean` writes"),
        "{err}"
    );
}

#[test]
fn bad_field_weights_are_refused_before_anything_runs() {
    let p = Project::new(50);
    let err = pipeline_error(
        &p,
        "[[stage]]\nid = \"train\"\nkind = \"train\"\ninputs = { train = \"data/raw/historical_records.csv\" }\nparams = { field_weights = [1.0, -1.0] }\n",
    );
    assert!(
        err.contains("field_weights") && err.contains("three non-negative shares"),
        "{err}"
    );
    let runs = std::fs::read_dir(p.path("artifacts/store/runs")).map_or(0, |d| d.count());
    assert_eq!(runs, 0, "nothing ran");
}

#[test]
fn a_precision_this_build_cannot_run_is_a_configuration_error_naming_the_key() {
    let p = Project::new(300);
    // bf16 embeds on the default build where the CPU has AVX-512 BF16 (the kernel), and
    // trains only on libtorch.
    let kernel = classifier::bf16::available();
    let mut cases = vec![
        ("encoder_training.precision=bf16", "does not train"),
        ("encoder_training.precision=fp16", "loss scaling"),
        ("encoder_training.precision=int8", "not a precision"),
        ("model.precision=fp16", "--features tch"),
    ];
    if !kernel {
        cases.push(("model.precision=bf16", "AVX-512 BF16"));
    }
    for (set, says) in cases {
        let (code, err) = p.fails(&["run", "pipelines/ensemble-trained.toml", "-S", set]);
        assert_eq!(code, 2, "{set}: {err}");
        assert!(
            err.contains("precision") && err.contains(says),
            "{set}: {err}"
        );
    }
    let (code, err) = p.fails(&[
        "run",
        "pipelines/full.toml",
        "-S",
        "inference.precision=fp16",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("precision") && err.contains("fp32"), "{err}");
    let runs = std::fs::read_dir(p.path("artifacts/store/runs")).map_or(0, |d| d.count());
    assert_eq!(runs, 0, "nothing ran");
}

#[test]
fn a_device_this_build_does_not_have_is_a_configuration_error_naming_the_key() {
    let p = Project::new(300);
    let (code, err) = p.fails(&[
        "run",
        "pipelines/ensemble.toml",
        "-S",
        "model.device=cuda:0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("device") && err.contains("--features tch"),
        "{err}"
    );
    let (code, err) = p.fails(&[
        "run",
        "pipelines/ensemble-trained.toml",
        "-S",
        "encoder_training.device=tpu",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("device") && err.contains("cuda:N"), "{err}");
    // Coding reads [inference] device, whatever the model.
    let (code, err) = p.fails(&["run", "pipelines/full.toml", "-S", "inference.device=mps"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("device") && err.contains("--features tch"),
        "{err}"
    );
    p.write("gpu.toml", "[inference]\ndevice = \"cuda:1\"\n");
    let (code, err) = p.fails(&[
        "predict",
        "--input",
        "data/demo/new_jobs.csv",
        "--config",
        "gpu.toml",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gpu.toml") && err.contains("device"), "{err}");
    // An ngram model does not read the [model] key: it does not care.
    p.ok(&[
        "run",
        "pipelines/full.toml",
        "-S",
        "model.device=cuda:0",
        "--dry-run",
    ]);
}

#[test]
fn commands_that_read_the_store_name_what_is_missing_before_any_run() {
    let p = Project::new(50);
    for args in [
        &["runs", "list"][..],
        &["verify"],
        &["gc", "--keep-runs", "1"],
    ] {
        let (code, err) = p.fails(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("there is no store at artifacts/store"),
            "{err}"
        );
    }
    // Before any run there is no store: predict says so and does not create one.
    let (code, err) = p.fails(&["predict", "--input", "data/demo/new_jobs.csv"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no store at artifacts/store") && err.contains("ref `best`"),
        "{err}"
    );
    assert!(!p.path("artifacts/store").exists());
    // A directory that is not a model is named as such, not looked up as a ref.
    let (code, err) = p.fails(&[
        "predict",
        "--input",
        "data/demo/new_jobs.csv",
        "--model",
        "data",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`data` is a directory without a model.json"),
        "{err}"
    );
}

#[test]
fn a_records_file_without_a_named_column_names_the_param_that_renames_it() {
    let p = Project::new(50);
    p.edit(
        "data/raw/historical_records.csv",
        "job_title,duties_description,isco_code",
        "job_title,duties_description,occupation",
    );
    let (_, err) = p.fails(&["run", "pipelines/full.toml"]);
    assert!(
        err.contains("historical_records.csv: has no column `isco_code` (columns: job_title, duties_description, occupation)")
            && err.contains("set the clean stage's `code_column` param"),
        "{err}"
    );
    // Said once on a terminal's standard error: the log does not repeat what `run` prints.
    assert_eq!(err.matches("has no column `isco_code`").count(), 1, "{err}");
    // Setting it is enough.
    p.ok(&[
        "run",
        "pipelines/full.toml",
        "-S",
        "data.code_column=occupation",
        "--until",
        "clean",
    ]);
}

/// Titles coded elsewhere calibrate an ensemble only: given to an `ngram` model's `train`
/// they are still checked, and the run says they are not used.
#[test]
fn titles_for_a_model_that_cannot_use_them_are_named() {
    let p = Project::new(300);
    p.write(
        "data/reference/titles.csv",
        "isco_code,job_title\n5120,line cook\n",
    );
    p.edit(
        "pipelines/full.toml",
        "inputs = { train = \"split.train\", validation = \"split.validation\", reference = \"data/reference/isco08_demo.csv\" }",
        "inputs = { train = \"split.train\", validation = \"split.validation\", reference = \"data/reference/isco08_demo.csv\", titles = \"data/reference/titles.csv\" }",
    );
    let out = p.run(&["run", "pipelines/full.toml"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the `titles` input is used by an ensemble only; a model of kind `ngram` is not calibrated on"),
        "{err}"
    );
    p.write(
        "data/reference/titles.csv",
        "isco_code,job_title\n512,line cook\n",
    );
    let (code, err) = p.fails(&["run", "pipelines/full.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("titles.csv: row 2 column `isco_code`: `512` is not a 4-digit"),
        "{err}"
    );
}
