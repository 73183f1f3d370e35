//! `isco-dag serve`: the real server on an ephemeral port, every endpoint and the error
//! cases (always JSON 4xx, never a 500), token-protected review decisions, and a live model
//! swap after a promotion.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::http::{get, multipart, post_json, request};
use crate::support::Project;

pub const TOKEN: &str = "test-token-42";

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(p: &Project, extra: &[&str]) -> Server {
    let mut args = vec!["serve", "--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut child = p
        .cmd(&args)
        .env("ISCO_DAG_API_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, addr }
}

/// `n` coders decide item `id` at the same moment, each through one of `addrs` in turn.
fn decide_at_once(addrs: &[&str], id: &str, n: usize) -> Vec<crate::http::Response> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let coders: Vec<_> = (0..n)
        .map(|c| {
            let (addr, id) = (addrs[c % addrs.len()].to_string(), id.to_string());
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let auth = format!("Bearer {TOKEN}");
                let body = format!(r#"{{"item_id":"{id}","isco_code":"5120","coder":"c{c}"}}"#);
                barrier.wait();
                request(
                    &addr,
                    "POST",
                    "/review/decision",
                    &[
                        ("Authorization", auth.as_str()),
                        ("Content-Type", "application/json"),
                    ],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    coders.into_iter().map(|t| t.join().unwrap()).collect()
}

fn error_of(r: &crate::http::Response) -> String {
    let v = r.json();
    assert_eq!(v["status"], r.status, "{v}");
    v["error"].as_str().unwrap().to_string()
}

/// A Parquet upload to `/predict/csv` (a service whose `batch_limit` is 3) comes back as
/// Parquet: the upload's columns with their types and nulls, typed prediction columns, nulls
/// for a row without text, and a clash with an uploaded column name resolved as for CSV.
fn parquet_upload_is_answered_in_parquet(p: &Project, a: &str) {
    use arrow::array::{Array, BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::DataType;
    use artifacts::table::{Column, Table};
    use std::sync::Arc;
    let text = |v: &[&str]| Column::Str(v.iter().map(|s| s.to_string()).collect());
    let upload = Table::new()
        .with(
            "id",
            Column::Arrow(Arc::new(Int64Array::from(vec![Some(7), None, Some(9)]))),
        )
        .with("job_title", text(&["chef", "nurse", ""]))
        .with(
            "duties_description",
            text(&["cooking meals", "caring for patients", ""]),
        )
        .with("isco_code", text(&["5120", "2221", ""]));
    // A table's Parquet bytes, and those bytes uploaded as a form's `file` named `name`.
    let parquet_of = |t: &Table| t.to_parquet_bytes().unwrap();
    let send = |name: &str, bytes: &[u8]| {
        let (ct, body) = multipart("file", name, bytes);
        request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body)
    };
    let r = send("jobs.parquet", &parquet_of(&upload));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apache.parquet")
    );
    let answer = p.path("answer.parquet");
    std::fs::write(&answer, &r.body).unwrap();
    let t = Table::read_parquet_as_arrow(&answer).unwrap();
    let names: Vec<&str> = t.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..8],
        [
            "id",
            "job_title",
            "duties_description",
            "isco_code",
            "predicted_isco_code",
            "level",
            "title",
            "confidence"
        ],
        "{names:?}"
    );
    let col = |name: &str| match t.column(name) {
        Some(Column::Arrow(a)) => a.clone(),
        other => panic!("{name}: {other:?}"),
    };
    let id = col("id");
    let id = id
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("id stays an integer");
    assert_eq!((id.value(0), id.is_null(1), id.value(2)), (7, true, 9));
    let code = col("predicted_isco_code");
    let code = code.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(code.value(0), "5120");
    assert!(code.is_null(2), "a row without text has no code");
    let own = col("isco_code");
    let own = own.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(own.value(1), "2221", "the upload's own codes are kept");
    assert_eq!(col("confidence").data_type(), &DataType::Float64);
    let conf = col("confidence");
    let conf = conf.as_any().downcast_ref::<Float64Array>().unwrap();
    assert!(conf.value(0) > 0.0 && conf.is_null(2));
    let review = col("needs_review");
    let review = review.as_any().downcast_ref::<BooleanArray>().unwrap();
    assert!(review.value(2), "a row without text goes to review");
    let note = col("note");
    let note = note.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(
        note.value(2),
        "row unusable: the job title and duties are empty"
    );
    assert_eq!(note.value(0), "");

    // The same file as the whole body gets the same answer.
    let raw = request(
        a,
        "POST",
        "/predict/csv",
        &[("Content-Type", "application/vnd.apache.parquet")],
        &parquet_of(&upload),
    );
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.body, r.body);

    // Four rows are more than batch_limit; a damaged file names itself.
    let four = Table::new().with("job_title", text(&["a", "b", "c", "d"]));
    let r = send("four.parquet", &parquet_of(&four));
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(error_of(&r).contains("batch_limit"), "{}", r.text());
    let r = send("broken.parquet", b"PAR1 not really parquet PAR1");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(error_of(&r).contains("broken.parquet"), "{}", r.text());
    // Titles stored as bytes are read as text.
    let bytes =
        |v: &[&[u8]]| Column::Arrow(Arc::new(arrow::array::BinaryArray::from_vec(v.to_vec())));
    let r = send(
        "bytes.parquet",
        &parquet_of(&Table::new().with("job_title", bytes(&[b"chef"]))),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Refused: no title column; a title column of lists (not coded as the text `[chef]`);
    // title bytes that are not UTF-8.
    let lists = arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(
        [Some([Some(1)])],
    );
    for (name, column, says) in [
        (
            "title",
            text(&["chef"]),
            "Parquet file has no `job_title` column",
        ),
        (
            "job_title",
            Column::Arrow(Arc::new(lists)),
            "column `job_title` holds lists",
        ),
        (
            "job_title",
            bytes(&[b"chef", b"\xff"]),
            "Parquet row 1: the column `job_title` is not valid UTF-8",
        ),
    ] {
        let r = send(
            "refused.parquet",
            &parquet_of(&Table::new().with(name, column)),
        );
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(error_of(&r).contains(says), "{}", r.text());
    }
}

#[test]
fn every_endpoint_and_every_error_is_json() {
    let p = Project::new(600);
    // No model yet: 503 with what to do, not a crash.
    let s = start(&p, &[]);
    let r = get(&s.addr, "/health");
    assert_eq!(r.status, 503);
    assert!(error_of(&r).contains("isco-dag run pipelines/full.toml"));
    drop(s);

    p.ok(&["run", "pipelines/full.toml"]);
    let s = start(&p, &[]);
    let a = s.addr.as_str();
    assert_eq!(get(a, "/health").json()["status"], "ok");
    let model = get(a, "/model").json();
    assert_eq!(model["ref"], "best");
    assert!(model["version"].as_str().unwrap().len() == 64, "{model}");
    assert!(
        model["evaluation"]["test"]["accuracy"].as_f64().unwrap() > 0.5,
        "{model}"
    );

    // One job, with explanation.
    let r = post_json(
        a,
        "/predict/job",
        r#"{"job_title":"java developer","duties_description":"writing computer programs","explain":true,"id":"r1"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["isco_code"], "2512");
    assert_eq!(v["level"], 4);
    assert_eq!(v["id"], "r1");
    assert_eq!(v["alternatives"].as_array().unwrap().len(), 3);
    assert_eq!(v["model_version"], model["version"]);
    assert!(
        v["explanation"]["words"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["word"] == "developer")),
        "{v}"
    );
    for key in [
        "confidence",
        "grade",
        "is_fallback",
        "needs_review",
        "title",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }

    // Bad input: malformed, missing field, wrong type, unknown field, empty text,
    // wrong method, unknown route.
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"job_title": "chef""#, 400, "not valid JSON"),
        (
            r#"{"duties_description":"cooking"}"#,
            422,
            "missing field `job_title`",
        ),
        (r#"{"job_title": 5}"#, 422, "invalid type: integer `5`"),
        (
            r#"{"job_title":"chef","salary":3}"#,
            422,
            "unknown field `salary`",
        ),
        (
            r#"{"job_title":"  ","duties_description":""}"#,
            422,
            "the job title and duties are empty; send a job title",
        ),
        (
            r#"{"job_title":"  ","duties_description":"!!"}"#,
            422,
            "hold no letters or digits",
        ),
        // Similar records need a retrieval index, which an ngram model lacks.
        (
            r#"{"job_title":"chef","similar":3}"#,
            422,
            "has no retrieval index",
        ),
        (r#"{"job_title":"chef","similar":51}"#, 422, "at most 50"),
    ];
    for (body, status, text) in cases {
        let r = post_json(a, "/predict/job", body);
        assert_eq!(r.status, *status, "{body}: {}", r.text());
        assert!(error_of(&r).contains(text), "{body}: {}", r.text());
    }
    let r = get(a, "/predict/job");
    assert_eq!(r.status, 405);
    assert!(error_of(&r).contains("POST"));
    let r = get(a, "/nothing/here");
    assert_eq!(r.status, 404);
    error_of(&r);

    // Batch, and its limit.
    let r = post_json(
        a,
        "/predict/batch",
        r#"[{"job_title":"chef","id":"a"},{"job_title":"nurse","duties_description":"caring for patients"},{"job_title":"baker","id":17}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["predictions"].as_array().unwrap().len(), 3);
    assert_eq!(v["predictions"][0]["id"], "a");
    assert_eq!(
        v["predictions"][2]["id"], 17,
        "a numeric id comes back a number"
    );
    let r = post_json(a, "/predict/batch", r#"{"job_title":"chef"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    let r = post_json(
        a,
        "/predict/batch",
        r#"[{"job_title":"chef"},{"job_title":""}]"#,
    );
    assert!(error_of(&r).contains("record 1"), "{}", r.text());
    drop(s);

    // Small limits from the config: too many rows, oversized bodies.
    p.edit(
        "config/default.toml",
        "batch_limit = 10000",
        "batch_limit = 3",
    );
    p.edit(
        "config/default.toml",
        "json_max_bytes = 16777216",
        "json_max_bytes = 2000",
    );
    p.edit(
        "config/default.toml",
        "csv_max_bytes = 33554432",
        "csv_max_bytes = 3000",
    );
    let s = start(&p, &[]);
    let a = s.addr.as_str();
    let four = r#"[{"job_title":"a"},{"job_title":"b"},{"job_title":"c"},{"job_title":"d"}]"#;
    let r = post_json(a, "/predict/batch", four);
    assert_eq!(r.status, 413);
    assert!(error_of(&r).contains("at most 3"));
    let big = format!(r#"{{"job_title":"{}"}}"#, "x".repeat(5000));
    let r = post_json(a, "/predict/job", &big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(error_of(&r).contains("json_max_bytes"));

    // CSV: columns kept, predictions appended, unusable rows flagged, errors.
    let csv = b"id,job_title,duties_description\n1,chef,cooking meals\n2,\"nurse, senior\",caring for patients\n3,,\n";
    let (ct, body) = multipart("file", "jobs.csv", csv);
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(r.header("x-coding-note"), None);
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("id,job_title,duties_description,isco_code,level,title,confidence"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("1,chef,cooking meals,5120,4,"),
        "{text}"
    );
    assert!(
        lines[3].ends_with("the job title and duties are empty"),
        "{text}"
    );
    // The service codes a file as `isco-dag predict` does, to the same digits (the command
    // line puts the row number, the title and the duties first).
    let by_name = |csv: &[u8]| -> std::collections::BTreeMap<String, Vec<String>> {
        let mut r = csv::Reader::from_reader(csv);
        let names: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        (names.iter().enumerate())
            .map(|(i, n)| (n.clone(), rows.iter().map(|r| r[i].to_string()).collect()))
            .collect()
    };
    let same_as_cli = |csv: &[u8], answer: &str| {
        p.write("jobs.csv", std::str::from_utf8(csv).unwrap());
        p.ok(&["predict", "-i", "jobs.csv", "-o", "jobs_coded.csv"]);
        let mut cli = by_name(&std::fs::read(p.path("jobs_coded.csv")).unwrap());
        assert!(cli.remove("row").is_some());
        assert_eq!(by_name(answer.as_bytes()), cli);
    };
    same_as_cli(csv, &text);
    // A row with a comma outside quotes is unusable, and both say so alike.
    let odd = b"id,job_title,duties_description\n4,cook,\"soups\"\n5,baker,breads, cakes\n";
    let (ct, body) = multipart("file", "odd.csv", odd);
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text()
            .contains("row unusable: the row has 4 fields where the header has 3"),
        "{}",
        r.text()
    );
    same_as_cli(odd, &r.text());
    // A semicolon export (a spreadsheet's, where the decimal mark is a comma) is read by its
    // header row and coded the same; the answer is comma-separated.
    let semi = b"\xef\xbb\xbfid;job_title;duties_description\r\n1;chef;cooking meals\r\n";
    let (ct, body) = multipart("file", "jobs_semicolon.csv", semi);
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().lines().nth(1), Some(lines[1]), "{}", r.text());
    // Without a duties column every record is coded by its title, and the answer says so.
    let (ct, body) = multipart("file", "titles.csv", b"job_title\nchef\n");
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-coding-note"),
        Some(
            "the upload has no column `duties_description`, so every record was coded by its job title alone; name the duties column `duties_description` to have them read"
        )
    );
    let (ct, body) = multipart("file", "bad.csv", b"job_title\ncaf\xe9 owner\n");
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 400);
    assert!(
        error_of(&r).contains("not valid UTF-8 (line 2"),
        "{}",
        r.text()
    );
    let (ct, body) = multipart("file", "t.csv", b"title\nchef\n");
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 422);
    assert!(error_of(&r).contains("no `job_title` column"));
    assert!(!error_of(&r).contains("looks like it"));
    let (ct, body) = multipart("file", "t.csv", b"Job Title\nchef\n");
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 422);
    assert!(
        error_of(&r).contains("name the title column job_title (`Job Title` looks like it)"),
        "{}",
        r.text()
    );
    let (ct, body) = multipart("file", "many.csv", b"job_title\na\nb\nc\nd\n");
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 413);
    let (ct, body) = multipart(
        "file",
        "huge.csv",
        format!("job_title\n{}\n", "chef\n".repeat(2000)).as_bytes(),
    );
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(error_of(&r).contains("csv_max_bytes"));
    // The file may also be the whole body, as `curl --data-binary @jobs.csv` sends it.
    let r = request(
        a,
        "POST",
        "/predict/csv",
        &[("Content-Type", "text/csv; charset=utf-8")],
        b"job_title\nchef\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().lines().nth(1).unwrap().starts_with("chef,5120,4,"),
        "{}",
        r.text()
    );
    // A body in another encoding says so in its charset, and is answered in UTF-8.
    let r = request(
        a,
        "POST",
        "/predict/csv",
        &[("Content-Type", "text/csv; charset=\"windows-1252\"")],
        b"job_title\ncaf\xe9 owner\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().lines().nth(1).unwrap().starts_with("café owner,"),
        "{}",
        r.text()
    );
    // So does a form's file field.
    let (ct, body) = multipart("file", "jobs.csv", b"job_title\ncaf\xe9 owner\n");
    let mut body = body;
    let at = body.windows(10).position(|w| w == b"text/csv\r\n").unwrap();
    body.splice(at + 8..at + 8, b"; charset=latin1".iter().copied());
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().lines().nth(1).unwrap().starts_with("café owner,"),
        "{}",
        r.text()
    );
    let r = request(
        a,
        "POST",
        "/predict/csv",
        &[("Content-Type", "text/csv; charset=klingon")],
        b"job_title\nchef\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        error_of(&r).starts_with("Content-Type charset: `klingon` is not a character encoding"),
        "{}",
        r.text()
    );
    let r = request(
        a,
        "POST",
        "/predict/csv",
        &[("Content-Type", "text/plain")],
        b"job_title\nchef\n",
    );
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(error_of(&r).contains("text/csv"), "{}", r.text());
    parquet_upload_is_answered_in_parquet(&p, a);

    // Docs and metrics.
    let spec = get(a, "/openapi.json").json();
    for path in [
        "/predict/job",
        "/predict/batch",
        "/predict/csv",
        "/health",
        "/model",
        "/metrics",
        "/review/decision",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} not documented");
    }
    // A client sees every value a grade and a deciding step can take.
    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        schemas["GradeOut"]["enum"],
        serde_json::json!(["very_high", "high", "medium", "low", "very_low"]),
        "{schemas}"
    );
    assert_eq!(
        schemas["StepOut"]["enum"],
        serde_json::json!(["ngram", "ensemble", "transformer", "reranker"]),
        "{schemas}"
    );
    assert_eq!(
        schemas["SourceOut"]["enum"],
        serde_json::json!(["reference", "record", "correction"]),
        "{schemas}"
    );
    openapi_spec_is_valid(&p, &get(a, "/openapi.json").body);
    let docs = get(a, "/docs/");
    assert_eq!(docs.status, 200);
    assert!(docs.text().contains("swagger"), "{}", docs.text());
    let m = get(a, "/metrics").text();
    assert!(
        m.contains("isco_requests_total{endpoint=\"/predict/batch\",status=\"413\"} 1"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("isco_request_duration_seconds_bucket{")
                && l.contains("endpoint=\"/predict/csv\"")
                && l.contains("le=\"+Inf\"")),
        "{m}"
    );
    assert!(m.trim_end().ends_with("# EOF"), "{m}");
    assert!(
        m.contains("isco_predictions_total{grade=\"very_high\"}"),
        "{m}"
    );
    assert!(m.contains("isco_model_reloads_total 1"), "{m}");
    drop(s);

    // An office whose uploads head the columns otherwise names them in [data]: the answer
    // keeps the upload's headings and codes the rows as under the standard ones.
    p.edit(
        "config/default.toml",
        "title_column = \"job_title\"",
        "title_column = \"Job Title\"",
    );
    p.edit(
        "config/default.toml",
        "duties_column = \"duties_description\"",
        "duties_column = \"Tätigkeit\"",
    );
    let s = start(&p, &[]);
    let a = s.addr.as_str();
    let headed = "id,Job Title,Tätigkeit\n1,chef,cooking meals\n".as_bytes();
    let (ct, body) = multipart("file", "jobs.csv", headed);
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.text();
    assert!(
        answer.starts_with("id,Job Title,Tätigkeit,isco_code,level,title,confidence"),
        "{answer}"
    );
    assert_eq!(answer.lines().nth(1), Some(lines[1]), "{answer}");
    // The note on an upload without it names the heading percent-encoded: a header's bytes
    // are read as Latin-1 at best.
    let (ct, body) = multipart("file", "titles.csv", b"Job Title\nchef\n");
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-coding-note"),
        Some(
            "the upload has no column `T%C3%A4tigkeit`, so every record was coded by its job title alone; name the duties column `T%C3%A4tigkeit` to have them read"
        )
    );
    // A file in the standard layout (one this tool wrote) is still read by its names.
    let (ct, body) = multipart("file", "jobs.csv", csv);
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), text);
    let (ct, body) = multipart("file", "jobs.csv", b"title\nchef\n");
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 422);
    assert!(
        error_of(&r).contains("has no `Job Title` column")
            && error_of(&r).contains("or set `title_column` in [data] of the service's config"),
        "{}",
        r.text()
    );
}

