//! The review loop: the queue of doubtful predictions (from the `predict` stage's
//! `to_review_<date>.csv` files and from API calls flagged `needs_review`), the page coders
//! use, and their decisions, appended to `data/corrections/review_<date>.csv` with coder,
//! timestamp and the model's original prediction — the corrections `finetune.toml` learns.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use classifier::predict::Prediction;
use classifier::text::record_text;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::coding::{explanation, similar_records};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::types::{AlternativeOut, SimilarOut, StepOut, WordOut};

/// Columns of the corrections the page writes (the `corrections` stage reads them).
const DECISION_COLUMNS: [&str; 9] = [
    "job_title",
    "duties_description",
    "corrected_isco_code",
    "coder",
    "timestamp",
    "note",
    "predicted_isco_code",
    "predicted_confidence",
    "review_item",
];

/// Columns of the API review queue (the `predict` stage's review file has these and more).
const QUEUE_COLUMNS: [&str; 7] = [
    "job_title",
    "duties_description",
    "isco_code",
    "confidence",
    "grade",
    "model_version",
    "queued_at",
];

/// A queued record as the review page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueItem {
    /// Stable id (hash of title and duties).
    pub id: String,
    /// Job title.
    pub job_title: String,
    /// Duties.
    pub duties_description: String,
    /// File it was queued in.
    pub source: String,
    /// The model's original code.
    pub predicted_isco_code: String,
    /// Its title (the reference's, else the current model's; empty if neither knows it).
    pub predicted_title: String,
    /// The model's original confidence.
    pub predicted_confidence: f64,
    /// The current model's top codes.
    pub suggestions: Vec<AlternativeOut>,
    /// Which part of the current model decided the suggestions (as the prediction column
    /// `decided_by`).
    pub suggested_by: StepOut,
    /// Words and their contribution to the first suggestion.
    pub highlights: Vec<WordOut>,
    /// Past records with similar titles and their codes (models with a retrieval index;
    /// `similar` in `[inference]` of them).
    pub similar: Vec<SimilarOut>,
}

/// The queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueResponse {
    /// Undecided items (at most `limit`).
    pub items: Vec<QueueItem>,
    /// Undecided items in all.
    pub total: usize,
}

/// A code found by the search box.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    /// 4-digit code.
    pub isco_code: String,
    /// Title.
    pub title: String,
    /// Why the code was found.
    pub matched: SearchMatch,
    /// The model's confidence in the code, for a hit the model found.
    pub confidence: Option<f64>,
}

/// How the search found a unit group, in the order hits are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchMatch {
    /// The code starts with the query.
    Code,
    /// The title holds every word of the query.
    Title,
    /// The model codes the query, read as a job title, to it.
    Model,
    /// Its definition (with the occupations it lists) holds every word of the query.
    Definition,
}

/// A reviewer's decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Queue item id.
    #[schema(max_length = 64)]
    pub item_id: String,
    /// The right 4-digit ISCO-08 code.
    #[schema(pattern = r"^\s*[0-9]{4}\s*$", example = "2512")]
    pub isco_code: String,
    /// Who decided (kept in the audit trail).
    #[schema(max_length = 200, pattern = r"\S")]
    pub coder: String,
    /// Optional remark.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub note: String,
}

/// Skipping an item.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Skip {
    /// Queue item id.
    #[schema(max_length = 64)]
    pub item_id: String,
}

/// Most items one queue page holds: each carries the model's suggestions, highlighted words
/// and similar records, so a page is bounded in both time and size.
pub const MAX_QUEUE_PAGE: usize = 100;

/// Query of the queue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Most items to return (default 50; more than 100 is taken as 100).
    #[serde(default, deserialize_with = "crate::types::query_count")]
    pub limit: Option<usize>,
}

/// Query of the search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words of a title, or the start of a code.
    #[param(max_length = 200)]
    pub q: String,
    /// Most hits (default 20; more than 200 is taken as 200).
    #[serde(default, deserialize_with = "crate::types::query_count")]
    pub limit: Option<usize>,
}

#[derive(Clone)]
struct Queued {
    id: String,
    job_title: String,
    duties: String,
    source: String,
    code: String,
    confidence: f64,
}

