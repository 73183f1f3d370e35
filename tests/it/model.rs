//! The model stages end to end: train, evaluate, promote, predict.

use crate::support::{Project, outcome_of, stage_of};

const P: &str = "pipelines/full.toml";

/// `isco-dag predict` of a Parquet file `NAME.parquet` whose one column, `job_title`, is
/// `titles`: the coded CSV.
fn code_titles(p: &Project, name: &str, titles: arrow::array::ArrayRef) -> String {
    let (input, output) = (format!("{name}.parquet"), format!("{name}.csv"));
    artifacts::table::Table::new()
        .with("job_title", artifacts::table::Column::Arrow(titles))
        .write_parquet(&p.path(&input))
        .unwrap();
    p.ok(&["predict", "--input", &input, "--output", &output]);
    std::fs::read_to_string(p.path(&output)).unwrap()
}

#[test]
fn pipeline_trains_a_model_that_learns_promotes_it_and_codes_new_jobs() {
    let p = Project::new(3000);
    p.ok(&["run", P]);
    let run = p.last_run();
    let eval = stage_of(&run, "evaluate");
    let acc = eval["metrics"]["test"]["accuracy"].as_f64().unwrap();
    // 40 classes: chance is 2.5 %; the demo labels are ~3 % noisy.
    assert!(acc > 0.85, "test accuracy {acc}");
    assert!(eval["metrics"]["test"]["top3_accuracy"].as_f64().unwrap() >= acc);
    assert_eq!(outcome_of(&run, "promote"), "executed");
    let decision: serde_json::Value = p.json("data/processed/promote/decision.json");
    assert_eq!(decision["promoted"], true);
    assert!(p.path("models/latest/model.bpk").is_file());
    let html = std::fs::read_to_string(p.path("models/latest_report/report.html")).unwrap();
    // PNG plots when a font is available (CI installs one with chromium), else a note.
    let font = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ]
    .iter()
    .any(|f| std::path::Path::new(f).exists());
    if font || std::env::var("ISCO_DAG_REQUIRE_BROWSER").is_ok() {
        for f in [
            "test_reliability.svg",
            "test_coverage.svg",
            "test_confusion_2digit.svg",
        ] {
            let svg =
                std::fs::read_to_string(p.path(&format!("models/latest_report/{f}"))).unwrap();
            assert!(svg.contains("<svg") && svg.len() > 2000, "{f}");
            // Each chart once.
            assert_eq!(html.matches(&format!("<img src=\"{f}\"")).count(), 1, "{f}");
        }
        assert!(
            !html.contains("<svg"),
            "charts are files, not drawn a second time inline"
        );
        // The reliability diagram says how many records each bin holds.
        let rel =
            std::fs::read_to_string(p.path("models/latest_report/test_reliability.svg")).unwrap();
        assert!(
            rel.contains("n="),
            "no bin counts in the reliability diagram"
        );
    } else {
        assert!(html.contains("Charts skipped"), "{html}");
    }
    // Every metric has a definition; error rates are also given at 3 digits.
    assert!(html.contains("share of rows whose given code is among the three most probable"));
    assert!(html.contains("Highest error rates at 3 digits"));
    let groups =
        std::fs::read_to_string(p.path("models/latest_report/test_error_by_group.csv")).unwrap();
    assert!(
        groups.lines().any(|l| l.split(',').nth(1) == Some("3")),
        "{groups}"
    );
    // Every row coded wrongly is listed, most confident first, with its raw fields.
    let errors = std::fs::read_to_string(p.path("models/latest_report/test_errors.csv")).unwrap();
    let mut lines = errors.lines();
    assert_eq!(
        lines.next().unwrap(),
        "row,job_title,duties_description,isco_code,title,predicted_code,predicted_title,confidence,alt_2_code,alt_3_code"
    );
    let rows: Vec<Vec<String>> = csv::Reader::from_reader(errors.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    let test_rows = eval["metrics"]["test"]["records"].as_f64().unwrap();
    assert_eq!(rows.len(), ((1.0 - acc) * test_rows).round() as usize);
    assert!(rows.iter().all(|r| r[3] != r[5] && !r[1].is_empty()));
    let conf: Vec<f64> = rows.iter().map(|r| r[7].parse().unwrap()).collect();
    assert!(conf.windows(2).all(|w| w[0] >= w[1]), "{conf:?}");
    assert!(html.contains("test_errors.csv"));

    let mut review: Vec<String> = std::fs::read_dir(p.path("data/review"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    review.sort();
    assert_eq!(review.len(), 2, "{review:?}");
    assert!(review[0].ends_with(".csv") && review[1].ends_with(".parquet"));

    p.ok(&[
        "predict",
        "--input",
        "data/demo/new_jobs.csv",
        "--output",
        "coded.csv",
        "--explain",
    ]);
    let coded = std::fs::read_to_string(p.path("coded.csv")).unwrap();
    assert_eq!(coded.lines().count(), 209);
    assert!(coded.lines().next().unwrap().starts_with("row,job_title,duties_description,isco_code,level,title,confidence,grade,is_fallback,needs_review,decided_by,alt_1_code"));
    assert!(p.path("coded.explain.csv").is_file() && p.path("coded.explain.html").is_file());
    // The page shows the first 500 records and says where the rest are explained.
    p.write("many.csv", &format!("job_title\n{}", "cook\n".repeat(510)));
    p.ok(&["predict", "many.csv", "-o", "many_out.csv", "--explain"]);
    let html = std::fs::read_to_string(p.path("many_out.explain.html")).unwrap();
    assert!(
        html.contains("The first 500 of 510 records are shown here; every record's top tokens are in many_out.explain.csv."),
        "{}",
        &html[html.len() - 300..]
    );
    // Each row's top tokens name a token once, with all its features gave.
    let tokens = crate::support::csv_column(&p.path("coded.explain.csv"), "top_tokens");
    assert_eq!(tokens.len(), 208);
    for t in &tokens {
        let labels: Vec<&str> = t
            .split("; ")
            .filter_map(|x| x.rsplit_once(':'))
            .map(|(l, _)| l)
            .collect();
        let unique: std::collections::BTreeSet<&&str> = labels.iter().collect();
        assert!(!labels.is_empty() && unique.len() == labels.len(), "{t}");
    }
    // The records may be named without `--input`, as `evaluate` takes its files; not both.
    p.ok(&["predict", "data/demo/new_jobs.csv", "-o", "named.csv"]);
    assert_eq!(std::fs::read_to_string(p.path("named.csv")).unwrap(), coded);
    let (_, err) = p.fails(&["predict", "-i", "data/demo/new_jobs.csv", "coded.csv"]);
    assert!(err.contains("cannot be used with"), "{err}");
    // Each explanation names the code its record was coded to, and explains the unit group
    // that code was reached from (sure of few unit groups, the coder falls back on some).
    p.ok(&[
        "predict",
        "-i",
        "data/demo/new_jobs.csv",
        "-o",
        "coarse.csv",
        "--explain",
        "-S",
        "inference.confidence_threshold=0.99",
    ]);
    let coded_as = crate::support::csv_column(&p.path("coarse.csv"), "isco_code");
    let rows = crate::support::csv_column(&p.path("coarse.explain.csv"), "row");
    let decision = crate::support::csv_column(&p.path("coarse.explain.csv"), "decision");
    let explained = crate::support::csv_column(&p.path("coarse.explain.csv"), "isco_code");
    assert_eq!(rows.len(), coded_as.len());
    for ((row, decision), explained) in rows.iter().zip(&decision).zip(&explained) {
        assert_eq!(decision, &coded_as[row.parse::<usize>().unwrap()]);
        assert!(explained.len() == 4 && explained.starts_with(decision.as_str()));
    }
    assert!(
        decision.iter().any(|d| d.len() < 4),
        "no coarser decision explained"
    );
    // Coded to standard output, the explanations go to `predictions.explain.*`, and it says so.
    let out = p.run(&["predict", "-i", "data/demo/new_jobs.csv", "--explain"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("explanations: predictions.explain.parquet, predictions.explain.csv, predictions.explain.html"),
        "{said}"
    );
    assert!(p.path("predictions.explain.html").is_file());
    // Coded to standard output, the CSV is what `--output` writes; a reader that stops early
    // (`| head -1`) ends it quietly, with the summary still said.
    let whole = p.ok(&["predict", "data/demo/new_jobs.csv"]);
    assert_eq!(whole, coded);
    let many = format!(
        "job_title,duties_description\n{}",
        "clinical nurse,\"cares for patients, gives medication\"\n".repeat(20_000)
    );
    p.write("many.csv", &many);
    let mut child = p
        .cmd(&["predict", "many.csv"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("row,job_title,"), "{first}");
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("coded 20000 rows"), "{said}");

    // `-S inference.KEY=VALUE` sets one call's inference over the config file's.
    let strict = p.ok(&[
        "predict",
        "-i",
        "data/demo/new_jobs.csv",
        "-S",
        "inference.confidence_threshold=0.9999",
    ]);
    let fallbacks = |csv: &str| csv.lines().filter(|l| l.contains(",true,")).count();
    assert!(fallbacks(&strict) > fallbacks(&coded), "{strict}");
    for (set, says) in [
        (
            "training.epochs=1",
            "-S training.epochs=1: `isco-dag predict` takes only [inference] settings",
        ),
        (
            "inference.nope=1",
            "section [inference] with -S inference.nope=1: unknown field `nope`",
        ),
        (
            "data.seed=1",
            "-S data.seed=1: `isco-dag predict` takes only [inference] settings and how [data] says files are read (-S inference.KEY=VALUE, -S data.title_column=NAME, -S data.duties_column=NAME, -S data.encoding=ENCODING)",
        ),
        (
            "data.duties_column=job_title",
            "section [data] with -S data.duties_column=job_title: `duties_column` is `job_title`, the same as `title_column`",
        ),
    ] {
        let (code, err) = p.fails(&["predict", "-i", "data/demo/new_jobs.csv", "-S", set]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says), "{err}");
    }

    // A spreadsheet's semicolon export of the same jobs (byte-order mark, CRLF) is coded the
    // same: the separator is read from the header row.
    let jobs: Vec<csv::StringRecord> = csv::Reader::from_path(p.path("data/demo/new_jobs.csv"))
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect();
    let mut semi = csv::WriterBuilder::new()
        .delimiter(b';')
        .terminator(csv::Terminator::CRLF)
        .from_writer(b"\xef\xbb\xbf".to_vec());
    semi.write_record(["job_title", "duties_description"])
        .unwrap();
    for r in &jobs {
        semi.write_record(r).unwrap();
    }
    std::fs::write(p.path("jobs_semicolon.csv"), semi.into_inner().unwrap()).unwrap();
    p.ok(&[
        "predict",
        "--input",
        "jobs_semicolon.csv",
        "--output",
        "coded_semicolon.csv",
    ]);
    let codes = |file: &str| -> Vec<String> {
        csv::Reader::from_path(p.path(file))
            .unwrap()
            .records()
            .map(|r| r.unwrap()[3].to_string())
            .collect()
    };
    assert_eq!(codes("coded_semicolon.csv"), codes("coded.csv"));

    // An office whose files head the columns otherwise names them in [data] (here for one
    // call); the coded file is the same, its columns named as always.
    let mut headed = csv::Writer::from_writer(Vec::new());
    headed.write_record(["Job Title", "Duties"]).unwrap();
    for r in &jobs {
        headed.write_record(r).unwrap();
    }
    p.write(
        "jobs_headed.csv",
        &String::from_utf8(headed.into_inner().unwrap()).unwrap(),
    );
    let (code, err) = p.fails(&["predict", "-i", "jobs_headed.csv"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("jobs_headed.csv: has no column `job_title` (columns: Job Title, Duties)")
            && err.contains("(`Job Title` looks like it), or set `title_column` in [data] to the name it has (or give `-S data.title_column=NAME`)"),
        "{err}"
    );
    p.ok(&[
        "predict",
        "-i",
        "jobs_headed.csv",
        "-o",
        "coded_headed.csv",
        "-S",
        "data.title_column=Job Title",
        "-S",
        "data.duties_column=Duties",
    ]);
    assert_eq!(
        std::fs::read_to_string(p.path("coded_headed.csv")).unwrap(),
        coded
    );
    // A file in the standard layout is still read by its names.
    p.ok(&[
        "predict",
        "-i",
        "data/demo/new_jobs.csv",
        "-o",
        "coded_standard.csv",
        "-S",
        "data.title_column=Job Title",
    ]);
    assert_eq!(
        std::fs::read_to_string(p.path("coded_standard.csv")).unwrap(),
        coded
    );

    // A spreadsheet's plain "CSV" export is in the machine's code page (windows-1252 in
    // Western Europe): read in the encoding [data] names, it is coded as its UTF-8 twin, and
    // the coded file is UTF-8. Without the setting its rows with accents are unusable, and
    // the note says how to read them.
    let mut accented = jobs.clone();
    accented[0] = ["pâtissier café", "bakes pastries; serves coffee"]
        .into_iter()
        .collect();
    let mut twin = csv::Writer::from_writer(Vec::new());
    twin.write_record(["job_title", "duties_description"])
        .unwrap();
    for r in &accented {
        twin.write_record(r).unwrap();
    }
    let utf8 = String::from_utf8(twin.into_inner().unwrap()).unwrap();
    p.write("jobs_utf8.csv", &utf8);
    let legacy: Vec<u8> = utf8
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 character"))
        .collect();
    std::fs::write(p.path("jobs_1252.csv"), &legacy).unwrap();
    let in_utf8 = p.ok(&["predict", "-i", "jobs_utf8.csv"]);
    assert!(in_utf8.contains("pâtissier café"), "{in_utf8}");
    let in_1252 = p.ok(&[
        "predict",
        "-i",
        "jobs_1252.csv",
        "-S",
        "data.encoding=windows-1252",
    ]);
    assert_eq!(in_1252, in_utf8);
    // So is a spreadsheet's "Unicode text" export (UTF-16 with its byte-order mark).
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(utf8.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(p.path("jobs_utf16.csv"), utf16).unwrap();
    let in_utf16 = p.ok(&[
        "predict",
        "-i",
        "jobs_utf16.csv",
        "-S",
        "data.encoding=utf-16",
    ]);
    assert_eq!(in_utf16, in_utf8);
    let unread = p.ok(&["predict", "-i", "jobs_1252.csv"]);
    assert!(
        unread.lines().nth(1).unwrap().ends_with(
            "\"row unusable: column `job_title` is not valid UTF-8; re-save the file as UTF-8, or set `encoding` in [data] to the one it was saved in (windows-1252 for most Western European spreadsheets)\""
        ),
        "{unread}"
    );
    assert_eq!(
        unread.lines().skip(2).collect::<Vec<_>>(),
        in_utf8.lines().skip(2).collect::<Vec<_>>()
    );
    let (code, err) = p.fails(&[
        "predict",
        "-i",
        "jobs_1252.csv",
        "-S",
        "data.encoding=latin-9000",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("section [data] with -S data.encoding=latin-9000: `latin-9000` is not a character encoding"),
        "{err}"
    );

    // `--input -` codes what comes on standard input, as it codes the file; an error there
    // names standard input, not the temporary copy.
    let piped = |bytes: Vec<u8>, args: &[&str]| {
        use std::io::Write;
        let mut child = p
            .cmd(&[&["predict", "--input", "-"], args].concat())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = piped(
        std::fs::read(p.path("jobs_semicolon.csv")).unwrap(),
        &["--output", "coded_stdin.csv"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(codes("coded_stdin.csv"), codes("coded.csv"));
    let out = piped(b"job_title\nchef\n".to_vec(), &[]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success()
            && err.contains("note: standard input: has no column `duties_description`"),
        "{err}"
    );
    let out = piped(b"job,duties\nchef,cooking\n".to_vec(), &[]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("standard input: has no column `job_title`")
            && !err.contains("isco-dag-stdin"),
        "{err}"
    );

    // Nothing, or less than a header, on standard input is an input error naming it.
    for bytes in [&b""[..], b"jo"] {
        let out = piped(bytes.to_vec(), &[]);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: standard input: "), "{err}");
    }

    // An input's negative number passes through as written; a formula does not.
    p.write("ids.csv", "id,job_title\n-5,chef\n=1+1,cook\n");
    p.ok(&["predict", "--input", "ids.csv", "--output", "ids_out.csv"]);
    let out = std::fs::read_to_string(p.path("ids_out.csv")).unwrap();
    assert!(
        out.contains("\n0,chef,,-5,") && out.contains("\n1,cook,,'=1+1,"),
        "{out}"
    );
    // fastText's and most coders' short flags do the same. A file without a duties column
    // is coded by its titles, and the user is told so.
    let short = p.run(&[
        "predict",
        "-i",
        "ids.csv",
        "-o",
        "ids_short.csv",
        "-m",
        "best",
    ]);
    let err = String::from_utf8(short.stderr).unwrap();
    assert!(short.status.success(), "{err}");
    assert!(
        err.contains("note: ids.csv: has no column `duties_description`, so every record was coded by its job title alone; if the file has the duties under another name, set `duties_column` in [data] to it (or give `-S data.duties_column=NAME`)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(p.path("ids_short.csv")).unwrap(),
        out
    );

    // Unusable rows are kept and flagged, not dropped.
    p.write(
        "odd.csv",
        "job_title,duties_description\n,\nbaker,baking bread\ncook,soups, sauces\n!!,?\n",
    );
    let odd = p.run(&["predict", "--input", "odd.csv", "--output", "odd_out.csv"]);
    let err = String::from_utf8(odd.stderr).unwrap();
    assert!(odd.status.success(), "{err}");
    assert!(!err.contains("duties_description"), "it has them: {err}");
    let out = std::fs::read_to_string(p.path("odd_out.csv")).unwrap();
    assert_eq!(out.lines().count(), 5);
    assert!(
        out.contains("row unusable: the job title and duties hold no letters or digits"),
        "{out}"
    );
    assert!(
        out.contains("row unusable: the job title and duties are empty"),
        "{out}"
    );
    assert!(
        out.contains("row unusable: the row has 3 fields where the header has 2; quote a value that holds a comma"),
        "{out}"
    );
    // An unusable row has no prediction: every prediction cell is empty but `needs_review`
    // (and the note), as the service writes it; the usable row between them is coded.
    let mut r = csv::Reader::from_path(p.path("odd_out.csv")).unwrap();
    let header = r.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let first = header.iter().position(|h| h == "isco_code").unwrap();
    for row in [&rows[0], &rows[2]] {
        for (h, cell) in header.iter().zip(row.iter()).skip(first) {
            match h {
                "needs_review" => assert_eq!(cell, "true"),
                "note" => assert!(cell.starts_with("row unusable"), "{cell}"),
                _ => assert_eq!(cell, "", "{h} of {row:?}"),
            }
        }
    }
    assert!(!rows[1][first].is_empty() && !rows[1][first + 3].is_empty());
    // In Parquet the numbers and flags of those rows are nulls.
    use arrow::array::Array;
    p.ok(&[
        "predict",
        "--input",
        "odd.csv",
        "--output",
        "odd_out.parquet",
    ]);
    let t = artifacts::table::Table::read_parquet_as_arrow(&p.path("odd_out.parquet")).unwrap();
    for name in ["level", "confidence", "is_fallback", "alt_1_confidence"] {
        let a = t.column(name).unwrap().to_arrow_array();
        assert_eq!(
            (0..3).map(|i| a.is_null(i)).collect::<Vec<_>>(),
            [true, false, true],
            "{name}"
        );
    }
    assert_eq!(
        t.column("confidence").unwrap().to_arrow_array().data_type(),
        &arrow::datatypes::DataType::Float64
    );
    // Titles stored as bytes (as older Parquet writers store text) are read as text; bytes
    // that are not UTF-8 make their row unusable for that reason, not as a row without text.
    let titles = arrow::array::BinaryArray::from_iter([Some(&b"chef"[..]), Some(b"\xff\xfe")]);
    let out = code_titles(&p, "bytes", std::sync::Arc::new(titles));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].starts_with("0,chef,,") && lines[1].ends_with(','),
        "{out}"
    );
    assert!(
        lines[2].ends_with(
            "row unusable: column `job_title` is not valid UTF-8; re-save the file as UTF-8"
        ),
        "{out}"
    );
    // So are titles stored as bytes of a fixed width.
    let fixed = arrow::array::FixedSizeBinaryArray::try_from_iter(
        [&b"chef"[..], b"\xff\xfeab"].into_iter(),
    )
    .unwrap();
    assert_eq!(
        code_titles(&p, "fixed", std::sync::Arc::new(fixed)),
        out,
        "fixed-width bytes code as variable-width ones"
    );

    // The pipeline's `predict` stage says so too when its records have no duties column.
    let first = p.ok(&["run", P]);
    let coded_first = codes("data/processed/predictions.csv");
    assert!(
        !first.contains("has no column `duties_description`"),
        "{first}"
    );
    let mut titles = csv::Writer::from_writer(Vec::new());
    titles.write_record(["job_title"]).unwrap();
    for r in &jobs {
        titles.write_record([&r[0]]).unwrap();
    }
    let titles = String::from_utf8(titles.into_inner().unwrap()).unwrap();
    p.write("data/demo/new_jobs.csv", &titles);
    let out = p.ok(&["run", P]);
    assert!(
        out.contains("data/demo/new_jobs.csv: has no column `duties_description`, so every record was coded by its job title alone"),
        "{out}"
    );

    // The stage reads the columns [data] names too; a heading it cannot find names the
    // setting, and naming the columns codes the file as before.
    p.write(
        "data/demo/new_jobs.csv",
        &std::fs::read_to_string(p.path("jobs_headed.csv")).unwrap(),
    );
    let (_, err) = p.fails(&["run", P]);
    assert!(
        err.contains("has no column `job_title` (columns: Job Title, Duties)")
            && err.contains("or set `title_column` in [data] to the name it has"),
        "{err}"
    );
    p.ok(&[
        "run",
        P,
        "-S",
        "predict.title_column=Job Title",
        "-S",
        "predict.duties_column=Duties",
    ]);
    assert_eq!(codes("data/processed/predictions.csv"), coded_first);

    // `evaluate` reads an office's labelled file (its own headings, `;`-separated) by the
    // names [data] gives, and a file in this tool's layout by the standard names, in the
    // same run: the same rows score alike.
    let eval = std::fs::read_to_string(p.path("data/demo/new_occupations_eval.csv")).unwrap();
    let standard = "job_title,duties_description,isco_code";
    assert!(eval.starts_with(standard), "{eval}");
    let office: Vec<String> = eval
        .lines()
        .map(|line| {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(line.as_bytes());
            let rec = r.records().next().unwrap().unwrap();
            let mut w = csv::WriterBuilder::new()
                .delimiter(b';')
                .from_writer(Vec::new());
            w.write_record(&rec).unwrap();
            String::from_utf8(w.into_inner().unwrap()).unwrap()
        })
        .collect();
    let office = office.concat().replacen(
        "job_title;duties_description;isco_code",
        "Job Title;Duties;ISCO",
        1,
    );
    p.write("data/demo/office_eval.csv", &office);
    p.edit(
        P,
        "extra = [\"data/demo/new_occupations_eval.csv\"] }\nparams_from = [\"data\", \"inference\"]",
        "extra = [\"data/demo/new_occupations_eval.csv\", \"data/demo/office_eval.csv\"] }\nparams_from = [\"data\", \"inference\"]",
    );
    let (_, err) = p.fails(&["run", P]);
    assert!(
        err.contains("office_eval.csv: has no column `job_title`")
            && err.contains("or set `title_column` in [data] to the name it has"),
        "{err}"
    );
    let out = p.ok(&[
        "run",
        P,
        "-S",
        "evaluate.title_column=Job Title",
        "-S",
        "evaluate.duties_column=Duties",
        "-S",
        "evaluate.code_column=ISCO",
        "-S",
        "predict.title_column=Job Title",
        "-S",
        "predict.duties_column=Duties",
    ]);
    let m = p.json("models/latest_metrics.json");
    assert_eq!(m["office_eval"]["records"], 80, "{out}");
    for metric in ["records", "accuracy", "macro_f1", "top3_accuracy"] {
        assert_eq!(
            m["office_eval"][metric], m["new_occupations_eval"][metric],
            "{metric}"
        );
    }
    // A file none of whose rows can be scored fails the stage, and the error says why (the
    // report that lists unusable rows is not kept for a failed stage).
    p.write(
        "data/demo/office_eval.csv",
        "Job Title;Duties;ISCO\nchef;cooking;51\n",
    );
    let (_, err) = p.fails(&[
        "run",
        P,
        "-S",
        "evaluate.title_column=Job Title",
        "-S",
        "evaluate.duties_column=Duties",
        "-S",
        "evaluate.code_column=ISCO",
    ]);
    assert!(
        err.contains("office_eval.csv: has no usable labelled rows (a job title and a 4-digit code in `ISCO`): row 0 (line 2): column `ISCO`: `51` is not a 4-digit code"),
        "{err}"
    );
    // A code column named for another field is refused, naming the key.
    let (_, err) = p.fails(&[
        "run",
        P,
        "-S",
        "evaluate.code_column=Duties",
        "-S",
        "evaluate.duties_column=Duties",
    ]);
    assert!(
        err.contains("`code_column` is `Duties`, the same as `duties_column`"),
        "{err}"
    );
}

#[test]
fn the_evaluate_command_scores_labelled_files_as_the_stage_does() {
    let p = Project::new(2000);
    p.ok(&["run", P]);
    // The split and the stage's extra file, scored by the command, give the stage's metrics
    // to the last digit.
    let json = p.ok(&[
        "evaluate",
        "data/processed/test.parquet",
        "data/demo/new_occupations_eval.csv",
        "-m",
        "models/latest",
        "--format",
        "json",
    ]);
    let scored: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stage = p.json("models/latest_report/metrics.json");
    for set in ["test", "new_occupations_eval"] {
        assert_eq!(scored[set], stage[set], "{set}");
        assert!(scored[set]["records"].as_u64().unwrap() > 0, "{set}");
    }
    // An office's own file: its headings, a row without a code, a code the reference the
    // model was trained with does not have, and a report.
    p.write(
        "qc sample.csv",
        "ISCO;Job Title;Duties\n5120;chef;cooks meals in a restaurant kitchen\n51;baker;\n2221;nurse;cares for patients on a ward\n5120;nurse;\n9999;baker;bakes bread\n",
    );
    let office = [
        "evaluate",
        "qc sample.csv",
        "-S",
        "data.code_column=ISCO",
        "-S",
        "data.title_column=Job Title",
        "-S",
        "data.duties_column=Duties",
    ];
    let text = p.ok(&office);
    assert!(
        text.starts_with("qc sample.csv: 3 rows scored, 2 unusable: row 1 (line 3): column `ISCO`: `51` is not a 4-digit code; row 4 (line 6): column `ISCO`: `9999` is not a unit group of the ISCO-08 reference the model was trained with\n"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("  accuracy ")
            && l.contains("share of rows whose top 4-digit code is the given one")),
        "{text}"
    );
    p.write("one.csv", "job_title,isco_code\nchef,5120\n");
    assert!(
        p.ok(&["evaluate", "one.csv"])
            .starts_with("one.csv: 1 row scored, none unusable\n")
    );
    let office_json: serde_json::Value = serde_json::from_str(
        &p.ok(&[&office[..], &["--format", "json", "--report", "qc report"]].concat()),
    )
    .unwrap();
    let m = &office_json["qc sample"];
    assert_eq!(m["records"], 3);
    let report = p.json("qc report/metrics.json");
    assert_eq!(report, office_json);
    let errors = std::fs::read_to_string(p.path("qc report/qc sample_errors.csv")).unwrap();
    let wrong = (3.0 * (1.0 - m["accuracy"].as_f64().unwrap())).round() as usize;
    assert_eq!(errors.lines().count(), 1 + wrong, "{errors}");
    assert!(
        errors.contains("nurse,,5120,"),
        "a nurse is no cook: {errors}"
    );
    assert!(
        std::fs::read_to_string(p.path("qc report/qc sample_unusable.csv"))
            .unwrap()
            .contains("`51` is not a 4-digit code")
    );
    assert!(p.path("qc report/report.html").is_file());
    // What cannot be scored is named before the model loads; settings that are not the
    // coder's are refused.
    let (code, err) = p.fails(&[
        "evaluate",
        "qc sample.csv",
        "-S",
        "data.title_column=Job Title",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("qc sample.csv: has no column `isco_code`")
            && err.contains("-S data.code_column=NAME"),
        "{err}"
    );
    let (code, err) = p.fails(&["evaluate", "data/demo/new_jobs.csv"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("new_jobs.csv: has no column `isco_code`"),
        "{err}"
    );
    for (args, says) in [
        (
            vec!["evaluate", "qc sample.csv", "-S", "training.epochs=1"],
            "`isco-dag evaluate` takes only [inference] settings and how [data] says files are read",
        ),
        (
            vec![
                "evaluate",
                "data/demo/new_occupations_eval.csv",
                "data/processed/../../data/demo/new_occupations_eval.csv",
            ],
            "are both named `new_occupations_eval`",
        ),
        (
            vec!["evaluate", "missing.csv"],
            "`missing.csv` is not a file",
        ),
    ] {
        let (code, err) = p.fails(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn promote_refuses_a_worse_model_unless_forced() {
    let p = Project::new(2000);
    p.ok(&["run", P]);
    // A much weaker model: tiny embedding, one epoch, no augmentation.
    p.edit("config/default.toml", "dim = 64", "dim = 2");
    p.edit("config/default.toml", "epochs = 8", "epochs = 1");
    p.ok(&["run", P]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "train"), "executed");
    assert_eq!(outcome_of(&run, "promote"), "executed");
    let d: serde_json::Value = p.json("data/processed/promote/decision.json");
    assert_eq!(d["promoted"], false, "{d}");
    assert!(
        d["current_best"]["metrics"]["test"]["macro_f1"]
            .as_f64()
            .unwrap()
            > d["candidate"]["metrics"]["test"]["macro_f1"]
                .as_f64()
                .unwrap()
    );
    // The workspace shows the promoted model beside the last trained one, and `predict`
    // says which it uses.
    let model = |dir: &str| std::fs::read(p.path(&format!("models/{dir}/model.json"))).unwrap();
    assert_ne!(model("best"), model("latest"));
    p.write("jobs.csv", "job_title\nchef\n");
    let out = p.run(&["predict", "--input", "jobs.csv", "--output", "o.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let best: serde_json::Value = p.json("artifacts/store/refs/best.json");
    let id = best["target"]["id"].as_str().unwrap();
    assert!(
        err.contains("model: `best`") && err.contains(&id[..12]),
        "{err}"
    );
    // The lineage of the kept model is the run that trained it, not the candidate the last
    // promotion step read and refused.
    let train_params = |lineage: &str| {
        lineage
            .lines()
            .skip_while(|l| !l.contains("train.model"))
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    let kept = train_params(&p.ok(&["lineage", "models/best"]));
    assert!(
        kept.contains("dim=64,") && kept.contains("epochs=8,"),
        "{kept}"
    );
    let (code, err) = p.fails(&["predict", "--input", "jobs.csv", "--model", "bets"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`bets` is neither a model directory nor a ref")
            && err.contains("the refs set there: best"),
        "{err}"
    );
    // `latest` is the workspace's copy of the last trained model, not a ref: the error
    // names the directory to give.
    let (code, err) = p.fails(&["predict", "--input", "jobs.csv", "--model", "latest"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the directory `models/latest` holds a model: give --model models/latest"),
        "{err}"
    );
    p.ok(&["run", P, "--force", "promote"]);
    let d: serde_json::Value = p.json("data/processed/promote/decision.json");
    assert_eq!(d["promoted"], true);
    assert_eq!(d["forced"], true);
    assert_eq!(model("best"), model("latest"));
    let forced = train_params(&p.ok(&["lineage", "models/best"]));
    assert!(
        forced.contains("dim=2,") && forced.contains("epochs=1,"),
        "{forced}"
    );
}

#[test]
fn cluster_outliers_finds_wrong_labels_and_split_can_leave_them_out() {
    let p = Project::new(3000);
    p.ok(&["run", P]);
    let run = p.last_run();
    let st = stage_of(&run, "cluster-outliers");
    let (precision, recall) = (
        st["metrics"]["precision"].as_f64().unwrap(),
        st["metrics"]["recall"].as_f64().unwrap(),
    );
    assert!(
        precision > 0.7 && recall > 0.5,
        "precision {precision}, recall {recall}"
    );
    let csv = std::fs::read_to_string(p.path("data/processed/outliers.csv")).unwrap();
    assert!(
        csv.starts_with("row,text,job_title,given_code,suggested_code,score,cluster,reason\n"),
        "{csv}"
    );
    assert!(csv.lines().count() > 10);
    let split = stage_of(&run, "split");
    assert_eq!(split["metrics"]["outliers_left_out_of_train"], 0);

    p.edit(
        "config/default.toml",
        "exclude_outliers = false",
        "exclude_outliers = true",
    );
    let status = p.ok(&["status", P]);
    assert!(status.contains("[FRESH] cluster-outliers"), "{status}");
    assert!(
        status.contains("[DIRTY] split: param exclude_outliers changed false -> true"),
        "{status}"
    );
    p.ok(&["run", P]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "cluster-outliers"), "skipped");
    assert_eq!(outcome_of(&run, "train"), "executed");
    let split = stage_of(&run, "split");
    let left_out = split["metrics"]["outliers_left_out_of_train"]
        .as_u64()
        .unwrap();
    assert!(left_out > 10, "{left_out}");
}