/// A project with a promoted model whose every prediction needs review (the small test
/// model is confident about anything, so the threshold is raised).
fn doubtful_project() -> Project {
    let p = Project::new(600);
    p.ok(&["run", "pipelines/full.toml"]);
    p.edit(
        "config/default.toml",
        "review_threshold = 0.5",
        "review_threshold = 0.99999",
    );
    p
}

/// [`doubtful_project`] whose service queues API predictions for review.
pub fn reviewing_project() -> Project {
    let p = doubtful_project();
    p.edit(
        "config/default.toml",
        "api_review_queue = false",
        "api_review_queue = true",
    );
    p
}

/// The one `review_<date>.csv` the review page wrote.
pub fn review_file(p: &Project) -> String {
    std::fs::read_to_string(review_path(p)).unwrap()
}

#[test]
fn review_decisions_need_the_token_and_become_corrections() {
    let p = reviewing_project();
    let s = start(&p, &[]);
    let a = s.addr.as_str();
    // A job the model is unsure of goes to the review queue.
    let v = post_json(
        a,
        "/predict/job",
        r#"{"job_title":"zorblax wrangler","duties_description":"qwerty"}"#,
    )
    .json();
    assert_eq!(v["needs_review"], true, "{v}");
    let q = get(a, "/review/queue").json();
    let item = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["job_title"] == "zorblax wrangler")
        .unwrap_or_else(|| panic!("{q}"))
        .clone();
    assert_eq!(item["suggestions"].as_array().unwrap().len(), 3);
    assert!(!item["highlights"].as_array().unwrap().is_empty());
    let hits = get(a, "/review/search?q=cook").json();
    assert_eq!(hits[0]["isco_code"], "5120", "{hits}");
    assert_eq!(hits[0]["matched"], "title", "{hits}");
    // No unit group's title holds "nurse"; the model and the definitions' occupations find
    // the nursing groups, the model's with its confidence.
    let hits = get(a, "/review/search?q=nurse").json();
    let found: Vec<(&str, &str)> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["isco_code"].as_str().unwrap(),
                h["matched"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(found.iter().any(|f| f.0 == "2221"), "{hits}");
    assert!(
        found.iter().all(|f| f.1 == "model" || f.1 == "definition"),
        "{hits}"
    );
    assert!(
        hits.as_array().unwrap().iter().all(|h| {
            (h["matched"] == "model") == h["confidence"].as_f64().is_some_and(|c| c >= 0.05)
        }),
        "{hits}"
    );
    // A query without a letter names no occupation: the model is not asked.
    let hits = get(a, "/review/search?q=%25%20--").json();
    assert_eq!(hits, serde_json::json!([]), "{hits}");
    let hits = get(a, "/review/search?q=222").json();
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .all(|h| h["matched"] == "code" && h["isco_code"].as_str().unwrap().starts_with("222")),
        "{hits}"
    );

    let id = item["id"].as_str().unwrap();
    // Typed with spaces around, the code and coder are kept as checked.
    let body = format!(r#"{{"item_id":"{id}","isco_code":" 5120 ","coder":"ana "}}"#);
    let r = post_json(a, "/review/decision", &body);
    assert_eq!(r.status, 401);
    let wrong = request(
        a,
        "POST",
        "/review/decision",
        &[("Authorization", "Bearer nope")],
        body.as_bytes(),
    );
    assert_eq!(wrong.status, 401);
    let auth = format!("Bearer {TOKEN}");
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    // JSON only: a browser posts text/plain from any page without asking.
    let r = request(
        a,
        "POST",
        "/review/decision",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "text/plain"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 415, "{}", r.text());
    let bad = format!(r#"{{"item_id":"{id}","isco_code":"9999","coder":"ana"}}"#);
    let r = request(a, "POST", "/review/decision", &h, bad.as_bytes());
    assert_eq!(r.status, 422, "{}", r.text());
    let r = request(a, "POST", "/review/decision", &h, body.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let again = request(a, "POST", "/review/decision", &h, body.as_bytes());
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(
        error_of(&again).contains("by coder `ana`"),
        "{}",
        again.text()
    );

    let text = review_file(&p);
    assert!(text.starts_with("job_title,duties_description,corrected_isco_code,coder,timestamp,note,predicted_isco_code,predicted_confidence,review_item\n"), "{text}");
    assert!(text.contains("zorblax wrangler,qwerty,5120,ana,"), "{text}");
    assert!(text.trim_end().ends_with(id), "{text}");
    let q = get(a, "/review/queue").json();
    assert!(
        q["items"].as_array().unwrap().iter().all(|i| i["id"] != id),
        "{q}"
    );

    // Someone opened the day's file in a spreadsheet and saved it with its columns in another
    // order, a column of their own, CRLF line ends and no last line end: the next decision
    // goes under the file's columns, on a line of its own.
    let path = review_path(&p);
    let mut rdr = csv::Reader::from_path(&path).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let mut columns: Vec<String> = header.iter().rev().cloned().collect();
    columns.insert(1, "checked".into());
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(vec![]);
    w.write_record(&columns).unwrap();
    for r in &rows {
        w.write_record(
            columns
                .iter()
                .map(|c| match header.iter().position(|h| h == c) {
                    Some(i) => &r[i],
                    None => "yes",
                }),
        )
        .unwrap();
    }
    let saved = String::from_utf8(w.into_inner().unwrap()).unwrap();
    std::fs::write(&path, saved.trim_end()).unwrap();
    let queue_one = |title: &str| -> String {
        let body = format!(r#"{{"job_title":"{title}","duties_description":"qwerty"}}"#);
        assert_eq!(
            post_json(a, "/predict/job", &body).json()["needs_review"],
            true
        );
        let q = get(a, "/review/queue").json();
        q["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["job_title"] == title)
            .unwrap_or_else(|| panic!("{q}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let id2 = queue_one("blorfin smith");
    let body = format!(r#"{{"item_id":"{id2}","isco_code":"7512","coder":"ben"}}"#);
    let r = request(a, "POST", "/review/decision", &h, body.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let text = std::fs::read_to_string(&path).unwrap();
    let last = text.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with(&format!("{id2},,")) && last.ends_with(",ben,7512,qwerty,blorfin smith"),
        "{text}"
    );
    assert_eq!(text.trim_end().lines().count(), 3, "{text}");

    // Both decisions are corrections the fine-tune pipeline reads.
    p.ok(&["run", "pipelines/finetune.toml", "--until", "corrections"]);
    let run = p.last_run();
    let m = &crate::support::stage_of(&run, "corrections")["metrics"];
    assert_eq!(m["corrections"], 2, "{m}");
    assert_eq!(m["quarantined"], 0, "{m}");

    // Saved again where the decimal mark is a comma, with `;` between the fields: the
    // decisions in it still count, so neither item is back in the queue nor decided twice.
    std::fs::write(&path, text.replace(',', ";")).unwrap();
    let q = get(a, "/review/queue").json();
    assert!(
        q["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["id"] != id && i["id"] != id2.as_str()),
        "{q}"
    );
    let r = request(a, "POST", "/review/decision", &h, body.as_bytes());
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(error_of(&r).contains("by coder `ben`"), "{}", r.text());

    // A file that lost a column the page writes cannot take a decision: it is refused, with
    // what to do, and the file is left as it was.
    std::fs::write(
        &path,
        "job_title,duties_description\nzorblax wrangler,qwerty\n",
    )
    .unwrap();
    let id3 = queue_one("quuxo fitter");
    let body = format!(r#"{{"item_id":"{id3}","isco_code":"7512","coder":"ben"}}"#);
    let r = request(a, "POST", "/review/decision", &h, body.as_bytes());
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        error_of(&r).contains("has no column `corrected_isco_code`, `coder`"),
        "{}",
        r.text()
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "job_title,duties_description\nzorblax wrangler,qwerty\n"
    );
}

/// The one file the review page has written its decisions to.
fn review_path(p: &Project) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(p.path("data/corrections"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("review_")
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Makes the service look for a newly promoted model every 0.2 s instead of every 2 s.
fn reload_fast(p: &Project) {
    p.edit(
        "config/default.toml",
        "reload_seconds = 2.0",
        "reload_seconds = 0.2",
    );
}

/// Asks `probe` every 100 ms until it answers, for up to 10 s; panics naming `what` then.
fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(v) = probe() {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("after 10 s still waiting for {what}")
}

#[test]
fn a_service_started_before_any_run_waits_without_creating_a_store() {
    let p = Project::new(300);
    reload_fast(&p);
    let s = start(&p, &[]);
    let a = s.addr.as_str();
    let r = post_json(a, "/predict/job", r#"{"job_title":"chef"}"#);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(error_of(&r).contains("no model is promoted"));
    assert!(!p.path("artifacts/store").exists());
    // The first run's model is picked up without a restart.
    p.ok(&["run", "pipelines/full.toml"]);
    wait_for("the first model to be served", || {
        (post_json(a, "/predict/job", r#"{"job_title":"chef"}"#).status == 200).then_some(())
    });
}

#[test]
fn a_promoted_model_is_swapped_in_without_a_restart() {
    let p = Project::new(600);
    p.ok(&["run", "pipelines/full.toml"]);
    reload_fast(&p);
    let s = start(&p, &[]);
    let a = s.addr.as_str();
    let before = get(a, "/model").json()["version"].clone();
    // Keep requests flowing while a new model is trained and force-promoted.
    let addr = a.to_string();
    let load = std::thread::spawn(move || {
        let mut statuses = Vec::new();
        for _ in 0..300 {
            statuses.push(post_json(&addr, "/predict/job", r#"{"job_title":"chef"}"#).status);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        statuses
    });
    p.edit("config/default.toml", "dim = 64", "dim = 32");
    p.ok(&["run", "pipelines/full.toml", "--force", "promote"]);
    wait_for("the server to pick up the promoted model", || {
        (get(a, "/model").json()["version"] != before).then_some(())
    });
    let statuses = load.join().unwrap();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let m = get(a, "/metrics").text();
    assert!(m.contains("isco_model_reloads_total 2"), "{m}");
}

#[test]
fn serve_configuration_errors_name_the_file_and_key() {
    let p = Project::new(50);
    let (code, err) = p.fails(&["serve", "--config", "missing.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.toml: does not exist"), "{err}");
    p.edit(
        "config/default.toml",
        "reload_seconds = 2.0",
        "reload_seconds = 2.0\nrelaod = 1",
    );
    let (code, err) = p.fails(&["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("default.toml") && err.contains("relaod"),
        "{err}"
    );
}

#[test]
fn one_request_cannot_exhaust_the_service() {
    let p = reviewing_project();
    p.edit(
        "config/default.toml",
        "max_field_chars = 20000",
        "max_field_chars = 300",
    );
    p.edit(
        "config/default.toml",
        "max_connections = 512",
        "max_connections = 8",
    );
    p.edit(
        "config/default.toml",
        "header_timeout_seconds = 10.0",
        "header_timeout_seconds = 1.0",
    );
    let s = start(&p, &[]);
    let a = s.addr.as_str();

    // Oversized fields are refused, naming the field, before any work.
    let long = "cook ".repeat(100);
    let r = post_json(
        a,
        "/predict/job",
        &format!(r#"{{"job_title":"chef","duties_description":"{long}","explain":true}}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        error_of(&r).contains("`duties_description` has 500 characters")
            && error_of(&r).contains("max_field_chars"),
        "{}",
        r.text()
    );
    let r = post_json(
        a,
        "/predict/batch",
        &format!(r#"[{{"job_title":"chef"}},{{"job_title":"{long}"}}]"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        error_of(&r).contains("record 1: `job_title`"),
        "{}",
        r.text()
    );
    // A CSV row is named by its line too, so it can be found in the file.
    let csv = format!("job_title,duties_description\nchef,\"cooking\nmeals\"\nbaker,{long}\n");
    let (ct, body) = multipart("file", "jobs.csv", csv.as_bytes());
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        error_of(&r).contains("CSV row 1 (line 4): `duties_description` has 500 characters"),
        "{}",
        r.text()
    );
    // The same lines in a file saved with CRLF line ends.
    let (ct, body) = multipart("file", "jobs.csv", csv.replace('\n', "\r\n").as_bytes());
    let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
    assert!(
        error_of(&r).contains("CSV row 1 (line 4): `duties_description` has 500 characters"),
        "{}",
        r.text()
    );
    // A quote left open would take the rows after it into one cell; the upload is refused,
    // naming where the quote opened, whether the quote's field is its row's last or not.
    for (csv, says) in [
        (
            "job_title,duties_description,id\nchef,cooks,1\ncook,\"fries,2\nbaker,bakes,3\n",
            "CSV row 1: a quoted field opened on line 3 runs on to line 4",
        ),
        (
            "job_title,duties_description\nchef,cooks\ncook,\"fries\nbaker,bakes\n",
            "CSV row 1: a quoted field opened on line 3 is never closed, so it runs on to the end of the file",
        ),
    ] {
        let (ct, body) = multipart("file", "jobs.csv", csv.as_bytes());
        let r = request(a, "POST", "/predict/csv", &[("Content-Type", &ct)], &body);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(error_of(&r).contains(says), "{}", r.text());
    }
    // Explanations list at most 100 words, the most influential ones in text order.
    let words: Vec<String> = (0..120).map(|i| format!("w{i}")).collect();
    let r = post_json(
        a,
        "/predict/job",
        &format!(
            r#"{{"job_title":"chef","duties_description":"{}","explain":true}}"#,
            words[..55].join(" ")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let e = &r.json()["explanation"];
    assert!(e["words"].as_array().unwrap().len() <= 100, "{e}");
    // Only JSON is accepted: a web page can send text/plain cross-site without asking.
    let r = request(
        a,
        "POST",
        "/predict/job",
        &[("Content-Type", "text/plain")],
        br#"{"job_title":"chef"}"#,
    );
    assert_eq!(r.status, 415, "{}", r.text());
    error_of(&r);
    // A bad query string is the same JSON error as everywhere else.
    let r = get(a, "/review/queue?limit=many");
    assert_eq!(r.status, 400, "{}", r.text());
    error_of(&r);

    // The review page may not be framed and runs only its own script.
    let r = get(a, "/review");
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(!r.text().contains("<script>"), "inline script in the page");
    let js = get(a, "/review/app.js");
    assert_eq!(js.status, 200);
    assert!(!js.text().contains("localStorage.setItem(\"isco-token"));

    // Five coders decide one item at once: exactly one decision is recorded.
    let v = post_json(
        a,
        "/predict/job",
        r#"{"job_title":"zorblax wrangler","duties_description":"qwerty"}"#,
    )
    .json();
    assert_eq!(v["needs_review"], true, "{v}");
    let q = get(a, "/review/queue?limit=5000").json();
    assert!(q["items"].as_array().unwrap().len() <= 100);
    let id = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["job_title"] == "zorblax wrangler")
        .unwrap_or_else(|| panic!("{q}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let answers = decide_at_once(&[a], &id, 5);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        4,
        "{statuses:?}"
    );
    assert!(
        answers
            .iter()
            .filter(|r| r.status == 409)
            .all(|r| error_of(r).contains("already decided by coder `c"))
    );
    assert_eq!(review_file(&p).lines().count(), 2);

    // Coders on two services of one project (a second port, or a replica on a shared
    // volume): still exactly one decision an item.
    let s2 = start(&p, &[]);
    for (round, word) in ["qoppa", "sampi", "digamma"].iter().enumerate() {
        let title = format!("zorblax {word}");
        let v = post_json(
            a,
            "/predict/job",
            &format!(r#"{{"job_title":"{title}","duties_description":"qwerty"}}"#),
        )
        .json();
        assert_eq!(v["needs_review"], true, "{v}");
        let q = get(&s2.addr, "/review/queue").json();
        let id = q["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["job_title"] == title.as_str())
            .unwrap_or_else(|| panic!("{q}"))["id"]
            .as_str()
            .unwrap()
            .to_string();
        let statuses: Vec<u16> = decide_at_once(&[a, &s2.addr], &id, 6)
            .iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(
            (
                statuses.iter().filter(|&&s| s == 201).count(),
                statuses.iter().filter(|&&s| s == 409).count()
            ),
            (1, 5),
            "{statuses:?}"
        );
        assert_eq!(review_file(&p).lines().count(), 3 + round);
    }
    drop(s2);

    // Clients that never finish their headers: more of them than connections allowed.
    let stalled: Vec<std::net::TcpStream> = (0..30)
        .filter_map(|_| {
            let mut c = std::net::TcpStream::connect(a).ok()?;
            std::io::Write::write_all(&mut c, b"GET /health HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(c)
        })
        .collect();
    assert_eq!(stalled.len(), 30);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // /health still answers: a stalled connection gives way to it.
    let r = get(a, "/health");
    assert_eq!(r.status, 200, "{}", r.text());
    // And the header deadline closes what is left of them.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let closed = stalled.iter().filter(|c| closed_by_server(c)).count();
    assert_eq!(closed, 30);
}

#[test]
fn the_api_review_queue_and_cors_are_off_unless_asked_for() {
    let p = doubtful_project();
    p.edit(
        "config/default.toml",
        "cors_origins = []",
        r#"cors_origins = ["http://coders.example"]"#,
    );
    let s = start(&p, &[]);
    let a = s.addr.as_str();
    let pre = request(
        a,
        "OPTIONS",
        "/predict/job",
        &[
            ("Origin", "http://coders.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    );
    assert_eq!(pre.status, 204, "{}", pre.text());
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("http://coders.example")
    );
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap_or_default()
            .contains("content-type")
    );
    let r = request(
        a,
        "GET",
        "/health",
        &[("Origin", "http://coders.example")],
        b"",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://coders.example")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-model-version, x-coding-note")
    );
    let r = request(
        a,
        "GET",
        "/health",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    let v = post_json(
        &s.addr,
        "/predict/job",
        r#"{"job_title":"zorblax wrangler","duties_description":"qwerty"}"#,
    )
    .json();
    assert_eq!(v["needs_review"], true, "{v}");
    let api_files = std::fs::read_dir(p.path("data/review"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("api_review_")
        })
        .count();
    assert_eq!(api_files, 0);
}

/// Whether the server has closed the connection (reads end, after any answer it sent);
/// false if it is still open 2 s later.
fn closed_by_server(c: &std::net::TcpStream) -> bool {
    let mut c = c.try_clone().unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        match std::io::Read::read(&mut c, &mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Runs `openapi-spec-validator` (the Python registry's package; `.ci/run` installs it and
/// sets ISCO_DAG_REQUIRE_OPENAPI_VALIDATOR, which makes its absence a failure) on the spec.
fn openapi_spec_is_valid(p: &Project, spec: &[u8]) {
    let file = p.path("openapi.json");
    std::fs::write(&file, spec).unwrap();
    match std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .ok()
        .filter(|o| !String::from_utf8_lossy(&o.stderr).contains("No module named"))
        .ok_or("the Python module openapi_spec_validator is not installed")
    {
        Ok(out) => assert!(
            out.status.success(),
            "openapi-spec-validator: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(
                std::env::var_os("ISCO_DAG_REQUIRE_OPENAPI_VALIDATOR").is_none(),
                "openapi-spec-validator is required but cannot run: {e}"
            );
            eprintln!("skipping the OpenAPI validation: openapi-spec-validator not found ({e})");
        }
    }
}

/// Schemathesis, run against the served OpenAPI document: every request it generates from
/// the document, valid or not, gets a status the document lists, with a body and headers of
/// the documented shape, and never a 500. Requests the document allows but the service
/// refuses for what a schema cannot say (a code missing from the reference, a title empty
/// once normalised) are not counted as failures.
#[test]
fn the_openapi_document_describes_every_answer() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let p = reviewing_project();
    let s = start(&p, &[]);
    // Run in the project's folder, where schemathesis keeps its cache of what it found.
    let out = std::process::Command::new(&schemathesis[0])
        .current_dir(p.path("."))
        .args(&schemathesis[1..])
        .args(["run", &format!("http://{}/openapi.json", s.addr)])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", "40", "--workers", "1", "--seed", "42"])
        .args(["--generation-deterministic", "--no-color"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "schemathesis found answers the OpenAPI document does not describe:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The schemathesis command: `ISCO_DAG_SCHEMATHESIS` (a path, as `.ci/run` installs it), else
/// `schemathesis` on the PATH; `None` (the test is skipped) when neither runs, unless
/// `ISCO_DAG_REQUIRE_SCHEMATHESIS` is set.
fn schemathesis() -> Option<Vec<String>> {
    let cmd = std::env::var("ISCO_DAG_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let cmd: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    let runs = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return Some(cmd);
    }
    assert!(
        std::env::var_os("ISCO_DAG_REQUIRE_SCHEMATHESIS").is_none(),
        "schemathesis is required but `{}` does not run",
        cmd.join(" ")
    );
    eprintln!(
        "skipping the schemathesis run: `{}` not found",
        cmd.join(" ")
    );
    None
}