/// Review state: where queues and decisions live, and what was skipped.
pub struct Review {
    review_dir: PathBuf,
    corrections_dir: PathBuf,
    api_queue_max_bytes: u64,
    write: Mutex<()>,
    skipped: Mutex<HashSet<String>>,
    queue_files: ParsedFiles<Queued>,
    decision_files: ParsedFiles<(String, DecidedBy)>,
}

/// The rows of the CSV files the review reads, each file parsed once and again only when
/// its size or modification time changed. Queue files only ever grow by appends or are
/// replaced whole, so a file whose size and time are unchanged holds the rows parsed
/// before; without this every queue page and every decision parsed every queue file there
/// has ever been (a year of monthly queues: 100,000 rows, a third of a second each time).
struct ParsedFiles<T> {
    files: Mutex<std::collections::HashMap<PathBuf, Parsed<T>>>,
}

/// One file's rows, with the size and modification time it had before they were read.
struct Parsed<T> {
    len: u64,
    modified: Option<std::time::SystemTime>,
    rows: Arc<Vec<T>>,
}

impl<T> ParsedFiles<T> {
    fn new() -> Self {
        ParsedFiles {
            files: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The rows of each of `paths`, in order, parsing a file only when it changed. Files no
    /// longer among `paths` are forgotten.
    fn rows(&self, paths: &[PathBuf], parse: impl Fn(&Path) -> Vec<T>) -> Vec<Arc<Vec<T>>> {
        let mut files = self.files.lock().expect("parsed files lock");
        files.retain(|p, _| paths.contains(p));
        paths
            .iter()
            .map(|path| {
                // Read before the rows: a file that grows meanwhile is parsed again next time.
                let (len, modified) = std::fs::metadata(path)
                    .map(|m| (m.len(), m.modified().ok()))
                    .unwrap_or((0, None));
                match files.get(path) {
                    Some(p) if p.len == len && p.modified == modified => p.rows.clone(),
                    _ => {
                        let rows = Arc::new(parse(path));
                        files.insert(
                            path.clone(),
                            Parsed {
                                len,
                                modified,
                                rows: rows.clone(),
                            },
                        );
                        rows
                    }
                }
            })
            .collect()
    }
}

/// Who decided a queue item, and when.
#[derive(Clone)]
struct DecidedBy {
    coder: String,
    at: String,
}

/// Why a decision was not recorded.
enum DecideError {
    /// No such undecided item.
    Unknown,
    /// Someone decided it first.
    Taken(DecidedBy),
    /// The corrections file could not be written.
    Io(std::io::Error),
}

/// The id of a record: a hash of its title and duties.
pub fn item_id(job_title: &str, duties: &str) -> String {
    let h = blake3::hash(format!("{job_title}\u{1f}{duties}").as_bytes());
    h.to_hex()[..16].to_string()
}

fn today() -> String {
    chrono::Local::now().format("%Y%m%d").to_string()
}

/// Appends one CSV row to `path` in a single write, with the header if the file is new.
///
/// The file may have been opened and saved in a spreadsheet since: the row's cells go under
/// the header's columns in the order the file has them (a column someone added gets an empty
/// cell), and a file whose last line has no line end gets one first, so the row does not join
/// that line. A header that lacks one of `columns` is an error: a row written under it would
/// put its values under other names.
fn append_row(path: &Path, columns: &[&str], row: &[String]) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let mut bytes = Vec::new();
    let mut header = None;
    if len > 0 {
        let mut last = [0u8];
        f.seek(std::io::SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if !matches!(last[0], b'\n' | b'\r') {
            bytes.push(b'\n');
        }
        f.seek(std::io::SeekFrom::Start(0))?;
        header = file_header(&f, columns)?;
    }
    let delimiter = header.as_ref().map_or(b',', |h| h.1);
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(bytes);
    match header.map(|h| h.0) {
        None => {
            w.write_record(columns)?;
            w.write_record(row)?;
        }
        Some(names) => {
            let missing: Vec<&str> = columns
                .iter()
                .filter(|c| !names.iter().any(|n| n == *c))
                .copied()
                .collect();
            if !missing.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} has no column `{}` in its header row ({}); give the file back the columns {} (in any order), or move it out of the folder so that a new one is started",
                        path.display(),
                        missing.join("`, `"),
                        names.join(", "),
                        columns.join(", ")
                    ),
                ));
            }
            w.write_record(names.iter().map(|n| {
                columns
                    .iter()
                    .position(|c| c == n)
                    .map_or("", |i| row[i].as_str())
            }))?;
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    f.write_all(&bytes)?;
    f.sync_data()
}

