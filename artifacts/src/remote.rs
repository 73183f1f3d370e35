//! # remote — one store shared by many machines through an S3-compatible bucket
//!
//! A team shares work the way DVC remotes do: `push` uploads objects, run-cache entries, run
//! records and refs; `pull` brings them down; a run with a remote looks each stale stage's
//! key up there before computing it and uploads what it computed. The bucket mirrors the
//! local layout under its prefix:
//!
//! ```text
//! s3://bucket/prefix/
//!   objects/ab/cdef…     immutable blobs named by the blake3 hash of their content
//!   cache/<key>.json     run-cache entries (the outputs a stage key produced)
//!   runs/<id>.json       run records
//!   refs/<name>.json     named refs (`best`)
//! ```
//!
//! What a reader of the remote can rely on:
//! - **Objects before records.** Every object of an entry (and of a ref's target) is uploaded
//!   before the entry or ref that points at it, so a record on the remote always has its
//!   objects, whenever the uploader died.
//! - **Nothing half-visible.** An object of up to [`SINGLE_PUT_MAX`] bytes goes up in one PUT,
//!   which S3 makes visible only once complete; a larger one goes up as a multipart upload
//!   that is completed only after its last part, so a killed upload leaves an unfinished
//!   multipart upload that no reader sees (it is aborted on error, and a bucket lifecycle
//!   rule removes what a killed process left).
//! - **Checked on the way in.** Every object is hashed as it is downloaded; one whose content
//!   does not match its name is refused with [`Error::RemoteCorrupt`] and never enters the
//!   local store.
//! - **No lost promotion.** Refs move with conditional writes: a new ref with
//!   `If-None-Match: *`, a moved one with `If-Match` on the ETag this store last saw
//!   (kept in `<store>/remote-refs/`). If another machine moved the ref meanwhile, the write
//!   is refused and [`Error::RefConflict`] names both targets; nothing is overwritten.
//!
//! Credentials come from the usual AWS environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL`), else from the shared credentials file's `AWS_PROFILE` (default
//! `default`) profile, else from the instance's metadata service as `object_store` does.
//!
//! `ISCO_DAG_REMOTE_ABORT_AFTER=N` makes the process abort (as `kill -9` would) just before
//! its N+1-th upload request: the crash-safety tests use it to stop a push at a known point.
use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as RemotePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::object::{ObjectId, OutputRef};
use crate::records::{CacheEntry, RefRecord, RunRecord};
use crate::store::Store;

/// Objects up to this size go up in one PUT; larger ones as a multipart upload of parts of
/// this size (S3 asks for at least 5 MiB per part).
pub const SINGLE_PUT_MAX: u64 = 16 << 20;

/// The `[remote]` section: where the shared store lives.
///
/// ```toml
/// [remote]
/// url = "s3://bucket/isco-dag"        # bucket and optional prefix
/// endpoint = "http://127.0.0.1:5000"  # an S3-compatible server (default: AWS)
/// region = "us-east-1"
/// allow_http = true                   # only for a server on a trusted network
/// transfers = 8                       # uploads/downloads at once
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSettings {
    /// `s3://bucket[/prefix]`.
    pub url: String,
    /// An S3-compatible server's address (default: AWS, or `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region (default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Allow plain HTTP (default: only when the endpoint is `http://…`).
    #[serde(default)]
    pub allow_http: Option<bool>,
    /// Transfers at once.
    #[serde(default = "default_transfers")]
    pub transfers: usize,
}

fn default_transfers() -> usize {
    8
}

impl RemoteSettings {
    /// Settings for a URL alone (endpoint, region and credentials from the environment).
    pub fn from_url(url: &str) -> RemoteSettings {
        RemoteSettings {
            url: url.to_string(),
            endpoint: None,
            region: None,
            allow_http: None,
            transfers: default_transfers(),
        }
    }
}

/// What a transfer moved.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Transfer {
    /// Objects moved.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Run-cache entries moved.
    pub entries: usize,
    /// Run records moved.
    pub runs: usize,
}

impl Transfer {
    fn add(&mut self, o: &Transfer) {
        self.objects += o.objects;
        self.bytes += o.bytes;
        self.entries += o.entries;
        self.runs += o.runs;
    }
}

