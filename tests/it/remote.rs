//! Beyond one machine: stores sharing a remote (a local S3-compatible server the tests start
//! themselves), sharded prediction, and the SLURM array script in `deploy/`.
//!
//! The S3 tests need `moto[server]` (Python registry): without it they say so and pass,
//! unless `ISCO_DAG_REQUIRE_S3=1` (set by `.ci/run`), where its absence is a failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Project, outcome_of, outcomes};

/// A moto S3 server on a free port, stopped when dropped.
pub struct S3 {
    child: Child,
    pub port: u16,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3 {
    pub fn start() -> Option<S3> {
        let has = Command::new("python3")
            .args(["-c", "import moto.server, flask"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has {
            assert!(
                std::env::var("ISCO_DAG_REQUIRE_S3").is_err(),
                "moto is not installed; python3 -m pip install 'moto[server]'"
            );
            eprintln!("S3 test skipped: python3 -m pip install 'moto[server]' to run it");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let s3 = S3 { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while s3.request("GET", "/", b"").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(s3)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain HTTP/1.1 request (moto takes unsigned ones): status and body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, vec![]);
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
            return (0, vec![]);
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| out[i + 4..].to_vec())
            .unwrap_or_default();
        (status, body)
    }

    /// Creates a bucket.
    pub fn bucket(&self, name: &str) {
        let (status, body) = self.request("PUT", &format!("/{name}"), b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Replaces an object's content with a signed request (moto refuses unsigned writes over
    /// objects that signed requests made), as a faulty disk or a careless hand would.
    pub fn overwrite(&self, bucket: &str, key: &str, content: &str) {
        let script = format!(
            "import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing').put_object(Bucket='{bucket}', Key='{key}', Body=b'{content}')",
            self.endpoint()
        );
        let status = Command::new("python3")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(status.success(), "could not overwrite {key}");
    }

    /// The keys under a prefix of a bucket.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self.request(
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}&max-keys=10000"),
            b"",
        );
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// Credentials and endpoint for a command.
    pub fn env(&self, c: &mut Command) {
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("ISCO_DAG_REMOTE");
    }
}

/// A demo project whose config names the remote `s3://<bucket>/team` on `s3`.
fn project(s3: &S3, bucket: &str, rows: usize) -> Project {
    let p = Project::new(rows);
    p.append(
        "config/default.toml",
        &format!(
            "\n[remote]\nurl = \"s3://{bucket}/team\"\nendpoint = \"{}\"\ntransfers = 2\n",
            s3.endpoint()
        ),
    );
    p
}

fn run(p: &Project, s3: &S3, args: &[&str]) -> Output {
    let mut c = p.cmd(args);
    s3.env(&mut c);
    c.output().unwrap()
}

fn ok(p: &Project, s3: &S3, args: &[&str]) -> String {
    crate::support::succeeded(run(p, s3, args), args)
}

fn fails(p: &Project, s3: &S3, args: &[&str]) -> String {
    let out = run(p, s3, args);
    assert!(
        !out.status.success(),
        "isco-dag {args:?} unexpectedly succeeded"
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn best(p: &Project) -> String {
    p.json("artifacts/store/refs/best.json")["target"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(dir.join("artifacts/store/objects")) else {
        return out;
    };
    for s in shards.flatten() {
        for f in std::fs::read_dir(s.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out
}

#[test]
fn two_stores_sharing_a_remote_skip_each_others_work() {
    let Some(s3) = S3::start() else { return };
    s3.bucket("shared");
    let a = project(&s3, "shared", 600);
    ok(&a, &s3, &["run", "pipelines/full.toml", "--remote"]);
    assert!(outcomes(&a.last_run()).iter().all(|(_, o)| o == "executed"));
    assert!(!s3.keys("shared", "team/cache/").is_empty());
    assert!(!s3.keys("shared", "team/refs/best.json").is_empty());

    // Another machine: the same project, an empty store.
    let b = project(&s3, "shared", 600);
    let out = ok(&b, &s3, &["run", "pipelines/full.toml", "--remote"]);
    let run = b.last_run();
    assert!(
        outcomes(&run).iter().all(|(_, o)| o == "restored"),
        "{out}\n{run}"
    );
    assert!(out.contains("restored from the remote"), "{out}");
    assert_eq!(
        std::fs::read(a.path("data/processed/predictions.csv")).unwrap(),
        std::fs::read(b.path("data/processed/predictions.csv")).unwrap()
    );
    assert_eq!(best(&a), best(&b));
    // What B computes, A restores: a changed param runs on B only once.
    b.edit(
        "config/default.toml",
        "test_fraction = 0.15",
        "test_fraction = 0.2",
    );
    a.edit(
        "config/default.toml",
        "test_fraction = 0.15",
        "test_fraction = 0.2",
    );
    ok(&b, &s3, &["run", "pipelines/full.toml", "--remote"]);
    assert_eq!(outcome_of(&b.last_run(), "split"), "executed");
    ok(&a, &s3, &["run", "pipelines/full.toml", "--remote"]);
    let run = a.last_run();
    for s in ["split", "train", "evaluate", "predict"] {
        assert_eq!(outcome_of(&run, s), "restored", "{s}: {run}");
    }
    // Runs of both machines are on the remote; a pull brings B's to A.
    let out = ok(&a, &s3, &["pull"]);
    assert!(out.contains("pulled from s3://shared/team"), "{out}");
    let runs = ok(&a, &s3, &["runs", "list"]);
    assert!(runs.lines().count() >= 4, "{runs}");
    // A dry run says what the remote would restore, and changes nothing.
    let c = project(&s3, "shared", 600);
    let out = ok(
        &c,
        &s3,
        &["run", "pipelines/full.toml", "--remote", "--dry-run"],
    );
    assert!(out.contains("would restore from the remote"), "{out}");
    assert!(objects(c.path("").as_path()).is_empty());
    // `evaluate --remote` scores the team's promoted model on a machine that has none.
    let eval = [
        "evaluate",
        "data/demo/new_occupations_eval.csv",
        "--format",
        "json",
    ];
    fails(&c, &s3, &eval);
    let remote = ok(&c, &s3, &[&eval[..], &["--remote"]].concat());
    assert_eq!(best(&c), best(&b));
    assert_eq!(remote, ok(&b, &s3, &eval));
}

#[test]
fn a_killed_push_leaves_nothing_half_visible_and_a_damaged_object_is_refused() {
    let Some(s3) = S3::start() else { return };
    s3.bucket("crash");
    let a = project(&s3, "crash", 600);
    // Full-size hash tables: the model is one object large enough for a multipart upload.
    a.edit("config/default.toml", "buckets = 16384", "buckets = 262144");
    a.ok(&["run", "pipelines/full.toml"]);
    let big = objects(a.path("").as_path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .max()
        .unwrap();
    assert!(big > 16 << 20, "largest object {big} bytes");
    for abort_after in [1, 3, 6] {
        let mut c = a.cmd(&["push"]);
        s3.env(&mut c);
        c.env("ISCO_DAG_REMOTE_ABORT_AFTER", abort_after.to_string());
        let out = c.output().unwrap();
        assert!(!out.status.success(), "the push was to be killed");
        // Whatever the remote shows is whole: a fresh store pulls every entry it lists,
        // each object checked against its hash on the way in.
        let b = project(&s3, "crash", 600);
        ok(&b, &s3, &["pull"]);
        for entry in s3.keys("crash", "team/cache/") {
            let key = entry.rsplit('/').next().unwrap();
            assert!(
                b.path(&format!("artifacts/store/cache/{key}")).is_file(),
                "{key}"
            );
        }
        b.ok(&["verify"]);
    }
    // A complete push, then a second machine restores everything.
    ok(&a, &s3, &["push"]);
    let b = project(&s3, "crash", 600);
    b.edit("config/default.toml", "buckets = 16384", "buckets = 262144");
    ok(&b, &s3, &["run", "pipelines/full.toml", "--remote"]);
    assert!(outcomes(&b.last_run()).iter().all(|(_, o)| o == "restored"));

    // Damage one object on the remote: it is refused, by pull and by run --remote.
    let victim = s3
        .keys("crash", "team/objects/")
        .into_iter()
        .next()
        .unwrap();
    s3.overwrite("crash", &victim, "not what it was");
    let id: String = victim.trim_start_matches("team/objects/").replace('/', "");
    let c = project(&s3, "crash", 600);
    c.edit("config/default.toml", "buckets = 16384", "buckets = 262144");
    let err = fails(&c, &s3, &["pull"]);
    assert!(
        err.contains("is damaged") && err.contains(&id[2..]),
        "{err}"
    );
    assert!(
        objects(c.path("").as_path())
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(&id[2..])),
        "the damaged object entered the store"
    );
    let d = project(&s3, "crash", 600);
    d.edit("config/default.toml", "buckets = 16384", "buckets = 262144");
    let out = run(&d, &s3, &["run", "pipelines/full.toml", "--remote"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("is damaged"),
        "{text}"
    );
    d.ok(&["verify"]);
}

#[test]
fn promotions_on_two_machines_are_never_lost() {
    let Some(s3) = S3::start() else { return };
    s3.bucket("refs");
    let a = project(&s3, "refs", 600);
    ok(&a, &s3, &["run", "pipelines/full.toml", "--remote"]);
    let a_best = best(&a);
    // Another machine promotes its own model without taking A's first.
    let c = project(&s3, "refs", 700);
    c.ok(&["run", "pipelines/full.toml"]);
    let c_best = best(&c);
    assert_ne!(a_best, c_best);
    let err = fails(&c, &s3, &["push"]);
    assert!(
        err.contains("moved on the remote") && err.contains(&a_best) && err.contains(&c_best),
        "{err}"
    );
    // Nothing was overwritten: a third store takes A's.
    let b = project(&s3, "refs", 600);
    ok(&b, &s3, &["pull"]);
    assert_eq!(best(&b), a_best);
    // C chooses its own; A, which did not move since, takes it on pull.
    ok(&c, &s3, &["push", "--ours"]);
    let out = ok(&a, &s3, &["pull"]);
    assert!(out.contains("taken from the remote"), "{out}");
    assert_eq!(best(&a), c_best);
    // A's `models/best` still holds its own model until a run puts the team's there.
    let st = a.ok(&["status", "pipelines/full.toml"]);
    assert!(
        st.contains("[FRESH] promote: `models/best` holds another version of the output"),
        "{st}"
    );
    let out = a.ok(&["run", "pipelines/full.toml"]);
    assert!(
        out.contains("0 executed") && out.contains("put `models/best` back"),
        "{out}"
    );
    assert_eq!(
        a.ok(&["lineage", "models/best"]).lines().next(),
        a.ok(&["lineage", "best"]).lines().next()
    );
    // B moved nothing either; a conflicting local move there is kept unless --theirs.
    b.edit(
        "config/default.toml",
        "min_improvement = 0.0",
        "min_improvement = -1.0",
    );
    b.ok(&["run", "pipelines/full.toml", "-S", "data.seed=7"]);
    assert_ne!(best(&b), a_best);
    let err = fails(&b, &s3, &["pull"]);
    assert!(err.contains("--theirs"), "{err}");
}

/// The demo's new jobs as a Parquet file with typed columns of its own beside the texts: an
/// integer `row` with gaps (nulls; a name `predict` gives its own first column too), a float
/// `weight` and a date `surveyed`.
fn typed_parquet_of(csv_path: &Path) -> PathBuf {
    use arrow::array::{Date32Array, Float64Array, Int64Array, ListArray, StructArray};
    use arrow::datatypes::{DataType, Field, Int32Type};
    use artifacts::table::{Column, Table};
    use std::sync::Arc;
    let mut r = csv::Reader::from_path(csv_path).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let text = |c: usize| Column::Str(rows.iter().map(|row| row[c].to_string()).collect());
    let n = rows.len() as i64;
    let t = Table::new()
        .with(
            "row",
            Column::Arrow(Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (i % 5 != 1).then_some(1000 + i)),
            ))),
        )
        .with("job_title", text(0))
        .with("duties_description", text(1))
        .with(
            "weight",
            Column::Arrow(Arc::new(Float64Array::from_iter(
                (0..n).map(|i| (i % 7 != 2).then_some(i as f64 / 4.0)),
            ))),
        )
        .with(
            "surveyed",
            Column::Arrow(Arc::new(Date32Array::from_iter_values(
                (0..n).map(|i| 20_000 + i as i32),
            ))),
        )
        // Columns of several values a row pass through as they are, too.
        .with(
            "tags",
            Column::Arrow(Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                (0..n as i32).map(|i| (i % 4 != 3).then(|| vec![Some(i), None])),
            ))),
        )
        .with(
            "site",
            Column::Arrow(Arc::new(StructArray::from(vec![(
                Arc::new(Field::new("floor", DataType::Int64, true)),
                Arc::new(Int64Array::from_iter_values(0..n)) as arrow::array::ArrayRef,
            )]))),
        );
    let out = csv_path.with_file_name("typed.parquet");
    t.write_parquet(&out).unwrap();
    out
}

/// The Parquet file coded from [`typed_parquet_of`]'s input holds the input's columns with
/// their types and their nulls.
fn input_columns_keep_their_types(coded: &Path) {
    use arrow::array::{Array, Float64Array, Int64Array};
    use arrow::datatypes::DataType;
    let t = artifacts::table::Table::read_parquet_as_arrow(coded).unwrap();
    let col = |name: &str| match t.column(name) {
        Some(artifacts::table::Column::Arrow(a)) => a.clone(),
        other => panic!("{name}: {other:?}"),
    };
    // The input's own `row` column; the row numbers `predict` adds are `predicted_row`.
    let id = col("row");
    assert_eq!(id.data_type(), &DataType::Int64);
    let id = id.as_any().downcast_ref::<Int64Array>().unwrap();
    assert!(id.is_null(1) && id.value(0) == 1000 && id.value(2) == 1002);
    let weight = col("weight");
    let weight = weight.as_any().downcast_ref::<Float64Array>().unwrap();
    assert!(weight.is_null(2) && weight.value(3) == 0.75);
    assert_eq!(col("surveyed").data_type(), &DataType::Date32);
    assert!(matches!(col("tags").data_type(), DataType::List(_)));
    assert!(col("tags").is_null(3));
    assert!(matches!(col("site").data_type(), DataType::Struct(_)));
    assert_eq!(col("isco_code").data_type(), &DataType::Utf8);
    let names: Vec<&str> = t.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..6],
        [
            "predicted_row",
            "job_title",
            "duties_description",
            "row",
            "weight",
            "surveyed"
        ][..]
    );
}

/// A file of more rows than the model codes at a time (`classifier::predict::PREDICT_CHUNK`)
/// is coded in chunks; every row comes out as it does from shards small enough to be coded
/// in one, an unusable row in a later chunk included.
#[test]
fn a_file_longer_than_a_chunk_codes_each_row_as_a_shard_does() {
    let p = Project::new(600);
    p.ok(&["run", "pipelines/full.toml"]);
    let mut r = csv::Reader::from_path(p.path("data/demo/new_jobs.csv")).unwrap();
    let jobs: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let n = 2 * classifier::predict::PREDICT_CHUNK + 500;
    let empty = classifier::predict::PREDICT_CHUNK + 1_000;
    let mut w = csv::Writer::from_path(p.path("big.csv")).unwrap();
    w.write_record(["job_title", "duties_description", "id"])
        .unwrap();
    for i in 0..n {
        let job = &jobs[i % jobs.len()];
        let (title, duties) = if i == empty {
            ("", "")
        } else {
            (&job[0], &job[1])
        };
        w.write_record([title, duties, &format!("id-{i}")]).unwrap();
    }
    w.flush().unwrap();
    p.ok(&["predict", "--input", "big.csv", "--output", "one.csv"]);
    for i in 0..3 {
        p.ok(&[
            "predict",
            "--input",
            "big.csv",
            "--shard",
            &format!("{i}/3"),
            "--output",
            &format!("part-{i}.csv"),
        ]);
    }
    p.ok(&[
        "predict",
        "merge",
        "--output",
        "merged.csv",
        "part-0.csv",
        "part-1.csv",
        "part-2.csv",
    ]);
    let one = std::fs::read(p.path("one.csv")).unwrap();
    assert_eq!(one, std::fs::read(p.path("merged.csv")).unwrap());
    let mut r = csv::Reader::from_reader(&one[..]);
    let header = r.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), n);
    assert_eq!(&rows[n - 1][col("id")], format!("id-{}", n - 1));
    assert_eq!(&rows[empty][col("isco_code")], "");
    assert_eq!(&rows[empty][col("confidence")], "");
    assert!(!rows[empty][col("note")].is_empty());
    // The same job in the first and the last chunk is coded alike.
    let same = n - 1 - (n - 1) % jobs.len();
    for c in ["isco_code", "confidence", "alt_2_code"] {
        assert_eq!(rows[0][col(c)], rows[same][col(c)], "{c}");
    }
}