/// The column names in the header row of the CSV file `f` (read from its start) and the
/// separator it uses (judged as every CSV input's is, for a file saved where the decimal mark
/// is a comma), or `None` when it holds no row.
fn file_header(f: &std::fs::File, columns: &[&str]) -> std::io::Result<Option<(Vec<String>, u8)>> {
    use std::io::BufRead;
    let mut first = Vec::new();
    std::io::BufReader::new(artifacts::table::LineEndsAsLf::new(
        std::io::BufReader::new(f),
    ))
    .read_until(b'\n', &mut first)?;
    let delimiter = artifacts::table::csv_delimiter(&first, columns, &vec![true; columns.len()]);
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(first.as_slice());
    let mut rec = csv::ByteRecord::new();
    let read = r
        .read_byte_record(&mut rec)
        .map_err(std::io::Error::other)?;
    Ok(read.then(|| {
        let names = rec
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_string()
            })
            .collect();
        (names, delimiter)
    }))
}

/// An exclusive advisory lock (`flock`) on the folder `dir` itself, held until dropped. The
/// in-process mutex orders this service's own requests; this lock orders them against
/// another `isco-dag serve` on the same project (a second port, a replica on a shared
/// volume), so a check-then-append stays one step across processes too. Locking the folder
/// leaves no lock file among the CSV files a glob reads, and the operating system releases
/// the lock when the holder exits, however it exits.
fn lock_folder(dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    let f = std::fs::File::open(dir)?;
    // Elsewhere a folder cannot be opened as a file: lock a file in it.
    #[cfg(not(unix))]
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".review.lock"))?;
    f.lock()?;
    Ok(f)
}

/// CSV files in a directory whose name starts with `prefix`, sorted.
fn csv_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "csv")
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A CSV file's header and its records, or `None` when it cannot be opened or has no header
/// (a queue file is the service's to skip, not to fail on). The file is read as every CSV
/// input is (its separator judged by the header holding `wanted`, any line ends), since a
/// coder may have saved it from a spreadsheet; a spreadsheet that saved it in its own code
/// page leaves bytes that are not UTF-8, which show as U+FFFD rather than lose their row.
fn csv_records(f: &Path, wanted: &[&str]) -> Option<(csv::StringRecord, Vec<csv::StringRecord>)> {
    let (mut r, header) = artifacts::table::open_csv_file(
        f,
        wanted,
        &vec![false; wanted.len()],
        true,
        artifacts::table::TextEncoding::UTF_8,
    )
    .ok()?;
    let h: csv::StringRecord = header.iter().map(|c| c.trim()).collect();
    let mut records = Vec::new();
    let mut rec = csv::ByteRecord::new();
    // An error other than the bytes (the file cut short while being written) ends the rows
    // that can be read.
    while let Ok(true) = r.read_byte_record(&mut rec) {
        records.push(
            rec.iter()
                .map(|field| String::from_utf8_lossy(field))
                .collect::<csv::StringRecord>(),
        );
    }
    Some((h, records))
}

/// The decisions in one `review_<date>.csv` file: (queue item, who decided it and when).
fn decisions_in(f: &Path) -> Vec<(String, DecidedBy)> {
    let mut out = Vec::new();
    let Some((h, records)) = csv_records(f, &["review_item", "coder", "timestamp"]) else {
        return out;
    };
    let col = |n: &str| h.iter().position(|c| c == n);
    let Some(item) = col("review_item") else {
        return out;
    };
    let (coder, at) = (col("coder"), col("timestamp"));
    for rec in records {
        let get = |i: Option<usize>| i.and_then(|i| rec.get(i)).unwrap_or("").to_string();
        if let Some(id) = rec.get(item) {
            out.push((
                id.to_string(),
                DecidedBy {
                    coder: get(coder),
                    at: get(at),
                },
            ));
        }
    }
    out
}

