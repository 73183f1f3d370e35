//! What a careless user or a damaged disk must not be able to do: outputs that overwrite
//! inputs, values that mean nothing, CSV files that swallow rows, store objects that no
//! longer match their hash.

use crate::support::{Project, outcome_of};

const P: &str = "pipelines/full.toml";

/// Runs `status` on the pipeline after one edit of `file`, expects a configuration error
/// (exit 2) containing every `expected` fragment, then undoes the edit.
fn refused(p: &Project, file: &str, from: &str, to: &str, expected: &[&str]) {
    let before = std::fs::read_to_string(p.path(file)).unwrap();
    p.edit(file, from, to);
    for cmd in ["status", "run"] {
        let (code, err) = p.fails(&[cmd, P]);
        assert_eq!(code, 2, "{to}: {err}");
        for e in expected {
            assert!(err.contains(e), "{to}: expected {e:?} in {err}");
        }
    }
    std::fs::write(p.path(file), before).unwrap();
}

#[test]
fn outputs_cannot_overwrite_what_the_project_reads() {
    let p = Project::new(300);
    let raw = std::fs::read(p.path("data/raw/historical_records.csv")).unwrap();
    let q = r#"quarantine = "data/processed/quarantine.csv""#;
    for (to, what) in [
        (
            r#"quarantine = "data/raw/historical_records.csv""#,
            "input `records` of stage `clean`",
        ),
        (r#"quarantine = "pipelines/full.toml""#, "the pipeline file"),
        (r#"quarantine = "config/default.toml""#, "the config file"),
        (r#"quarantine = "data/raw""#, "a directory that holds"),
        (
            r#"quarantine = "artifacts/store/lock""#,
            "the artifact store",
        ),
        (
            r#"quarantine = "models/latest/q.csv""#,
            "holds output `quarantine`",
        ),
        (r#"quarantine = "../q.csv""#, "outside the project root"),
        (r#"quarantine = "/tmp/q.csv""#, "outside the project root"),
        (
            r#"quarantine = "data/../../../q.csv""#,
            "outside the project root",
        ),
    ] {
        refused(&p, P, q, to, &["pipelines/full.toml:", what]);
    }
    refused(
        &p,
        P,
        r#"predictions_csv = "data/processed/predictions.csv""#,
        r#"predictions_csv = "data/demo/new_jobs.csv""#,
        &["input `records` of stage `predict`"],
    );
    refused(
        &p,
        P,
        r#"config = "../config/default.toml""#,
        "config = \"../config/default.toml\"\nstore = \"../elsewhere\"",
        &["lies outside the project root"],
    );
    assert_eq!(
        std::fs::read(p.path("data/raw/historical_records.csv")).unwrap(),
        raw
    );
    // Explicitly allowed, an output may go outside the root.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("q.csv");
    p.edit(P, q, &format!("quarantine = \"{}\"", target.display()));
    p.edit(
        P,
        r#"config = "../config/default.toml""#,
        "config = \"../config/default.toml\"\nallow_outside_root = true",
    );
    p.ok(&["run", P, "--until", "clean"]);
    assert!(target.is_file());

    // `..` resolves: the pipeline is found from a subfolder.
    std::fs::create_dir_all(p.path("a/b")).unwrap();
    let out = p
        .cmd(&["status", "../../pipelines/full.toml"])
        .current_dir(p.path("a/b"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `predict` never writes over its input.
    p.write("jobs.csv", "job_title\nchef\n");
    for output in ["jobs.csv", "./jobs.csv"] {
        let (code, err) = p.fails(&["predict", "--input", "jobs.csv", "--output", output]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("would overwrite the input"), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(p.path("jobs.csv")).unwrap(),
        "job_title\nchef\n"
    );
    // An output it would not write as asked, and an input it cannot read, are refused before
    // any model is loaded (this project has none), and nothing is written.
    for (output, says) in [
        (
            "coded.json",
            "written as CSV (`.csv`) or Parquet (`.parquet`)",
        ),
        ("coded", "written as CSV (`.csv`) or Parquet (`.parquet`)"),
        ("no/such/coded.csv", "the folder `no/such` does not exist"),
    ] {
        let (code, err) = p.fails(&["predict", "--input", "jobs.csv", "--output", output]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says), "{output}: {err}");
        assert!(!p.path(output).exists(), "{output}");
    }
    std::fs::write(p.path("jobs.xlsx"), b"PK\x03\x04\x14\x00\x06\x00binary").unwrap();
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(
            "job_title\nchef\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    std::fs::write(p.path("utf16.csv"), utf16).unwrap();
    p.write("titles.csv", "title,duties\nchef,cooking\n");
    {
        use arrow::array::ListArray;
        use arrow::datatypes::Int32Type;
        use artifacts::table::{Column, Table};
        let titles = ListArray::from_iter_primitive::<Int32Type, _, _>([Some([Some(1)])]);
        Table::new()
            .with("job_title", Column::Arrow(std::sync::Arc::new(titles)))
            .write_parquet(&p.path("lists.parquet"))
            .unwrap();
    }
    for (input, says) in [
        (
            "lists.parquet",
            "lists.parquet: column `job_title` holds lists, several values a row",
        ),
        (
            "titles.csv",
            "titles.csv: has no column `job_title` (columns: title, duties)",
        ),
        ("jobs.xlsx", "jobs.xlsx: is a spreadsheet workbook (.xlsx)"),
        (
            "utf16.csv",
            "utf16.csv: is UTF-16 text, not UTF-8: set `encoding = \"utf-16le\"` in [data]",
        ),
        ("missing.csv", "missing.csv: does not exist"),
        ("data", "data: is a folder"),
    ] {
        let (_, err) = p.fails(&["predict", "--input", input, "--output", "coded.csv"]);
        assert!(err.contains(says), "{input}: {err}");
        assert!(!err.contains("model"), "{input}: {err}");
    }
    // Named as UTF-16, a spreadsheet's "Unicode text" export passes the checks; this project
    // has no model yet, which is all the error is about.
    let (_, err) = p.fails(&["predict", "utf16.csv", "-S", "data.encoding=utf-16le"]);
    assert!(
        err.contains("`best` is neither a model directory nor a ref") && !err.contains("utf16"),
        "{err}"
    );
}

#[test]
fn values_that_mean_nothing_are_refused_naming_file_line_and_key() {
    let p = Project::new(100);
    let c = "config/default.toml";
    for (from, to, key) in [
        ("dim = 64", "dim = 100000000000", "`dim` is 100000000000"),
        ("dim = 64", "dim = \"big\"", "`dim`: invalid type"),
        (
            "confidence_threshold = 0.9",
            "confidence_threshold = nan",
            "`confidence_threshold` is nan",
        ),
        ("min_level = 2", "min_level = 7", "`min_level` is 7"),
        (
            "grades = [0.9, 0.8, 0.7, 0.5]",
            "grades = [0.5, 0.7, 0.8, 0.9]",
            "`grades`",
        ),
        (
            "review_threshold = 0.5",
            "review_threshold = 2.0",
            "`review_threshold` is 2",
        ),
        ("top_k = 3", "top_k = 0", "`top_k` is 0"),
        ("epochs = 8", "epochs = -1", "`epochs`: invalid value"),
        // Checked together with `buckets` and `dim`, but named alone, at its own line.
        ("epochs = 8", "epochs = 0", "`epochs` is 0"),
        (
            "exclude_outliers = false",
            "exclude_outliers = 3",
            "`exclude_outliers`: invalid type",
        ),
    ] {
        let line = std::fs::read_to_string(p.path(c))
            .unwrap()
            .lines()
            .position(|l| l.starts_with(from))
            .unwrap()
            + 1;
        refused(&p, c, from, to, &[&format!("default.toml:{line}:"), key]);
    }
    refused(
        &p,
        c,
        "[promote]",
        "[bogus]\nx = 1\n\n[promote]",
        &["unknown section [bogus]"],
    );
    refused(
        &p,
        P,
        r#"records = "data/raw/historical_records.csv""#,
        r#"records = "data/raw""#,
        &["a directory; this input reads one file"],
    );
    refused(
        &p,
        P,
        r#"records = "data/raw/historical_records.csv""#,
        r#"records = "data/raw/*.tsv""#,
        &["matches no file"],
    );
    p.write("pipelines/empty.toml", "");
    let (code, err) = p.fails(&["run", "pipelines/empty.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no stages"), "{err}");
}

#[test]
fn csv_inputs_lose_nothing_and_csv_outputs_run_no_formula() {
    let p = Project::new(300);
    p.ok(&["run", P]);
    let raw = p.path("data/raw/historical_records.csv");
    let good = std::fs::read_to_string(&raw).unwrap();

    // Two columns of one name: which one is meant is not guessed.
    std::fs::write(
        &raw,
        good.replacen(
            "job_title,duties_description,isco_code",
            "job_title,duties_description,isco_code,isco_code",
            1,
        ),
    )
    .unwrap();
    let (_, err) = p.fails(&["run", P]);
    assert!(
        err.contains("two columns named `isco_code` (columns 3 and 4)"),
        "{err}"
    );

    // A quote opened on line 101 and never closed would swallow the rest of the file.
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    lines[100] = format!("\"{}", lines[100]);
    std::fs::write(&raw, lines.join("\n") + "\n").unwrap();
    let (_, err) = p.fails(&["run", P]);
    assert!(err.contains("opened on line 101"), "{err}");
    p.write("jobs.csv", &lines[..150].join("\n"));
    let (_, err) = p.fails(&["predict", "--input", "jobs.csv", "--output", "o.csv"]);
    assert!(err.contains("opened on line 101"), "{err}");
    std::fs::write(&raw, &good).unwrap();
    p.ok(&["run", P]);

    // `predict` keeps every input column; its own columns give way to the input's names;
    // a cell that would run as a spreadsheet formula is neutralised.
    p.write(
        "jobs.csv",
        "id,job_title,isco_code,duties_description\n007,\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",2512,cooking\n8,chef,5120,\n",
    );
    p.ok(&["predict", "--input", "jobs.csv", "--output", "coded.csv"]);
    let coded = std::fs::read_to_string(p.path("coded.csv")).unwrap();
    let mut r = csv::Reader::from_reader(coded.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(
        &header[..6],
        [
            "row",
            "job_title",
            "duties_description",
            "id",
            "isco_code",
            "predicted_isco_code"
        ],
        "{coded}"
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!((&rows[0][3], &rows[0][4]), ("007", "2512"));
    assert_eq!(&rows[1][4], "5120");
    assert!(rows[0][1].starts_with("'="), "{coded}");
    assert_eq!(&rows[1][5], "5120", "{coded}");
    // Coded again, the coded file keeps both code columns and gets a third: no name twice.
    p.ok(&["predict", "--input", "coded.csv", "--output", "coded2.csv"]);
    let coded = std::fs::read_to_string(p.path("coded2.csv")).unwrap();
    let mut r = csv::Reader::from_reader(coded.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    let unique: std::collections::HashSet<&String> = header.iter().collect();
    assert_eq!(unique.len(), header.len(), "{header:?}");
    assert!(
        header.starts_with(&["predicted_row".to_string(), "job_title".into()])
            && header.contains(&"predicted_predicted_isco_code".to_string()),
        "{header:?}"
    );
    p.ok(&[
        "predict",
        "--input",
        "coded2.csv",
        "--output",
        "coded3.parquet",
    ]);
}

#[test]
fn a_damaged_store_repairs_itself() {
    let p = Project::new(300);
    p.ok(&["run", P]);
    let store = p.path("artifacts/store");
    let object = |stage: &str, output: &str| {
        let rec = p.json(&format!("artifacts/store/stages/{stage}.json"));
        let id = rec["outputs"][output]["id"].as_str().unwrap().to_string();
        store.join("objects").join(&id[..2]).join(&id[2..])
    };
    let writable = |f: &std::path::Path| {
        let mut perm = std::fs::metadata(f).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(f, perm).unwrap();
    };

    // A truncated object: the stage that made it runs again and the run succeeds.
    let clean = object("clean", "records");
    writable(&clean);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&clean)
        .unwrap();
    f.set_len(100).unwrap();
    drop(f);
    p.ok(&["run", P]);
    assert_eq!(outcome_of(&p.last_run(), "clean"), "executed");
    assert!(std::fs::metadata(&clean).unwrap().len() > 100);

    // Same size, other bytes, and the workspace copy deleted: restored from a good object.
    let train = object("split", "train");
    writable(&train);
    let mut bytes = std::fs::read(&train).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&train, &bytes).unwrap();
    std::fs::remove_file(p.path("data/processed/train.parquet")).unwrap();
    p.ok(&["run", P]);
    assert_eq!(outcome_of(&p.last_run(), "split"), "executed");
    // The object was written anew (verify below re-hashes it) and the workspace copy is it.
    assert_eq!(
        std::fs::read(p.path("data/processed/train.parquet")).unwrap(),
        std::fs::read(&train).unwrap()
    );
    assert_ne!(std::fs::read(&train).unwrap(), bytes);
    assert!(std::fs::read_dir(store.join("quarantine")).unwrap().count() >= 2);
    p.ok(&["verify"]);

    // An unreadable run record hides no other run; verify finds it, --repair moves it.
    let run = std::fs::read_dir(store.join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&run, "{\"broken").unwrap();
    let list = p.ok(&["runs", "list"]);
    assert!(list.lines().count() >= 2, "{list}");
    let (code, err) = p.fails(&["verify"]);
    assert_eq!(code, 1, "{err}");

    // An edited checkout of the served model: verify finds it, predict does not use it.
    let checkout = std::fs::read_dir(store.join("checkouts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| d.join("model.json").is_file())
        .expect("a model checkout");
    let model_json = checkout.join("model.json");
    writable(&model_json);
    let text = std::fs::read_to_string(&model_json).unwrap();
    std::fs::write(
        &model_json,
        text.replacen('{', "{\"title\":\"TAMPERED\",", 1),
    )
    .unwrap();
    // Checkouts are hard links to the objects: the edit damaged the object itself, which
    // is quarantined; the next run recomputes the model and promote replaces the lost best.
    let out = p.ok(&["verify", "--repair"]);
    assert!(out.contains("UNREADABLE record"), "{out}");
    assert!(out.contains("CORRUPT object"), "{out}");
    let rerun = p.ok(&["run", P]);
    let v = p.run(&["verify"]);
    assert!(
        v.status.success(),
        "{}\n{rerun}",
        String::from_utf8_lossy(&v.stdout)
    );
    p.write("jobs.csv", "job_title\nchef\n");
    p.ok(&["predict", "--input", "jobs.csv", "--output", "o.csv"]);
    let served = std::fs::read_to_string(p.path("models/best/model.json")).unwrap();
    assert!(!served.contains("TAMPERED"));
}

#[test]
fn outputs_honour_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new(300);
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "umask 022 && exec \"$0\" \"$@\"",
            crate::support::bin(),
            "run",
            P,
        ])
        .current_dir(p.path(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "models/latest/model.json",
        "data/processed/predictions.csv",
        "data/processed/clean.parquet",
    ] {
        let mode = std::fs::metadata(p.path(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o022, 0, "{f}: mode {mode:o} under umask 022");
    }
}