/// What happened to one ref in a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RefSync {
    /// Both sides point at the same target.
    Same {
        /// Ref name.
        name: String,
    },
    /// The remote now points where this store does.
    Pushed {
        /// Ref name.
        name: String,
        /// The new target.
        target: ObjectId,
    },
    /// This store now points where the remote does.
    Pulled {
        /// Ref name.
        name: String,
        /// The new target.
        target: ObjectId,
    },
    /// The remote moved and this store did not: `pull` takes it.
    Behind {
        /// Ref name.
        name: String,
    },
    /// This store moved and the remote did not: `push` publishes it.
    Ahead {
        /// Ref name.
        name: String,
    },
}

impl RefSync {
    /// Whether the ref moved on either side.
    pub fn moved(&self) -> bool {
        matches!(self, RefSync::Pushed { .. } | RefSync::Pulled { .. })
    }
}

impl std::fmt::Display for RefSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefSync::Same { name } => write!(f, "ref `{name}`: the same on both sides"),
            RefSync::Pushed { name, target } => {
                write!(f, "ref `{name}` published to the remote ({target})")
            }
            RefSync::Pulled { name, target } => {
                write!(f, "ref `{name}` taken from the remote ({target})")
            }
            RefSync::Behind { name } => write!(
                f,
                "ref `{name}`: the remote moved it; `isco-dag pull` takes it"
            ),
            RefSync::Ahead { name } => write!(
                f,
                "ref `{name}`: this store moved it; `isco-dag push` publishes it"
            ),
        }
    }
}

/// What this store last saw of a remote ref.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeenRef {
    e_tag: Option<String>,
    version: Option<String>,
    target: ObjectId,
}

/// A connection to the shared store.
pub struct Remote {
    os: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    rt: tokio::runtime::Runtime,
    transfers: usize,
    requests: AtomicUsize,
    abort_after: Option<usize>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url()).finish()
    }
}