/// The records with text queued in one `to_review_<date>.csv` or `api_review_<date>.csv`.
fn queued_in(f: &Path) -> Vec<Queued> {
    let mut out = Vec::new();
    let Some((h, records)) = csv_records(f, &["job_title", "duties_description"]) else {
        return out;
    };
    let col = |n: &str| h.iter().position(|c| c == n);
    // A predictions file whose input had its own `isco_code` or `confidence` names the
    // model's columns `predicted_<name>` (prefixed again if that was taken too).
    let names: Vec<&str> = h.iter().collect();
    let ours = |n: &str| artifacts::table::added_column_position(&names, n);
    let (Some(t), d, c, p) = (
        col("job_title"),
        col("duties_description"),
        ours("isco_code"),
        ours("confidence"),
    ) else {
        return out;
    };
    let source = f
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    for rec in records {
        let get = |i: Option<usize>| i.and_then(|i| rec.get(i)).unwrap_or("").to_string();
        let (job_title, duties) = (get(Some(t)), get(d));
        if record_text(&job_title, &duties).is_empty() {
            continue;
        }
        out.push(Queued {
            id: item_id(&job_title, &duties),
            job_title,
            duties,
            source: source.clone(),
            code: get(c),
            confidence: get(p).parse().unwrap_or(0.0),
        });
    }
    out
}

impl Review {
    /// Review state over the given folders.
    pub fn new(review_dir: PathBuf, corrections_dir: PathBuf, api_queue_max_bytes: u64) -> Review {
        Review {
            review_dir,
            corrections_dir,
            api_queue_max_bytes,
            write: Mutex::new(()),
            skipped: Mutex::new(HashSet::new()),
            queue_files: ParsedFiles::new(),
            decision_files: ParsedFiles::new(),
        }
    }

    /// Queues an API prediction that needs review (`api_review_<date>.csv`).
    pub fn enqueue_api(
        &self,
        job_title: &str,
        duties: &str,
        p: &Prediction,
        version: &str,
    ) -> std::io::Result<()> {
        let _g = self.write.lock().expect("review lock");
        let _folder = lock_folder(&self.review_dir)?;
        let path = self.review_dir.join(format!("api_review_{}.csv", today()));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size >= self.api_queue_max_bytes {
            tracing::warn!(
                file = %path.display(),
                max_bytes = self.api_queue_max_bytes,
                "the API review queue is full for today (api_review_max_bytes in [serve]); this prediction is not queued"
            );
            return Ok(());
        }
        append_row(
            &path,
            &QUEUE_COLUMNS,
            &[
                job_title.to_string(),
                duties.to_string(),
                p.isco_code.to_string(),
                format!("{:.6}", p.confidence),
                p.grade.to_string(),
                version.to_string(),
                artifacts::timestamp(),
            ],
        )
    }

    /// Items decided in the corrections folder, with who decided them and when.
    fn decisions(&self) -> std::collections::HashMap<String, DecidedBy> {
        let files = csv_files(&self.corrections_dir, "review_");
        let mut out = std::collections::HashMap::new();
        for rows in self.decision_files.rows(&files, decisions_in) {
            for (id, by) in rows.iter() {
                out.entry(id.clone()).or_insert_with(|| by.clone());
            }
        }
        out
    }

    fn decided(&self) -> HashSet<String> {
        let mut ids = self.skipped.lock().expect("skip lock").clone();
        ids.extend(self.decisions().into_keys());
        ids
    }

    /// Undecided queued records, oldest file first, each once: how many there are, and
    /// those of them that `wanted` takes (called in that order).
    fn pending(&self, mut wanted: impl FnMut(&Queued) -> bool) -> (usize, Vec<Queued>) {
        let decided = self.decided();
        let mut files = csv_files(&self.review_dir, "to_review_");
        files.extend(csv_files(&self.review_dir, "api_review_"));
        let parsed = self.queue_files.rows(&files, queued_in);
        let mut seen = HashSet::new();
        let (mut total, mut out) = (0, Vec::new());
        for rows in &parsed {
            for q in rows.iter() {
                if decided.contains(&q.id) || !seen.insert(q.id.as_str()) {
                    continue;
                }
                total += 1;
                if wanted(q) {
                    out.push(q.clone());
                }
            }
        }
        (total, out)
    }