#[test]
fn shards_merge_into_the_single_process_output() {
    let p = Project::new(600);
    p.ok(&["run", "pipelines/full.toml"]);
    let typed = typed_parquet_of(&p.path("data/demo/new_jobs.csv"));
    let typed = typed.to_str().unwrap();
    for (input, ext) in [
        ("data/demo/new_jobs.csv", "csv"),
        ("data/demo/new_jobs.csv", "parquet"),
        (typed, "parquet"),
        (typed, "csv"),
    ] {
        let one = format!("one.{ext}");
        p.ok(&["predict", "--input", input, "--output", &one]);
        let shards: Vec<String> = (0..3).map(|i| format!("part-{i}.{ext}")).collect();
        // The shards run at once, as separate processes.
        let children: Vec<_> = shards
            .iter()
            .enumerate()
            .map(|(i, out)| {
                p.cmd(&[
                    "predict",
                    "--input",
                    input,
                    "--shard",
                    &format!("{i}/3"),
                    "--output",
                    out,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let merged = format!("merged.{ext}");
        let mut args = vec!["predict", "merge", "--output", &merged];
        args.extend(shards.iter().rev().map(String::as_str));
        p.ok(&args);
        assert_eq!(
            std::fs::read(p.path(&one)).unwrap(),
            std::fs::read(p.path(&merged)).unwrap(),
            "{input} to {ext}"
        );
        if input == typed && ext == "parquet" {
            input_columns_keep_their_types(&p.path(&one));
            // As CSV, a null is an empty cell and a date its ISO text.
            p.ok(&["predict", "--input", input, "--output", "typed.csv"]);
            let mut r = csv::Reader::from_path(p.path("typed.csv")).unwrap();
            let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
            assert_eq!(
                rows[0].iter().skip(3).take(3).collect::<Vec<_>>(),
                ["1000", "0.0", "2024-10-04"]
            );
            assert_eq!(
                rows[1].iter().skip(3).take(3).collect::<Vec<_>>(),
                ["", "0.25", "2024-10-05"]
            );
            assert_eq!(
                rows[2].iter().skip(3).take(3).collect::<Vec<_>>(),
                ["1002", "", "2024-10-06"]
            );
            // A list or struct as Arrow writes it, a null list as an empty cell.
            assert_eq!(
                rows[1].iter().skip(6).take(2).collect::<Vec<_>>(),
                ["[1, ]", "{floor: 1}"]
            );
            assert_eq!(&rows[3][6], "");
        }
        // Each shard coded its share only, and together they coded every row once.
        let sizes: Vec<u64> = (0..3)
            .map(|i| {
                p.json(&format!("part-{i}.{ext}.shard.json"))["rows"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        let all = String::from_utf8(
            p.run(&[
                "predict",
                "--input",
                "data/demo/new_jobs.csv",
                "--output",
                "x.csv",
            ])
            .stderr,
        )
        .unwrap();
        let total: u64 = all
            .split("coded ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(sizes.iter().sum::<u64>(), total, "{sizes:?}");
        assert!(
            sizes.iter().all(|&n| n.abs_diff(total / 3) <= 1),
            "{sizes:?}"
        );
    }
    let (code, err) = p.fails(&[
        "predict",
        "merge",
        "--output",
        "m.csv",
        "part-0.csv",
        "part-2.csv",
    ]);
    assert!(
        err.contains("1/3") && err.contains("missing"),
        "{code} {err}"
    );
    let (code, err) = p.fails(&[
        "predict",
        "--input",
        "data/demo/new_jobs.csv",
        "--shard",
        "3/3",
        "--output",
        "x.csv",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("INDEX/COUNT"), "{err}");
}

/// Whether a SLURM controller answers here (`.ci/slurm-up` starts one).
fn slurm_up() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !up {
        assert!(
            std::env::var("ISCO_DAG_REQUIRE_SLURM").is_err(),
            "SLURM is not running; .ci/slurm-up starts a single-node one"
        );
        eprintln!("SLURM test skipped: run .ci/slurm-up (as root) to run it");
    }
    up
}

#[test]
fn a_slurm_array_codes_shards_against_the_remote_model() {
    if !slurm_up() {
        return;
    }
    let Some(s3) = S3::start() else { return };
    s3.bucket("slurm");
    let a = project(&s3, "slurm", 600);
    ok(&a, &s3, &["run", "pipelines/full.toml", "--remote"]);
    a.ok(&[
        "predict",
        "--input",
        "data/demo/new_jobs.csv",
        "--output",
        "one.csv",
    ]);
    // The jobs start elsewhere with empty stores: they share only the remote and OUT_DIR.
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/slurm/submit.sh");
    let mut c = Command::new("bash");
    s3.env(&mut c);
    let out = c
        .arg(&script)
        .arg("3")
        .current_dir(work.path())
        .env("INPUT", a.path("data/demo/new_jobs.csv"))
        .env("OUT_DIR", &out_dir)
        .env("ISCO_DAG_REMOTE", "s3://slurm/team")
        .env("ISCO_DAG_CONFIG", a.path("config/default.toml"))
        .env("AWS_ENDPOINT_URL", s3.endpoint())
        .env("ISCO_DAG_BIN", crate::support::bin())
        .env("WAIT", "1")
        .output()
        .unwrap();
    let logs: String = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        out.status.success(),
        "{}\n{}\n{logs}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..3 {
        assert!(out_dir.join(format!("part-{i}.csv")).is_file(), "{logs}");
    }
    assert_eq!(
        std::fs::read(a.path("one.csv")).unwrap(),
        std::fs::read(out_dir.join("coded.csv")).unwrap(),
        "{logs}"
    );
}