/// Access keys from the shared credentials file (`~/.aws/credentials`, or
/// `AWS_SHARED_CREDENTIALS_FILE`), profile `AWS_PROFILE` (default `default`). `object_store`
/// reads only environment variables and instance metadata; the AWS SDK's own config crate
/// would bring the whole SDK for what is a few `key = value` lines under `[profile]`.
fn profile_credentials() -> Option<(String, String, Option<String>)> {
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws/credentials")))?;
    let text = fs::read_to_string(file).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let mut in_profile = false;
    let (mut key, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => key = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((key?, secret?, token))
}

fn remote_err(action: &'static str, url: String) -> impl FnOnce(object_store::Error) -> Error {
    move |e| Error::Remote {
        action,
        url,
        message: e.to_string(),
    }
}

fn object_rel(id: &str) -> String {
    format!("objects/{}/{}", &id[..2], &id[2..])
}

impl Remote {
    /// Connects to the remote the settings name (no request is made yet).
    pub fn open(s: &RemoteSettings) -> Result<Remote> {
        let rest = s.url.strip_prefix("s3://").ok_or_else(|| {
            Error::RemoteConfig(format!(
                "url `{}` is not an S3 address; write `s3://bucket` or `s3://bucket/prefix`",
                s.url
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::RemoteConfig(format!(
                "url `{}` names no bucket; write `s3://bucket` or `s3://bucket/prefix`",
                s.url
            )));
        }
        if s.transfers == 0 {
            return Err(Error::RemoteConfig(
                "`transfers` is 0; set it to 1 or more".into(),
            ));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && let Some((key, secret, token)) = profile_credentials()
        {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
            if let Some(t) = token {
                b = b.with_token(t);
            }
        }
        let endpoint = s
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e);
        }
        let region = s
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(region);
        let allow_http = s.allow_http.unwrap_or_else(|| {
            endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
        });
        b = b.with_allow_http(allow_http);
        let os = b
            .build()
            .map_err(|e| Error::RemoteConfig(format!("{e}; check `url` and `endpoint`")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::RemoteConfig(format!("cannot start the I/O runtime: {e}")))?;
        Ok(Remote {
            os: Arc::new(os),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            rt,
            transfers: s.transfers,
            requests: AtomicUsize::new(0),
            abort_after: std::env::var("ISCO_DAG_REMOTE_ABORT_AFTER")
                .ok()
                .and_then(|v| v.parse().ok()),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn path(&self, rel: &str) -> RemotePath {
        if self.prefix.is_empty() {
            RemotePath::from(rel)
        } else {
            RemotePath::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn url_of(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url())
    }

    /// Counts an upload request; aborts the process at the fault-injection point.
    fn tick(&self) {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if self.abort_after.is_some_and(|a| n >= a) {
            std::process::abort();
        }
    }

    // ---- primitives -----------------------------------------------------------------------

    async fn exists(&self, rel: &str) -> Result<bool> {
        match self.os.head(&self.path(rel)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(remote_err("look up", self.url_of(rel))(e)),
        }
    }

    /// A record's bytes and version, or `None` when it is not there.
    async fn get_record(&self, rel: &str) -> Result<Option<(Vec<u8>, UpdateVersion)>> {
        match self.os.get(&self.path(rel)).await {
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r
                    .bytes()
                    .await
                    .map_err(remote_err("download", self.url_of(rel)))?;
                Ok(Some((bytes.to_vec(), version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote_err("download", self.url_of(rel))(e)),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, rel: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| Error::RemoteBadRecord {
            url: self.url_of(rel),
            message: e.to_string(),
        })
    }

    /// Writes a record; `mode` decides what may be replaced.
    async fn put_record(&self, rel: &str, bytes: Vec<u8>, mode: PutMode) -> Result<PutOutcome> {
        self.tick();
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .os
            .put_opts(&self.path(rel), PutPayload::from(bytes), opts)
            .await
        {
            Ok(r) => Ok(PutOutcome::Written(UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            })),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::Refused),
            Err(e) => Err(remote_err("upload", self.url_of(rel))(e)),
        }
    }

    /// Every name under `sub/` (relative to it).
    async fn list(&self, sub: &str) -> Result<Vec<String>> {
        let base = self.path(sub);
        let base_s = format!("{}/", base.as_ref());
        self.os
            .list(Some(&base))
            .map_err(|e| remote_err("list", self.url_of(sub))(e))
            .map_ok(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(&base_s)
                    .unwrap_or(m.location.as_ref())
                    .to_string()
            })
            .try_collect()
            .await
    }

    /// Every object id on the remote.
    async fn remote_objects(&self) -> Result<HashSet<String>> {
        Ok(self
            .list("objects")
            .await?
            .into_iter()
            .map(|n| n.replace('/', ""))
            .collect())
    }

    /// Uploads one local object (checked intact first).
    async fn upload_object(&self, store: &Store, id: &str) -> Result<u64> {
        if !store.object_ok(id) {
            return Err(Error::MissingObject {
                id: id.to_string(),
                store: store.root().to_path_buf(),
            });
        }
        let src = store.object_path(id);
        let rel = object_rel(id);
        let url = self.url_of(&rel);
        let size = fs::metadata(&src).io("stat", &src)?.len();
        let dest = self.path(&rel);
        if size <= SINGLE_PUT_MAX {
            let bytes = fs::read(&src).io("read", &src)?;
            self.tick();
            self.os
                .put(&dest, PutPayload::from(bytes))
                .await
                .map_err(remote_err("upload", url))?;
            return Ok(size);
        }
        let mut upload = self
            .os
            .put_multipart(&dest)
            .await
            .map_err(remote_err("start uploading", url.clone()))?;
        let result: Result<()> = async {
            let mut file = File::open(&src).io("read", &src)?;
            loop {
                let mut part = Vec::with_capacity(SINGLE_PUT_MAX as usize);
                (&mut file)
                    .take(SINGLE_PUT_MAX)
                    .read_to_end(&mut part)
                    .io("read", &src)?;
                if part.is_empty() {
                    break;
                }
                self.tick();
                upload
                    .put_part(PutPayload::from(part))
                    .await
                    .map_err(remote_err("upload a part of", url.clone()))?;
            }
            self.tick();
            upload
                .complete()
                .await
                .map_err(remote_err("complete the upload of", url.clone()))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = upload.abort().await;
        }
        result.map(|()| size)
    }

    /// Downloads one object into the local store, hashing it on the way; refuses one whose
    /// content does not match its name.
    async fn download_object(&self, store: &Store, id: &str) -> Result<u64> {
        let rel = object_rel(id);
        let url = self.url_of(&rel);
        let got = self.os.get(&self.path(&rel)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::Remote {
                action: "download",
                url: url.clone(),
                message:
                    "a record on the remote names this object but it is not there (was it deleted?)"
                        .into(),
            },
            e => remote_err("download", url.clone())(e),
        })?;
        let tmp = store.temp_path("download");
        let result: Result<(String, u64)> = async {
            let mut file = File::create(&tmp).io("create", &tmp)?;
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(remote_err("download", url.clone()))?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).io("write", &tmp)?;
            }
            Ok((hasher.finalize().to_hex().to_string(), size))
        }
        .await;
        let (hash, size) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if hash != id {
            let _ = fs::remove_file(&tmp);
            return Err(Error::RemoteCorrupt { url, got: hash });
        }
        store.adopt_hashed(&tmp, id)?;
        Ok(size)
    }

    /// Uploads the objects the remote lacks (`known`: ids it is known to hold, to which the
    /// uploaded ones are added).
    async fn upload_objects(
        &self,
        store: &Store,
        ids: Vec<ObjectId>,
        known: &mut HashSet<String>,
    ) -> Result<Transfer> {
        let mut todo = Vec::new();
        for id in ids {
            if !known.contains(id.as_str()) && !todo.contains(&id) {
                todo.push(id);
            }
        }
        let sizes: Vec<u64> = futures_util::stream::iter(todo.iter())
            .map(|id| self.upload_object(store, id))
            .buffer_unordered(self.transfers)
            .try_collect()
            .await?;
        known.extend(todo.iter().map(|id| id.to_string()));
        Ok(Transfer {
            objects: sizes.len(),
            bytes: sizes.iter().sum(),
            ..Default::default()
        })
    }

    /// Downloads an output's objects that the local store lacks (a tree before its files).
    async fn download_output(&self, store: &Store, out: &OutputRef) -> Result<Transfer> {
        let mut t = Transfer::default();
        if out.kind == crate::object::OutputKind::Dir && !store.object_ok(&out.id) {
            t.bytes += self.download_object(store, &out.id).await?;
            t.objects += 1;
        }
        let ids: Vec<ObjectId> = store
            .output_objects(out)?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !store.object_ok(id))
            .collect();
        let sizes: Vec<u64> = futures_util::stream::iter(ids.iter())
            .map(|id| self.download_object(store, id))
            .buffer_unordered(self.transfers)
            .try_collect()
            .await?;
        t.objects += sizes.len();
        t.bytes += sizes.iter().sum::<u64>();
        Ok(t)
    }

    /// The ids of an entry's objects in the local store.
    fn entry_objects(store: &Store, outputs: &[&OutputRef]) -> Result<Vec<ObjectId>> {
        let mut ids = Vec::new();
        for o in outputs {
            ids.extend(store.output_objects(o)?.into_iter().map(|(id, _)| id));
        }
        Ok(ids)
    }

    async fn publish_entry_async(
        &self,
        store: &Store,
        entry: &CacheEntry,
        known: &mut HashSet<String>,
    ) -> Result<Transfer> {
        let outs: Vec<&OutputRef> = entry.outputs.values().collect();
        let ids = Self::entry_objects(store, &outs)?;
        let mut t = self.upload_objects(store, ids, known).await?;
        let rel = format!("cache/{}.json", entry.key);
        let bytes = serde_json::to_vec_pretty(entry).expect("entry serialises");
        if let PutOutcome::Written(_) = self.put_record(&rel, bytes, PutMode::Create).await? {
            t.entries += 1;
        }
        Ok(t)
    }

    async fn fetch_entry_async(
        &self,
        store: &Store,
        key: &str,
    ) -> Result<Option<(CacheEntry, Transfer)>> {
        let rel = format!("cache/{key}.json");
        let Some((bytes, _)) = self.get_record(&rel).await? else {
            return Ok(None);
        };
        let entry: CacheEntry = self.parse(&rel, &bytes)?;
        let mut t = Transfer::default();
        for out in entry.outputs.values() {
            t.add(&self.download_output(store, out).await?);
        }
        store.write_cache_entry(&entry)?;
        t.entries += 1;
        Ok(Some((entry, t)))
    }

    // ---- what the runner uses -----------------------------------------------------------

    /// The remote's run-cache entry for `key`, without its objects.
    pub fn peek_entry(&self, key: &str) -> Result<Option<CacheEntry>> {
        let rel = format!("cache/{key}.json");
        match self.rt.block_on(self.get_record(&rel))? {
            Some((bytes, _)) => Ok(Some(self.parse(&rel, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Looks `key` up on the remote; when found, downloads its outputs' objects (checked) and
    /// its entry into the local run-cache, and returns the entry.
    pub fn fetch_entry(&self, store: &Store, key: &str) -> Result<Option<(CacheEntry, Transfer)>> {
        self.rt.block_on(self.fetch_entry_async(store, key))
    }

    /// Makes sure the remote holds the local run-cache entry for `key` and its objects.
    pub fn ensure_entry(&self, store: &Store, key: &str) -> Result<Transfer> {
        self.rt.block_on(async {
            if self.exists(&format!("cache/{key}.json")).await? {
                return Ok(Transfer::default());
            }
            let Some(entry) = store.cache_entry(key)? else {
                return Ok(Transfer::default());
            };
            let mut known = HashSet::new();
            let outs: Vec<&OutputRef> = entry.outputs.values().collect();
            for id in Self::entry_objects(store, &outs)? {
                if self.exists(&object_rel(&id)).await? {
                    known.insert(id.to_string());
                }
            }
            self.publish_entry_async(store, &entry, &mut known).await
        })
    }

    /// Uploads a run record (replacing the remote's copy of the same run).
    pub fn push_run(&self, run: &RunRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(run).expect("run serialises");
        self.rt
            .block_on(self.put_record(&format!("runs/{}.json", run.id), bytes, PutMode::Overwrite))
            .map(|_| ())
    }

    // ---- push and pull ------------------------------------------------------------------

    /// Uploads every run-cache entry whose outputs are intact here, with their objects, every
    /// run record the remote lacks, and the refs (see [`Remote::sync_refs`]; with `ours`, a
    /// ref the remote moved is replaced by this store's). The refs' outcome is returned
    /// apart, so a ref conflict still reports what was uploaded.
    pub fn push(&self, store: &Store, ours: bool) -> Result<(Transfer, Result<Vec<RefSync>>)> {
        let mut t = Transfer::default();
        self.rt.block_on(async {
            let mut known = self.remote_objects().await?;
            let remote_entries: HashSet<String> = self.list("cache").await?.into_iter().collect();
            for entry in store.cache_entries()? {
                if remote_entries.contains(&format!("{}.json", entry.key))
                    || !entry.outputs.values().all(|o| store.output_intact(o))
                {
                    continue;
                }
                t.add(&self.publish_entry_async(store, &entry, &mut known).await?);
            }
            let remote_runs: HashSet<String> = self.list("runs").await?.into_iter().collect();
            for run in store.runs()? {
                if run.status == crate::records::RunStatus::Running
                    || remote_runs.contains(&format!("{}.json", run.id))
                {
                    continue;
                }
                let bytes = serde_json::to_vec_pretty(&run).expect("run serialises");
                self.put_record(&format!("runs/{}.json", run.id), bytes, PutMode::Overwrite)
                    .await?;
                t.runs += 1;
            }
            Ok::<_, Error>(())
        })?;
        let refs = self.sync_refs(store, Direction::Push { ours });
        Ok((t, refs))
    }

    /// Downloads every run-cache entry the local store lacks (or holds damaged), with its
    /// objects, every run record it lacks, and the refs (see [`Remote::sync_refs`]; with
    /// `theirs`, a ref both sides moved takes the remote's target), returned apart as for
    /// [`Remote::push`].
    pub fn pull(&self, store: &Store, theirs: bool) -> Result<(Transfer, Result<Vec<RefSync>>)> {
        let mut t = Transfer::default();
        self.rt.block_on(async {
            for name in self.list("cache").await? {
                let Some(key) = name.strip_suffix(".json") else {
                    continue;
                };
                if let Some(e) = store.cache_entry(key)?
                    && e.outputs.values().all(|o| store.output_intact(o))
                {
                    continue;
                }
                if let Some((_, got)) = self.fetch_entry_async(store, key).await? {
                    t.add(&got);
                }
            }
            let local: BTreeSet<String> = store.runs()?.into_iter().map(|r| r.id).collect();
            for name in self.list("runs").await? {
                let Some(id) = name.strip_suffix(".json") else {
                    continue;
                };
                if local.contains(id) {
                    continue;
                }
                let rel = format!("runs/{name}");
                if let Some((bytes, _)) = self.get_record(&rel).await? {
                    let run: RunRecord = self.parse(&rel, &bytes)?;
                    store.write_run(&run)?;
                    t.runs += 1;
                }
            }
            Ok::<_, Error>(())
        })?;
        let refs = self.sync_refs(store, Direction::Pull { theirs });
        Ok((t, refs))
    }

    // ---- refs ---------------------------------------------------------------------------

    fn seen_path(store: &Store, name: &str) -> PathBuf {
        store
            .root()
            .join("remote-refs")
            .join(format!("{name}.json"))
    }

    fn seen(store: &Store, name: &str) -> Option<SeenRef> {
        let bytes = fs::read(Self::seen_path(store, name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn remember(store: &Store, name: &str, v: &UpdateVersion, target: &ObjectId) -> Result<()> {
        let p = Self::seen_path(store, name);
        let bytes = serde_json::to_vec_pretty(&SeenRef {
            e_tag: v.e_tag.clone(),
            version: v.version.clone(),
            target: target.clone(),
        })
        .expect("seen ref serialises");
        crate::atomic::atomic_write(&p, &bytes)
    }

    /// Brings refs in line in one direction. Push: each local ref the remote lacks or holds
    /// at the version this store last saw is written with a conditional put. Pull: each
    /// remote ref this store has not moved since it last saw it is taken (its target's
    /// objects are downloaded first). A ref moved on both sides is a [`Error::RefConflict`]
    /// unless `ours` (push) or `theirs` (pull) says which side wins.
    pub fn sync_refs(&self, store: &Store, dir: Direction) -> Result<Vec<RefSync>> {
        self.rt.block_on(async {
            let mut names: BTreeSet<String> = store.refs()?.into_iter().map(|r| r.name).collect();
            if matches!(dir, Direction::Pull { .. }) {
                for n in self.list("refs").await? {
                    if let Some(name) = n.strip_suffix(".json") {
                        names.insert(name.to_string());
                    }
                }
            }
            let mut out = Vec::new();
            for name in names {
                out.push(self.sync_ref(store, &name, dir).await?);
            }
            Ok(out)
        })
    }

    async fn sync_ref(&self, store: &Store, name: &str, dir: Direction) -> Result<RefSync> {
        let rel = format!("refs/{name}.json");
        let local = store.get_ref(name)?;
        let remote = match self.get_record(&rel).await? {
            Some((bytes, v)) => Some((self.parse::<RefRecord>(&rel, &bytes)?, v)),
            None => None,
        };
        let seen = Self::seen(store, name);
        let same = |a: &RefRecord, b: &RefRecord| a.target == b.target;
        let name_s = name.to_string();
        match (local, remote) {
            (None, None) => Ok(RefSync::Same { name: name_s }),
            (Some(l), Some((r, v))) if same(&l, &r) => {
                Self::remember(store, name, &v, &r.target.id)?;
                Ok(RefSync::Same { name: name_s })
            }
            (Some(l), remote) => {
                let remote_moved = match (&remote, &seen) {
                    (None, _) => false,
                    (Some((_, v)), Some(s)) => s.e_tag != v.e_tag || s.version != v.version,
                    (Some(_), None) => true,
                };
                let local_moved = seen.as_ref().is_none_or(|s| s.target != l.target.id);
                let conflict = |r: &RefRecord| Error::RefConflict {
                    name: name_s.clone(),
                    local: l.target.id.to_string(),
                    local_at: l.updated_at.clone(),
                    remote: r.target.id.to_string(),
                    remote_at: r.updated_at.clone(),
                };
                match dir {
                    Direction::Push { ours } => {
                        if let Some((r, _)) = &remote
                            && remote_moved
                        {
                            if !local_moved {
                                return Ok(RefSync::Behind { name: name_s });
                            }
                            if !ours {
                                return Err(conflict(r));
                            }
                        }
                        let mut known = self.remote_objects().await?;
                        let ids = Self::entry_objects(store, &[&l.target])?;
                        self.upload_objects(store, ids, &mut known).await?;
                        let mode = match &remote {
                            None => PutMode::Create,
                            Some((_, v)) => PutMode::Update(v.clone()),
                        };
                        let bytes = serde_json::to_vec_pretty(&l).expect("ref serialises");
                        match self.put_record(&rel, bytes, mode).await? {
                            PutOutcome::Written(v) => {
                                Self::remember(store, name, &v, &l.target.id)?;
                                Ok(RefSync::Pushed {
                                    name: name_s,
                                    target: l.target.id.clone(),
                                })
                            }
                            PutOutcome::Refused => {
                                // Another store moved it between our read and our write.
                                let now = match self.get_record(&rel).await? {
                                    Some((bytes, _)) => self.parse::<RefRecord>(&rel, &bytes)?,
                                    None => l.clone(),
                                };
                                Err(conflict(&now))
                            }
                        }
                    }
                    Direction::Pull { theirs } => match remote {
                        None => Ok(RefSync::Ahead { name: name_s }),
                        Some((r, v)) => {
                            if !remote_moved {
                                return Ok(RefSync::Ahead { name: name_s });
                            }
                            if local_moved && !theirs {
                                return Err(conflict(&r));
                            }
                            self.take_ref(store, name, r, &v).await
                        }
                    },
                }
            }
            (None, Some((r, v))) => match dir {
                Direction::Push { .. } => Ok(RefSync::Behind { name: name_s }),
                Direction::Pull { .. } => self.take_ref(store, name, r, &v).await,
            },
        }
    }

    async fn take_ref(
        &self,
        store: &Store,
        name: &str,
        r: RefRecord,
        v: &UpdateVersion,
    ) -> Result<RefSync> {
        self.download_output(store, &r.target).await?;
        let target = r.target.id.clone();
        store.set_ref(r)?;
        Self::remember(store, name, v, &target)?;
        Ok(RefSync::Pulled {
            name: name.to_string(),
            target,
        })
    }
}

/// Which way [`Remote::sync_refs`] moves refs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Publish this store's refs; `ours` replaces refs the remote moved.
    Push {
        /// This store's refs win a conflict.
        ours: bool,
    },
    /// Take the remote's refs; `theirs` replaces refs this store moved.
    Pull {
        /// The remote's refs win a conflict.
        theirs: bool,
    },
}

enum PutOutcome {
    Written(UpdateVersion),
    Refused,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_must_name_an_s3_bucket() {
        let e = Remote::open(&RemoteSettings::from_url("gs://x")).unwrap_err();
        assert!(e.to_string().contains("not an S3 address"), "{e}");
        let e = Remote::open(&RemoteSettings::from_url("s3:///prefix")).unwrap_err();
        assert!(e.to_string().contains("names no bucket"), "{e}");
        let r = Remote::open(&RemoteSettings::from_url("s3://b/team/x/")).unwrap();
        assert_eq!(r.url(), "s3://b/team/x");
        assert_eq!(r.path("cache/k.json").as_ref(), "team/x/cache/k.json");
        let r = Remote::open(&RemoteSettings::from_url("s3://b")).unwrap();
        assert_eq!(r.path("refs/best.json").as_ref(), "refs/best.json");
    }

    #[test]
    fn unknown_settings_are_refused() {
        let e = serde_json::from_str::<RemoteSettings>(r#"{"url": "s3://b", "endpiont": "x"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("endpiont"), "{e}");
    }

    #[test]
    fn profile_credentials_are_read_from_the_named_profile() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        fs::write(
            &f,
            "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n# team\n[team]\naws_access_key_id=C\naws_secret_access_key= D\naws_session_token = T\n",
        )
        .unwrap();
        // SAFETY: this test alone sets these variables.
        unsafe {
            std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &f);
            std::env::set_var("AWS_PROFILE", "team");
        }
        assert_eq!(
            profile_credentials(),
            Some(("C".into(), "D".into(), Some("T".into())))
        );
        unsafe {
            std::env::set_var("AWS_PROFILE", "default");
        }
        assert_eq!(profile_credentials(), Some(("A".into(), "B".into(), None)));
        unsafe {
            std::env::remove_var("AWS_SHARED_CREDENTIALS_FILE");
            std::env::remove_var("AWS_PROFILE");
        }
    }
}