    /// Records a decision if the item is still undecided. The check and the append happen
    /// under one lock, shared with any other service on the same corrections folder, so of
    /// several coders deciding one item at once exactly one wins.
    fn decide(&self, d: &Decision) -> Result<PathBuf, DecideError> {
        let _g = self.write.lock().expect("review lock");
        let _folder = lock_folder(&self.corrections_dir).map_err(DecideError::Io)?;
        if let Some(by) = self.decisions().remove(&d.item_id) {
            return Err(DecideError::Taken(by));
        }
        let item = self
            .pending(|q| q.id == d.item_id)
            .1
            .pop()
            .ok_or(DecideError::Unknown)?;
        self.record(&item, d).map_err(DecideError::Io)
    }

    /// Appends a decision to `review_<date>.csv`; returns the file. The caller holds the
    /// write lock.
    fn record(&self, q: &Queued, d: &Decision) -> std::io::Result<PathBuf> {
        let path = self.corrections_dir.join(format!("review_{}.csv", today()));
        append_row(
            &path,
            &DECISION_COLUMNS,
            &[
                q.job_title.clone(),
                q.duties.clone(),
                d.isco_code.clone(),
                d.coder.trim().to_string(),
                artifacts::timestamp(),
                d.note.clone(),
                q.code.clone(),
                format!("{:.6}", q.confidence),
                q.id.clone(),
            ],
        )?;
        Ok(path)
    }
}

type St = State<Arc<AppState>>;

/// The review page's policy: its own script, style and API only; never framed.
const REVIEW_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The review page (markup only: script and style come from `/review/app.js` and
/// `/review/app.css`, so the Content-Security-Policy can forbid inline code).
pub async fn page() -> Response {
    (
        [(header::CONTENT_SECURITY_POLICY, REVIEW_CSP)],
        Html(include_str!("review.html")),
    )
        .into_response()
}

/// The review page's script.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("review.js"),
    )
        .into_response()
}

/// The review page's style sheet.
pub async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("review.css"),
    )
        .into_response()
}

/// The undecided queue with the current model's suggestions and highlighted words.
#[utoipa::path(get, path = "/review/queue", params(QueueQuery),
    responses((status = 200, body = QueueResponse), (status = 400, body = crate::types::ErrorBody), (status = 503, body = crate::types::ErrorBody)))]
pub async fn queue(
    State(st): St,
    q: Result<Query<QueueQuery>, QueryRejection>,
) -> Result<Json<QueueResponse>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let m = st.loaded()?;
    let limit = q.limit.unwrap_or(50).min(MAX_QUEUE_PAGE);
    let st2 = st.clone();
    let resp = tokio::task::spawn_blocking(move || {
        let mut room = limit;
        let (total, page) = st2.review.pending(|_| {
            let take = room > 0;
            room = room.saturating_sub(1);
            take
        });
        let items = page
            .into_iter()
            .map(|p| {
                let text = record_text(&p.job_title, &p.duties);
                let pred = m.predictor.predict_one(&text);
                let highlights = pred
                    .alternatives
                    .first()
                    .and_then(|a| explanation(&m, &text, &a.isco_code))
                    .map(|e| e.words)
                    .unwrap_or_default();
                let similar = match similar_records(&m, &text, m.predictor.config.similar) {
                    Ok(s) => s.unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!(error = %e.message, "no similar records for the review queue");
                        Vec::new()
                    }
                };
                let predicted_title = title_of(&st2, &m, &p.code);
                QueueItem {
                    id: p.id,
                    predicted_title,
                    job_title: p.job_title,
                    duties_description: p.duties,
                    source: p.source,
                    predicted_isco_code: p.code,
                    predicted_confidence: p.confidence,
                    suggested_by: pred.decided_by.into(),
                    suggestions: pred.alternatives.into_iter().map(Into::into).collect(),
                    highlights,
                    similar,
                }
            })
            .collect();
        QueueResponse { items, total }
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(resp))
}

/// Unit groups for a query: those whose code starts with it, whose title holds its words, that
/// the model codes it to (read as a job title), and whose definition holds its words.
#[utoipa::path(get, path = "/review/search", params(SearchQuery),
    responses((status = 200, body = Vec<SearchHit>), (status = 400, body = crate::types::ErrorBody), (status = 422, body = crate::types::ErrorBody)))]
pub async fn search(
    State(st): St,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Vec<SearchHit>>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let limit = q.limit.unwrap_or(20).min(200);
    if q.q.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "`q` has more than 200 characters; search with a few words of a title or the start of a code",
        ));
    }
    let hits = tokio::task::spawn_blocking(move || search_hits(&st, &q.q, limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(hits))
}

/// The least confidence at which the model's codes for a query are offered: below it they
/// are noise a coder would only have to read past.
const MODEL_HIT_FLOOR: f64 = 0.05;

/// The search's hits, each unit group once, in the order of [`SearchMatch`]; within the
/// definition matches, those naming the query's words most often first. Titles say what a
/// group is called, not what its workers are ("Nursing professionals" for a nurse), so the
/// model and the definitions' lists of occupations find what a coder types.
fn search_hits(st: &AppState, query: &str, limit: usize) -> Vec<SearchHit> {
    let words: Vec<String> = query
        .to_lowercase()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if words.is_empty() || limit == 0 {
        return Vec::new();
    }
    let model = st.model.get();
    // (code, title, definition) of every unit group, by code.
    let mut units: Vec<(String, String, String)> = match (&st.taxonomy, &model) {
        (Some(t), _) => t
            .units()
            .map(|g| (g.code.clone(), g.title.clone(), g.definition.to_lowercase()))
            .collect(),
        (None, Some(m)) => m
            .predictor
            .meta
            .labels
            .iter()
            .map(|c| (c.clone(), m.predictor.title(c).to_string(), String::new()))
            .collect(),
        (None, None) => Vec::new(),
    };
    units.sort();
    let mut hits: Vec<SearchHit> = Vec::new();
    let push = |hits: &mut Vec<SearchHit>, code: &str, title: &str, matched, confidence| {
        if hits.len() < limit && !hits.iter().any(|h| h.isco_code == code) {
            hits.push(SearchHit {
                isco_code: code.to_string(),
                title: title.to_string(),
                matched,
                confidence,
            });
        }
    };
    for (code, title, _) in &units {
        if code.starts_with(words[0].as_str()) {
            push(&mut hits, code, title, SearchMatch::Code, None);
        }
    }
    for (code, title, _) in &units {
        let t = title.to_lowercase();
        if words.iter().all(|w| t.contains(w.as_str())) {
            push(&mut hits, code, title, SearchMatch::Title, None);
        }
    }
    // A code's start is not a job title, and a query without a letter ("%", "--") names no
    // occupation (the model would only answer with its prior); anything else the model reads
    // as a job title.
    if let Some(m) = &model
        && !words[0].chars().all(|c| c.is_ascii_digit())
        && query.chars().any(char::is_alphabetic)
    {
        let pred = m.predictor.predict_one(&record_text(query, ""));
        for a in pred
            .alternatives
            .iter()
            .filter(|a| a.confidence >= MODEL_HIT_FLOOR)
        {
            let title = units
                .iter()
                .find(|u| u.0 == a.isco_code.as_str())
                .map_or(a.title.as_str(), |u| u.1.as_str());
            let (code, confidence) = (a.isco_code.as_str(), Some(a.confidence));
            push(&mut hits, code, title, SearchMatch::Model, confidence);
        }
    }
    let mut defined: Vec<(usize, &(String, String, String))> = units
        .iter()
        .filter(|u| words.iter().all(|w| u.2.contains(w.as_str())))
        .map(|u| {
            (
                words.iter().map(|w| u.2.matches(w.as_str()).count()).sum(),
                u,
            )
        })
        .collect();
    defined.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.0.cmp(&b.1.0)));
    for (_, (code, title, _)) in defined {
        push(&mut hits, code, title, SearchMatch::Definition, None);
    }
    hits
}

/// The title of a code at any level: the reference's when the service has one, else the
/// model's.
fn title_of(st: &AppState, m: &crate::model::Loaded, code: &str) -> String {
    let reference = st.taxonomy.as_ref().map(|t| t.title(code)).unwrap_or("");
    if reference.is_empty() {
        m.predictor.title(code).to_string()
    } else {
        reference.to_string()
    }
}

/// A query string that does not parse, as the JSON error every endpoint answers with.
fn bad_query(r: QueryRejection) -> ApiError {
    ApiError::bad_request(format!(
        "the query string is not valid: {}; see /docs",
        r.body_text()
    ))
}

/// Record a decision: the item's text with the chosen code becomes a correction.
#[utoipa::path(post, path = "/review/decision", request_body = Decision,
    responses((status = 201), (status = 400, body = crate::types::ErrorBody), (status = 401, body = crate::types::ErrorBody), (status = 404, body = crate::types::ErrorBody), (status = 409, body = crate::types::ErrorBody), (status = 413, body = crate::types::ErrorBody), (status = 415, body = crate::types::ErrorBody), (status = 422, body = crate::types::ErrorBody), (status = 500, description = "the corrections file of the day cannot take the decision (its header row lacks a column the page writes); the message says how to fix it", body = crate::types::ErrorBody), (status = 503, body = crate::types::ErrorBody)),
    security(("api_token" = [])))]
pub async fn decision(
    State(st): St,
    JsonBody(d): JsonBody<Decision>,
) -> Result<Response, ApiError> {
    for (name, v, max) in [
        ("coder", &d.coder, 200),
        ("note", &d.note, 2000),
        ("item_id", &d.item_id, 64),
    ] {
        if v.chars().count() > max {
            return Err(ApiError::unprocessable(format!(
                "`{name}` has more than {max} characters; shorten it"
            )));
        }
    }
    let code = d.isco_code.trim();
    if code.len() != 4 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::unprocessable(format!(
            "`{code}` is not a 4-digit ISCO-08 unit group code"
        )));
    }
    if let Some(t) = &st.taxonomy
        && let Err(why) = t.check_unit(code)
    {
        return Err(ApiError::unprocessable(why));
    }
    if d.coder.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "`coder` is empty; give your coder id (it is kept in the audit trail)",
        ));
    }
    // The corrections file keeps the code and coder as checked, not as typed.
    let d = Decision {
        isco_code: code.to_string(),
        coder: d.coder.trim().to_string(),
        ..d
    };
    let st2 = st.clone();
    let path = tokio::task::spawn_blocking(move || {
        st2.review.decide(&d).map_err(|e| match e {
            DecideError::Unknown => ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no undecided queue item `{}`; it may have been skipped — reload the queue",
                    d.item_id
                ),
            ),
            DecideError::Taken(by) => ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "queue item `{}` was already decided by coder `{}` at {}; reload the queue",
                    d.item_id, by.coder, by.at
                ),
            ),
            // The file is there but cannot take the row as it is: trying again cannot help.
            DecideError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the decision could not be saved: {e}"),
            ),
            DecideError::Io(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the decision could not be saved: {e}; try again"),
            ),
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    st.metrics.decision();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"status": "recorded", "file": path.display().to_string()})),
    )
        .into_response())
}

/// Skip an item for the rest of this server's run.
#[utoipa::path(post, path = "/review/skip", request_body = Skip,
    responses((status = 204), (status = 400, body = crate::types::ErrorBody), (status = 401, body = crate::types::ErrorBody), (status = 413, body = crate::types::ErrorBody), (status = 415, body = crate::types::ErrorBody), (status = 422, body = crate::types::ErrorBody)),
    security(("api_token" = [])))]
pub async fn skip(State(st): St, JsonBody(s): JsonBody<Skip>) -> Result<StatusCode, ApiError> {
    if s.item_id.chars().count() > 64 {
        return Err(ApiError::unprocessable(
            "`item_id` is not a queue item id (16 hex digits); reload the queue",
        ));
    }
    st.review
        .skipped
        .lock()
        .expect("skip lock")
        .insert(s.item_id);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_appended_to_a_file_a_spreadsheet_saved_goes_under_its_columns_on_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("review_20261207.csv");
        let columns = ["job_title", "isco_code"];
        let row = |title: &str, code: &str| [title.to_string(), code.to_string()];
        // (the file before, if any; the rows appended; the file after)
        let cases = [
            (
                None,
                vec![row("cook", "5120")],
                "job_title,isco_code\ncook,5120\n",
            ),
            // Saved by an editor with CRLF line ends and no last line end.
            (
                Some("job_title,isco_code\r\ncook,5120"),
                vec![row("nurse", "2221"), row("baker", "7512")],
                "job_title,isco_code\r\ncook,5120\nnurse,2221\nbaker,7512\n",
            ),
            // A spreadsheet reordered the columns and added one.
            (
                Some("\u{feff}isco_code,checked,job_title\n5120,yes,cook\n"),
                vec![row("nurse", "2221")],
                "\u{feff}isco_code,checked,job_title\n5120,yes,cook\n2221,,nurse\n",
            ),
            // One saved where the decimal mark is a comma separates its fields with `;`.
            (
                Some("job_title;isco_code\r\ncook;5120\r\n"),
                vec![row("nurse, ward", "2221")],
                "job_title;isco_code\r\ncook;5120\r\nnurse, ward;2221\n",
            ),
        ];
        for (before, rows, after) in cases {
            let _ = std::fs::remove_file(&path);
            if let Some(text) = before {
                std::fs::write(&path, text).unwrap();
            }
            for r in &rows {
                append_row(&path, &columns, r).unwrap();
            }
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{before:?}");
        }
        // One lost a column: the row is refused, the file left as it was.
        std::fs::write(&path, "job_title\ncook\n").unwrap();
        let e = append_row(&path, &columns, &["nurse".into(), "2221".into()]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            e.to_string()
                .contains("has no column `isco_code` in its header row (job_title)"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "job_title\ncook\n");
    }

    #[test]
    fn rows_append_with_one_header_and_quoting() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/review_x.csv");
        append_row(&p, &["a", "b"], &["x, y".into(), "1".into()]).unwrap();
        append_row(&p, &["a", "b"], &["z".into(), "2".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "a,b\n\"x, y\",1\nz,2\n"
        );
        assert_eq!(item_id("chef", ""), item_id("chef", ""));
        assert_ne!(item_id("chef", "a"), item_id("chefa", ""));
    }

    #[test]
    fn a_queue_row_a_spreadsheet_saved_in_its_code_page_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("to_review_20261208.csv");
        std::fs::write(
            &p,
            b"job_title;duties_description;isco_code;confidence\r\ncaf\xe9 owner;runs a caf\xe9;5120;0,4\r\nchef;cooks;5120;0.5\r\n",
        )
        .unwrap();
        let queued = queued_in(&p);
        let titles: Vec<&str> = queued.iter().map(|q| q.job_title.as_str()).collect();
        assert_eq!(titles, ["caf\u{fffd} owner", "chef"]);
    }

    #[test]
    fn a_queue_file_is_parsed_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        std::fs::write(&a, "1\n").unwrap();
        std::fs::write(&b, "x\n").unwrap();
        let parses = std::sync::atomic::AtomicUsize::new(0);
        let parse = |p: &Path| {
            parses.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let cache = ParsedFiles::new();
        let both = [a.clone(), b.clone()];
        let lines =
            |rows: Vec<Arc<Vec<String>>>| rows.iter().map(|r| r.join("+")).collect::<Vec<_>>();
        assert_eq!(lines(cache.rows(&both, parse)), ["1", "x"]);
        assert_eq!(lines(cache.rows(&both, parse)), ["1", "x"]);
        assert_eq!(parses.load(std::sync::atomic::Ordering::SeqCst), 2);
        // An append (as a decision or an API prediction makes) is seen, and only that file
        // is read again.
        append_row(&b, &["x"], &["3".into()]).unwrap();
        assert_eq!(lines(cache.rows(&both, parse)), ["1", "x+3"]);
        assert_eq!(parses.load(std::sync::atomic::Ordering::SeqCst), 3);
        // A file no longer listed is forgotten; listed again, it is read again.
        assert_eq!(lines(cache.rows(std::slice::from_ref(&b), parse)), ["x+3"]);
        assert_eq!(lines(cache.rows(&both, parse)), ["1", "x+3"]);
        assert_eq!(parses.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
