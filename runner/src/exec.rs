//! The scheduler: decides freshness, restores from the run-cache, runs stale stages in
//! parallel, and records the run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Instant;

use artifacts::{
    CacheEntry, ObjectId, OutputRef, RunRecord, RunStatus, StageOutcome, StageRecord, StageRun,
    Store,
};
use serde::Serialize;

use crate::dag::Dag;
use crate::error::{Error, Result};
use crate::fingerprint::{CACHE_VERSION, DirtyReason, Fingerprint, InputHash, StageKey};
use crate::spec::{InputRef, Pipeline, StageSpec};
use crate::stage::{Progress, StageContext};
use crate::workspace::{self, WorkspaceDrift};

/// Which stages `--force` applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Force {
    /// Every selected stage.
    All,
    /// One stage.
    Stage(String),
}

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Report what would happen; change nothing.
    pub dry_run: bool,
    /// Re-run regardless of freshness.
    pub force: Option<Force>,
    /// Run this stage and everything it depends on, nothing after it.
    pub until: Option<String>,
    /// Run only this stage (its upstream outputs come from their last successful runs).
    pub only: Option<String>,
    /// Stages run at once (0 = number of cores).
    pub jobs: usize,
    /// Fail instead of waiting when another run holds the store lock.
    pub no_wait: bool,
    /// Progress bars (one per running stage), if the caller shows them.
    pub progress: Option<indicatif::MultiProgress>,
    /// The shared store (`run --remote`): a stale stage's key is looked up there before the
    /// stage is computed (and restored from it when found), what the run computes is
    /// uploaded, refs are taken from it before the run and published after it.
    pub remote: Option<std::sync::Arc<artifacts::Remote>>,
}

/// What the scheduler tells its caller while it works.
#[derive(Debug, Clone)]
pub enum Event {
    /// Another process holds the store lock; waiting.
    WaitingForLock {
        /// Who holds it.
        holder: String,
    },
    /// A previous holder died with the lock; it was recovered.
    LockRecovered {
        /// Who held it.
        holder: String,
    },
    /// The run is recorded under this id (not sent for dry runs).
    RunStarted {
        /// Run id.
        id: String,
    },
    /// A stage is about to execute.
    Started {
        /// Stage id.
        id: String,
        /// Why.
        reasons: Vec<DirtyReason>,
    },
    /// Something went wrong that does not stop the run.
    Warning(String),
    /// What the run moved to or from the remote (refs taken or published, uploads).
    Remote(String),
    /// A stage finished (executed, skipped, restored, failed, blocked, would run).
    Finished {
        /// The stage's line of the run record.
        run: StageRun,
        /// Summary lines the stage reported.
        summary: Vec<String>,
        /// What the run did to the stage's workspace copies beyond writing its outputs (a
        /// deleted or replaced copy put back, an edited one moved aside first).
        workspace: Vec<String>,
    },
}

/// The result of [`run_pipeline`].
pub type RunSummary = RunRecord;

/// Whether a stage would run, as `status` reports it (`"fresh"`, `"stale"`, `"frozen"` in
/// JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    /// Its key matches its last successful execution: it would be skipped.
    Fresh,
    /// Something it depends on changed: it would run, or be restored from the run-cache.
    Stale,
    /// Stale, but declared frozen: it keeps its last results and would not run.
    Frozen,
}

/// Freshness of one stage, as `status` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    /// Stage id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Whether the stage would run.
    pub state: StageState,
    /// Why it is stale (empty when fresh).
    pub reasons: Vec<DirtyReason>,
    /// Whether a stale stage's key is in the run-cache (it will be restored, not executed).
    pub restorable: bool,
    /// Key, when it could be computed.
    pub key: Option<StageKey>,
    /// A fresh or frozen stage's workspace copies that do not hold its outputs (deleted,
    /// edited, or replaced since).
    pub workspace: Vec<WorkspaceDrift>,
}

type Outputs = BTreeMap<String, OutputRef>;

/// Memoised content hashes within one command.
#[derive(Default)]
struct HashMemo(Mutex<HashMap<PathBuf, ObjectId>>);

impl HashMemo {
    fn hash(&self, path: &Path) -> Result<ObjectId> {
        if let Some(h) = self.0.lock().expect("memo").get(path) {
            return Ok(h.clone());
        }
        let (h, _) = artifacts::hash_file(path)?;
        self.0
            .lock()
            .expect("memo")
            .insert(path.to_path_buf(), h.clone());
        Ok(h)
    }
}

fn expand_file(root: &Path, rel: &str, out: &mut Vec<String>) {
    let p = root.join(rel);
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(&p)
            .map(|rd| rd.filter_map(|e| e.ok()).collect())
            .unwrap_or_default();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            expand_file(root, &format!("{rel}/{name}"), out);
        }
    } else {
        out.push(rel.to_string());
    }
}

/// A stage's fingerprint, or why it cannot be computed yet.
enum Inputs {
    /// Every input is known.
    Known(Fingerprint),
    /// Upstream stages are stale, so their outputs (and this stage's key) are not known yet.
    UpstreamStale(Vec<DirtyReason>),
}

/// Computes the fingerprint of a stage, given the outputs of its upstream stages.
fn fingerprint(
    spec: &StageSpec,
    p: &Pipeline,
    store: &Store,
    upstream: &BTreeMap<String, Outputs>,
    memo: &HashMemo,
) -> Result<Inputs> {
    let mut inputs = BTreeMap::new();
    let mut stale = BTreeSet::new();
    for (name, refs) in &spec.inputs {
        let mut hashes = Vec::new();
        for r in refs {
            match r {
                InputRef::File(rel) => {
                    let mut files = Vec::new();
                    expand_file(&p.root, rel, &mut files);
                    for f in files {
                        let blake3 = memo.hash(&p.root.join(&f)).map_err(|_| Error::Spec {
                            path: spec.defined_in.clone(),
                            line: Some(spec.line),
                            message: format!(
                                "input `{name}` of stage `{}` is `{f}`, which can no longer be read; restore it or fix the path",
                                spec.id
                            ),
                        })?;
                        hashes.push(InputHash::File { path: f, blake3 });
                    }
                }
                InputRef::Glob { files, .. } => {
                    for f in files {
                        let blake3 = memo.hash(&p.root.join(f))?;
                        hashes.push(InputHash::File {
                            path: f.clone(),
                            blake3,
                        });
                    }
                }
                InputRef::Stage { stage, output } => match upstream.get(stage) {
                    Some(outs) => {
                        let o = outs.get(output).ok_or_else(|| Error::UpstreamMissing {
                            stage: spec.id.clone(),
                            upstream: stage.clone(),
                        })?;
                        hashes.push(InputHash::Stage {
                            stage: stage.clone(),
                            output: output.clone(),
                            blake3: o.id.clone(),
                        });
                    }
                    None => {
                        stale.insert(stage.clone());
                    }
                },
            }
        }
        inputs.insert(name.clone(), hashes);
    }
    for a in &spec.after {
        if !upstream.contains_key(a) {
            stale.insert(a.clone());
        }
    }
    if !stale.is_empty() {
        return Ok(Inputs::UpstreamStale(
            stale
                .into_iter()
                .map(|stage| DirtyReason::UpstreamStale { stage })
                .collect(),
        ));
    }
    let params = match &spec.params {
        serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    };
    let external = spec
        .stage
        .external_state(store, &spec.params)
        .map_err(|e| Error::Spec {
            path: spec.defined_in.clone(),
            line: Some(spec.line),
            message: format!("stage `{}`: {e}", spec.id),
        })?;
    Ok(Inputs::Known(Fingerprint {
        cache_version: CACHE_VERSION,
        kind: spec.kind.clone(),
        version: spec.stage.version().to_string(),
        params,
        inputs,
        external,
    }))
}

enum Fresh {
    Yes(StageRecord),
    No(Vec<DirtyReason>),
}

fn check_fresh(store: &Store, spec: &StageSpec, fp: &Fingerprint, key: &str) -> Result<Fresh> {
    let Some(rec) = store.stage_record(&spec.id)? else {
        return Ok(Fresh::No(vec![DirtyReason::NeverRun]));
    };
    if rec.key == key {
        let missing: Vec<DirtyReason> = spec
            .outputs
            .keys()
            .filter(|name| {
                !rec.outputs
                    .get(*name)
                    .is_some_and(|o| store.output_intact(o))
            })
            .map(|name| DirtyReason::OutputMissing {
                output: name.clone(),
            })
            .collect();
        return Ok(if missing.is_empty() {
            Fresh::Yes(rec)
        } else {
            Fresh::No(missing)
        });
    }
    let reasons = match serde_json::from_value::<Fingerprint>(rec.fingerprint.clone()) {
        Ok(old) => fp.diff(&old),
        Err(_) => Vec::new(),
    };
    Ok(Fresh::No(if reasons.is_empty() {
        vec![DirtyReason::FingerprintUnreadable]
    } else {
        reasons
    }))
}

/// For a frozen stage: its last successful result, if its outputs are intact, and why it
/// would otherwise re-run (empty when it is fresh anyway).
fn frozen_result(
    store: &Store,
    spec: &StageSpec,
    fp: &Fingerprint,
    key: &str,
) -> Result<Option<(StageRecord, Vec<DirtyReason>)>> {
    let Some(rec) = frozen_result_unkeyed(store, spec)? else {
        return Ok(None);
    };
    let why = match check_fresh(store, spec, fp, key)? {
        Fresh::Yes(_) => vec![],
        Fresh::No(r) => r,
    };
    // Frozen means "ignore what changed upstream", not "ignore a changed stage": a new kind,
    // implementation version or param (e.g. the record came from another pipeline's stage of
    // the same id) re-runs it.
    let own_change = why.iter().any(|r| {
        matches!(
            r,
            DirtyReason::CacheVersionChanged { .. }
                | DirtyReason::KindChanged { .. }
                | DirtyReason::VersionChanged { .. }
                | DirtyReason::ParamChanged { .. }
                | DirtyReason::ParamAdded { .. }
                | DirtyReason::ParamRemoved { .. }
                | DirtyReason::FingerprintUnreadable
        )
    });
    Ok((!own_change).then_some((rec, why)))
}

/// A stage's last successful result if its outputs are intact.
fn frozen_result_unkeyed(store: &Store, spec: &StageSpec) -> Result<Option<StageRecord>> {
    Ok(store.stage_record(&spec.id)?.filter(|rec| {
        spec.outputs
            .keys()
            .all(|n| rec.outputs.get(n).is_some_and(|o| store.output_intact(o)))
    }))
}

fn cached(store: &Store, spec: &StageSpec, key: &str) -> Result<Option<CacheEntry>> {
    Ok(store.cache_entry(key)?.filter(|e| {
        spec.outputs
            .keys()
            .all(|n| e.outputs.get(n).is_some_and(|o| store.output_intact(o)))
    }))
}

fn now() -> String {
    artifacts::timestamp()
}

fn new_run_id() -> String {
    let t = chrono::Utc::now();
    let nonce = blake3::hash(
        format!(
            "{}{}{:?}",
            std::process::id(),
            t.timestamp_nanos_opt().unwrap_or(0),
            std::thread::current().id()
        )
        .as_bytes(),
    )
    .to_hex();
    format!("{}-{}", t.format("%Y%m%dT%H%M%S%3fZ"), &nonce[..6])
}

/// What a stage needs, decided once from its inputs and the store: `status` reports it and a
/// run acts on it.
enum Freshness {
    /// Upstream stages are stale; the key is not known until they have run.
    UpstreamStale(Vec<DirtyReason>),
    /// A frozen stage keeps its last results; `why` lists what would otherwise re-run it
    /// (empty: it is fresh anyway).
    Frozen {
        /// Its last successful execution.
        record: StageRecord,
        /// What changed.
        why: Vec<DirtyReason>,
    },
    /// Its last execution has this key and intact outputs.
    Fresh(StageRecord),
    /// It must run, unless the run-cache holds its key (then it is restored).
    Stale {
        /// Why.
        reasons: Vec<DirtyReason>,
        /// The run-cache entry of its key, with intact outputs.
        cached: Option<CacheEntry>,
    },
}

/// Decides a stage's freshness. `forced` stages are stale whatever the store holds.
fn freshness(
    store: &Store,
    spec: &StageSpec,
    inputs: &Inputs,
    frozen: bool,
    forced: bool,
) -> Result<Freshness> {
    let fp = match inputs {
        Inputs::Known(fp) => fp,
        Inputs::UpstreamStale(reasons) => {
            if frozen && let Some(record) = frozen_result_unkeyed(store, spec)? {
                return Ok(Freshness::Frozen {
                    record,
                    why: reasons.clone(),
                });
            }
            return Ok(Freshness::UpstreamStale(reasons.clone()));
        }
    };
    let key = fp.key();
    if forced {
        return Ok(Freshness::Stale {
            reasons: vec![DirtyReason::Forced],
            cached: None,
        });
    }
    if frozen && let Some((record, why)) = frozen_result(store, spec, fp, &key)? {
        return Ok(Freshness::Frozen { record, why });
    }
    Ok(match check_fresh(store, spec, fp, &key)? {
        Fresh::Yes(record) => Freshness::Fresh(record),
        Fresh::No(reasons) => Freshness::Stale {
            reasons,
            cached: cached(store, spec, &key)?,
        },
    })
}

/// Reports every stage's freshness without running anything.
pub fn status(p: &Pipeline) -> Result<Vec<StageStatus>> {
    let dag = Dag::build(p)?;
    let store = Store::open(&p.store_dir)?;
    let memo = HashMemo::default();
    let mut known: BTreeMap<String, Outputs> = BTreeMap::new();
    let mut out = Vec::new();
    for id in dag.order() {
        let spec = p.stage(id).expect("stage in dag");
        let inputs = fingerprint(spec, p, &store, &known, &memo)?;
        let key = match &inputs {
            Inputs::Known(fp) => Some(fp.key()),
            Inputs::UpstreamStale(_) => None,
        };
        let status = |state, reasons, restorable, key| StageStatus {
            id: id.clone(),
            kind: spec.kind.clone(),
            state,
            reasons,
            restorable,
            key,
            workspace: vec![],
        };
        let drift = |outs: &Outputs| -> Result<Vec<WorkspaceDrift>> {
            Ok(workspace::drift(p, &store, spec, outs, false)?
                .into_iter()
                .map(|d| d.drift)
                .collect())
        };
        out.push(
            match freshness(&store, spec, &inputs, p.frozen.contains(id), false)? {
                Freshness::UpstreamStale(reasons) => {
                    status(StageState::Stale, reasons, false, None)
                }
                Freshness::Frozen { record, why } => {
                    let state = if why.is_empty() {
                        StageState::Fresh
                    } else {
                        StageState::Frozen
                    };
                    let workspace = drift(&record.outputs)?;
                    known.insert(id.clone(), record.outputs);
                    StageStatus {
                        workspace,
                        ..status(state, why, false, Some(record.key))
                    }
                }
                Freshness::Fresh(record) => {
                    let workspace = drift(&record.outputs)?;
                    known.insert(id.clone(), record.outputs);
                    StageStatus {
                        workspace,
                        ..status(StageState::Fresh, vec![], false, key)
                    }
                }
                Freshness::Stale { reasons, cached } => {
                    let restorable = cached.is_some();
                    if let Some(e) = cached {
                        known.insert(id.clone(), e.outputs);
                    }
                    status(StageState::Stale, reasons, restorable, key)
                }
            },
        );
    }
    Ok(out)
}

struct Done {
    run: StageRun,
    outputs: Option<Outputs>,
    summary: Vec<String>,
    workspace: Vec<String>,
}

struct Shared<'a> {
    p: &'a Pipeline,
    store: &'a Store,
    memo: HashMemo,
    run_id: String,
    opts: &'a RunOptions,
}

impl Shared<'_> {
    /// A skipped stage's workspace copies put back where they do not hold its outputs.
    fn put_back(&self, spec: &StageSpec, outs: &Outputs, notes: &mut Vec<String>) -> Result<()> {
        workspace::put_back(self.p, self.store, spec, outs, self.opts.dry_run, notes)
    }

    fn forced(&self, id: &str) -> bool {
        match &self.opts.force {
            Some(Force::All) => true,
            Some(Force::Stage(s)) => s == id,
            None => false,
        }
    }

    fn progress(&self, id: &str) -> Progress {
        match &self.opts.progress {
            Some(mp) => {
                let bar = mp.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {prefix:<16} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
                    )
                    .expect("template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(id.to_string());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                Progress::new(bar)
            }
            None => Progress::hidden(),
        }
    }

    /// The metrics the execution with `key` reported, for a stage that keeps its outputs
    /// without running (none if the run-cache no longer has it).
    fn metrics_of(&self, key: &StageKey) -> serde_json::Value {
        self.store
            .cache_entry(key)
            .ok()
            .flatten()
            .map(|e| e.metrics)
            .unwrap_or_default()
    }

    /// Decides and does what one stage needs. Never panics out: failures become `Failed`.
    fn process(
        &self,
        spec: &StageSpec,
        upstream: &BTreeMap<String, Outputs>,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Done {
        let started = Instant::now();
        let mut run = StageRun {
            id: spec.id.clone().into(),
            kind: spec.kind.clone(),
            outcome: StageOutcome::Failed,
            duration_s: 0.0,
            key: StageKey::default(),
            metrics: serde_json::Value::Null,
            reasons: vec![],
            error: None,
            failed_fingerprint: None,
        };
        // What the stage did to its workspace copies beyond writing its outputs.
        let mut ws_notes: Vec<String> = Vec::new();
        let result = (|| -> Result<(Outputs, Vec<String>)> {
            let inputs = fingerprint(spec, self.p, self.store, upstream, &self.memo)?;
            let fp = match &inputs {
                Inputs::Known(fp) => fp,
                Inputs::UpstreamStale(reasons) => {
                    return Err(Error::UpstreamUnavailable {
                        stage: spec.id.clone(),
                        upstream: reasons
                            .iter()
                            .filter_map(|r| match r {
                                DirtyReason::UpstreamStale { stage } => Some(stage.clone()),
                                _ => None,
                            })
                            .collect(),
                    });
                }
            };
            let key = fp.key();
            run.key = key.clone();
            let forced = self.forced(&spec.id);
            let frozen = self.p.frozen.contains(&spec.id);
            let reasons = match freshness(self.store, spec, &inputs, frozen, forced)? {
                Freshness::UpstreamStale(_) => unreachable!("the fingerprint is known"),
                Freshness::Frozen { record, why } => {
                    self.put_back(spec, &record.outputs, &mut ws_notes)?;
                    run.outcome = StageOutcome::Skipped;
                    run.metrics = self.metrics_of(&record.key);
                    let note = if why.is_empty() {
                        vec![]
                    } else {
                        vec![format!(
                            "frozen: kept the results of run {} although {}",
                            record.run_id,
                            why.iter()
                                .map(|r| r.to_string())
                                .collect::<Vec<_>>()
                                .join("; ")
                        )]
                    };
                    run.reasons = why
                        .into_iter()
                        .map(|r| DirtyReason::Frozen {
                            otherwise: Box::new(r),
                        })
                        .collect();
                    return Ok((record.outputs, note));
                }
                Freshness::Fresh(record) => {
                    self.put_back(spec, &record.outputs, &mut ws_notes)?;
                    run.outcome = StageOutcome::Skipped;
                    run.metrics = self.metrics_of(&key);
                    return Ok((record.outputs, vec![]));
                }
                Freshness::Stale {
                    reasons,
                    cached: Some(entry),
                } => {
                    run.reasons = reasons;
                    run.outcome = StageOutcome::Restored;
                    if self.opts.dry_run {
                        return Ok((
                            entry.outputs,
                            vec!["would restore from the run-cache".into()],
                        ));
                    }
                    let note = format!("restored from run {}", entry.run_id);
                    return self
                        .restore(spec, fp, &key, entry, &mut run, &mut ws_notes)
                        .map(|(outputs, _)| (outputs, vec![note]));
                }
                Freshness::Stale {
                    reasons,
                    cached: None,
                } => reasons,
            };
            if let Some(remote) = &self.opts.remote
                && !forced
            {
                if self.opts.dry_run {
                    // The entry alone (no objects) names the outputs, so the stages after
                    // this one get their keys and are looked up in turn.
                    if let Some(entry) = remote.peek_entry(&key)? {
                        run.reasons = reasons;
                        run.outcome = StageOutcome::Restored;
                        return Ok((entry.outputs, vec!["would restore from the remote".into()]));
                    }
                } else if let Some((entry, moved)) = remote.fetch_entry(self.store, &key)? {
                    run.reasons = reasons;
                    run.outcome = StageOutcome::Restored;
                    let note = format!(
                        "restored from the remote (run {}; {} objects, {:.1} MB)",
                        entry.run_id,
                        moved.objects,
                        moved.bytes as f64 / 1e6
                    );
                    return self
                        .restore(spec, fp, &key, entry, &mut run, &mut ws_notes)
                        .map(|(outputs, _)| (outputs, vec![note]));
                }
            }
            run.reasons = reasons.clone();
            if self.opts.dry_run {
                run.outcome = StageOutcome::WouldRun;
                return Ok((Outputs::new(), vec![]));
            }
            on_event(Event::Started {
                id: spec.id.clone(),
                reasons,
            });
            run.failed_fingerprint = Some(serde_json::to_value(fp).expect("fingerprint"));
            self.execute(spec, fp, &key, upstream, &mut run, &mut ws_notes)
        })();
        if result.is_ok() {
            run.failed_fingerprint = None;
        }
        run.duration_s = started.elapsed().as_secs_f64();
        // What this store holds for the key (computed, restored from its own run-cache, or
        // fresh) goes to the remote unless the remote already has it.
        if let (Some(remote), Ok(_)) = (&self.opts.remote, &result)
            && !self.opts.dry_run
            && !run.key.is_empty()
            && matches!(
                run.outcome,
                StageOutcome::Executed | StageOutcome::Restored | StageOutcome::Skipped
            )
            && run
                .reasons
                .iter()
                .all(|r| !matches!(r, DirtyReason::Frozen { .. }))
        {
            match remote.ensure_entry(self.store, &run.key) {
                Ok(t) if t.entries > 0 => on_event(Event::Remote(format!(
                    "{}: uploaded {} objects ({:.1} MB) and its run-cache entry",
                    spec.id,
                    t.objects,
                    t.bytes as f64 / 1e6
                ))),
                Ok(_) => {}
                Err(e) => on_event(Event::Warning(format!(
                    "{}: its results could not be uploaded to the remote ({e}); `isco-dag push` uploads them later",
                    spec.id
                ))),
            }
        }
        match result {
            Ok((outputs, summary)) => Done {
                outputs: (run.outcome != StageOutcome::WouldRun).then_some(outputs),
                run,
                summary,
                workspace: ws_notes,
            },
            Err(e) => {
                run.outcome = StageOutcome::Failed;
                run.error = Some(e.to_string());
                Done {
                    run,
                    outputs: None,
                    summary: vec![],
                    workspace: ws_notes,
                }
            }
        }
    }

    /// Puts a run-cache entry's outputs in place as the stage's result: the workspace
    /// copies, the stage record, the entry's metrics.
    fn restore(
        &self,
        spec: &StageSpec,
        fp: &Fingerprint,
        key: &StageKey,
        entry: CacheEntry,
        run: &mut StageRun,
        ws_notes: &mut Vec<String>,
    ) -> Result<(Outputs, Vec<String>)> {
        workspace::write(self.p, self.store, spec, &entry.outputs, ws_notes)?;
        self.store.write_stage_record(&StageRecord {
            stage: spec.id.clone().into(),
            key: key.clone(),
            fingerprint: serde_json::to_value(fp).expect("fp"),
            outputs: entry.outputs.clone(),
            run_id: self.run_id.clone(),
            finished_at: now(),
        })?;
        run.metrics = entry.metrics;
        Ok((entry.outputs, vec![]))
    }

    fn execute(
        &self,
        spec: &StageSpec,
        fp: &Fingerprint,
        key: &StageKey,
        upstream: &BTreeMap<String, Outputs>,
        run: &mut StageRun,
        ws_notes: &mut Vec<String>,
    ) -> Result<(Outputs, Vec<String>)> {
        let store = self.store;
        let forced = self.forced(&spec.id);
        // What the stage produced last time, for stages that work incrementally (they may
        // reuse parts of it, e.g. cached embeddings). The record stays until this execution
        // succeeds and replaces it: it carries its own key, so it can never make the stage
        // look fresh for other inputs, and an interrupted run leaves the last good result
        // (with the true reason it is stale) instead of "never run".
        let previous = store
            .stage_record(&spec.id)
            .ok()
            .flatten()
            .map(|r| r.outputs)
            .unwrap_or_default();
        let mut inputs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        let mut arts: BTreeMap<String, Vec<OutputRef>> = BTreeMap::new();
        for (name, refs) in &spec.inputs {
            let mut paths = Vec::new();
            for r in refs {
                match r {
                    InputRef::File(rel) => paths.push(self.p.root.join(rel)),
                    InputRef::Glob { files, .. } => {
                        paths.extend(files.iter().map(|f| self.p.root.join(f)))
                    }
                    InputRef::Stage { stage, output } => {
                        let o = &upstream[stage][output];
                        let file = self
                            .p
                            .stage(stage)
                            .and_then(|s| s.stage.outputs().iter().find(|d| d.name == output))
                            .map_or(output.as_str(), |d| d.file);
                        paths.push(store.checkout_named(o, file)?);
                        arts.entry(name.clone()).or_default().push(o.clone());
                    }
                }
            }
            inputs.insert(name.clone(), paths);
        }
        let staging = store.staging_dir(&spec.id)?;
        let progress = self.progress(&spec.id);
        let started = Instant::now();
        let ctx = StageContext {
            id: &spec.id,
            params: &spec.params,
            inputs: &inputs,
            artifacts: &arts,
            out_dir: &staging,
            root: &self.p.root,
            store,
            progress: &progress,
            run_id: &self.run_id,
            forced,
            previous: &previous,
        };
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spec.stage.run(&ctx)));
        if let Some(mp) = &self.opts.progress {
            progress_finish(mp, &progress);
        }
        let report = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = std::fs::remove_dir_all(&staging);
                let mut msg = e.to_string();
                let mut src = e.source();
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                return Err(Error::StageFailed(msg));
            }
            Err(panic) => {
                let _ = std::fs::remove_dir_all(&staging);
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(Error::StagePanicked(msg));
            }
        };
        let duration = started.elapsed().as_secs_f64();
        // The staging directory goes whether or not its outputs could be stored: left behind
        // after a full disk, it would keep the disk full for the next attempt.
        let stored = (|| {
            let mut outputs = Outputs::new();
            for (name, o) in &spec.outputs {
                let path = staging.join(&o.file);
                if !path.exists() {
                    return Err(Error::OutputNotWritten {
                        kind: spec.kind.clone(),
                        output: name.clone(),
                        file: o.file.clone(),
                    });
                }
                outputs.insert(name.clone(), store.put_staged_output(&path)?);
            }
            Ok(outputs)
        })();
        let _ = std::fs::remove_dir_all(&staging);
        let outputs = stored?;
        let fp_json = serde_json::to_value(fp).expect("fingerprint serialises");
        store.write_cache_entry(&CacheEntry {
            key: key.clone(),
            stage: spec.id.clone().into(),
            kind: spec.kind.clone(),
            fingerprint: fp_json.clone(),
            outputs: outputs.clone(),
            metrics: report.metrics.clone(),
            run_id: self.run_id.clone(),
            created_at: now(),
            duration_s: duration,
        })?;
        workspace::write(self.p, store, spec, &outputs, ws_notes)?;
        store.write_stage_record(&StageRecord {
            stage: spec.id.clone().into(),
            key: key.clone(),
            fingerprint: fp_json,
            outputs: outputs.clone(),
            run_id: self.run_id.clone(),
            finished_at: now(),
        })?;
        run.outcome = StageOutcome::Executed;
        run.metrics = report.metrics;
        Ok((outputs, report.summary))
    }
}

fn progress_finish(mp: &indicatif::MultiProgress, _p: &Progress) {
    // Bars are removed when the stage ends; lines printed by the caller stay.
    mp.clear().ok();
}

/// Brings the refs in line with the remote one way; a moved ref is reported, a conflict is a
/// warning (the run's results stay; `push`/`pull` settle it).
fn sync_refs(
    remote: &artifacts::Remote,
    store: &Store,
    dir: artifacts::Direction,
    on_event: &(dyn Fn(Event) + Sync),
) {
    match remote.sync_refs(store, dir) {
        Ok(refs) => refs
            .iter()
            .filter(|r| r.moved())
            .for_each(|r| on_event(Event::Remote(r.to_string()))),
        Err(e) => on_event(Event::Warning(e.to_string())),
    }
}

/// Checks that the stages `opts` names (`until`, `only`, `force`) are in the pipeline, before
/// anything runs; [`run_pipeline`] checks it too.
pub fn check_selection(p: &Pipeline, opts: &RunOptions) -> Result<()> {
    let forced = match &opts.force {
        Some(Force::Stage(s)) => Some(s),
        _ => None,
    };
    for name in [opts.until.as_ref(), opts.only.as_ref(), forced]
        .into_iter()
        .flatten()
    {
        if p.stage(name).is_none() {
            return Err(Error::UnknownStage {
                name: name.clone(),
                hint: crate::spec::did_you_mean(name, p.stages.iter().map(|s| &s.id)),
            });
        }
    }
    Ok(())
}

/// `--only STAGE` runs STAGE on its upstream stages' last outputs, whatever has changed since
/// (as DVC's `--single-item` does). Says which of those stages are stale, and why, so a result
/// made from outdated inputs is not taken for what a full run would give.
fn warn_stale_upstream(p: &Pipeline, dag: &Dag, only: &str, on_event: &(dyn Fn(Event) + Sync)) {
    let upstream = dag.ancestors(only);
    let states = match status(p) {
        Ok(s) => s,
        Err(e) => {
            on_event(Event::Warning(format!(
                "could not check whether the stages upstream of `{only}` are stale: {e}"
            )));
            return;
        }
    };
    let stale: Vec<String> = states
        .into_iter()
        .filter(|s| s.id != only && upstream.contains(&s.id) && s.state == StageState::Stale)
        .map(|s| match s.reasons.first() {
            Some(why) => format!("{}: {why}", s.id),
            None => s.id,
        })
        .collect();
    if !stale.is_empty() {
        on_event(Event::Warning(format!(
            "upstream stages are stale ({}); `--only {only}` reads their last outputs. Run with `--until {only}` to bring them up to date first.",
            stale.join("; ")
        )));
    }
}

/// Runs a pipeline: every selected stage that is stale executes (or is restored), in
/// parallel where the graph allows; the run is recorded in the store.
pub fn run_pipeline(
    p: &Pipeline,
    opts: &RunOptions,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<RunRecord> {
    check_selection(p, opts)?;
    let dag = Dag::build(p)?;
    let store = Store::open(&p.store_dir)?;
    let _lock = if opts.dry_run {
        None
    } else {
        let lock = store.lock(!opts.no_wait, &|holder| {
            on_event(Event::WaitingForLock {
                holder: holder.to_string(),
            })
        })?;
        if let Some(h) = &lock.recovered_from {
            on_event(Event::LockRecovered { holder: h.clone() });
        }
        // A killed run's staged outputs would otherwise wait for `gc`; failing to clear them
        // costs only space, so the run goes on.
        if let Err(e) = store.clear_abandoned_temp() {
            on_event(Event::Warning(format!(
                "could not clear what ended processes left in the store's tmp/: {e}"
            )));
        }
        Some(lock)
    };
    let selected: BTreeSet<String> = if let Some(only) = &opts.only {
        BTreeSet::from([only.clone()])
    } else if let Some(until) = &opts.until {
        dag.ancestors(until)
    } else {
        dag.order().iter().cloned().collect()
    };
    let mut record = RunRecord {
        id: new_run_id(),
        pipeline: p.rel_path.clone(),
        started_at: now(),
        finished_at: String::new(),
        status: if opts.dry_run {
            RunStatus::DryRun
        } else {
            RunStatus::Running
        },
        stages: vec![],
        overrides: p.overrides.clone(),
    };
    if !opts.dry_run
        && let Some(remote) = &opts.remote
    {
        // Take the refs the remote moved (a promotion on another machine), so this run's
        // promote compares against them.
        sync_refs(
            remote,
            &store,
            artifacts::Direction::Pull { theirs: false },
            on_event,
        );
    }
    if !opts.dry_run {
        store.write_run(&record)?;
        on_event(Event::RunStarted {
            id: record.id.clone(),
        });
    }
    // Outputs of stages outside the selection come from their last successful runs.
    let mut outputs: BTreeMap<String, Outputs> = BTreeMap::new();
    for id in dag.order() {
        if !selected.contains(id)
            && let Some(rec) = store.stage_record(id)?
        {
            outputs.insert(id.clone(), rec.outputs);
        }
    }
    if let Some(only) = &opts.only {
        for up in dag.upstream(only) {
            if !outputs.contains_key(&up) {
                return Err(Error::UpstreamMissing {
                    stage: only.clone(),
                    upstream: up,
                });
            }
        }
        warn_stale_upstream(p, &dag, only, on_event);
    }

    let shared = Shared {
        p,
        store: &store,
        memo: HashMemo::default(),
        run_id: record.id.clone(),
        opts,
    };
    let jobs = if opts.jobs == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        opts.jobs
    };
    #[derive(PartialEq)]
    enum St {
        Pending,
        Running,
        Ok,
        Bad,
    }
    let mut state: BTreeMap<String, St> =
        selected.iter().map(|s| (s.clone(), St::Pending)).collect();
    let mut runs: BTreeMap<String, StageRun> = BTreeMap::new();
    let (tx, rx) = mpsc::channel::<Done>();
    std::thread::scope(|scope| {
        let mut running = 0usize;
        loop {
            // Dispatch everything ready, in topological order.
            for id in dag.order() {
                if running >= jobs {
                    break;
                }
                if state.get(id) != Some(&St::Pending) {
                    continue;
                }
                let ups = dag.upstream(id);
                if ups.iter().any(|u| matches!(state.get(u), Some(St::Bad))) {
                    state.insert(id.clone(), St::Bad);
                    let failed: Vec<&String> = ups
                        .iter()
                        .filter(|u| matches!(state.get(*u), Some(St::Bad)))
                        .collect();
                    let run = StageRun {
                        id: id.clone().into(),
                        kind: p.stage(id).expect("stage").kind.clone(),
                        outcome: StageOutcome::Blocked,
                        duration_s: 0.0,
                        key: StageKey::default(),
                        metrics: serde_json::Value::Null,
                        reasons: vec![DirtyReason::UpstreamFailed {
                            stages: failed.iter().map(|s| s.to_string()).collect(),
                        }],
                        error: None,
                        failed_fingerprint: None,
                    };
                    on_event(Event::Finished {
                        run: run.clone(),
                        summary: vec![],
                        workspace: vec![],
                    });
                    runs.insert(id.clone(), run);
                    continue;
                }
                let ready = ups.iter().all(|u| match state.get(u) {
                    Some(St::Ok) => outputs.contains_key(u),
                    Some(_) => false,
                    None => outputs.contains_key(u),
                });
                // In a dry run, a stage that would run leaves its dependents with unknown
                // inputs; they are still visited and reported as stale.
                if !ready {
                    continue;
                }
                state.insert(id.clone(), St::Running);
                running += 1;
                let spec = p.stage(id).expect("stage");
                let upstream = outputs.clone();
                let tx = tx.clone();
                let shared = &shared;
                scope.spawn(move || {
                    let done = shared.process(spec, &upstream, on_event);
                    let _ = tx.send(done);
                });
            }
            if running == 0 {
                break;
            }
            let done = rx.recv().expect("a worker is running");
            running -= 1;
            let id = done.run.id.clone();
            let ok = done.run.outcome != StageOutcome::Failed;
            if let Some(o) = done.outputs {
                outputs.insert(id.to_string(), o);
            }
            state.insert(id.to_string(), if ok { St::Ok } else { St::Bad });
            on_event(Event::Finished {
                run: done.run.clone(),
                summary: done.summary,
                workspace: done.workspace,
            });
            runs.insert(id.to_string(), done.run);
            // The record on disk lists every stage finished so far, so a run that is
            // interrupted or killed still says what it did.
            if !opts.dry_run {
                let mut partial = record.clone();
                partial.stages = dag
                    .order()
                    .iter()
                    .filter_map(|id| runs.get(id).cloned())
                    .collect();
                if let Err(e) = store.write_run(&partial) {
                    on_event(Event::Warning(format!(
                        "the run record could not be updated: {e}"
                    )));
                }
            }
        }
    });
    // Dry run: stages downstream of would-run stages were never dispatched.
    for id in dag.order() {
        if state.get(id) == Some(&St::Pending) {
            let spec = p.stage(id).expect("stage");
            let reasons: Vec<DirtyReason> = dag
                .upstream(id)
                .into_iter()
                .filter(|u| !outputs.contains_key(u))
                .map(|stage| DirtyReason::UpstreamStale { stage })
                .collect();
            let run = StageRun {
                id: id.clone().into(),
                kind: spec.kind.clone(),
                outcome: StageOutcome::WouldRun,
                duration_s: 0.0,
                key: StageKey::default(),
                metrics: serde_json::Value::Null,
                reasons,
                error: None,
                failed_fingerprint: None,
            };
            on_event(Event::Finished {
                run: run.clone(),
                summary: vec![],
                workspace: vec![],
            });
            runs.insert(id.clone(), run);
        }
    }
    record.stages = dag
        .order()
        .iter()
        .filter_map(|id| runs.remove(id))
        .collect();
    let failed: Vec<String> = record
        .stages
        .iter()
        .filter(|s| s.outcome == StageOutcome::Failed)
        .map(|s| s.id.to_string())
        .collect();
    record.finished_at = now();
    if !opts.dry_run {
        record.status = if failed.is_empty() {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        store.write_run(&record)?;
        if let Some(remote) = &opts.remote {
            if let Err(e) = remote.push_run(&record) {
                on_event(Event::Warning(format!(
                    "the run record could not be uploaded to the remote: {e}"
                )));
            }
            sync_refs(
                remote,
                &store,
                artifacts::Direction::Push { ours: false },
                on_event,
            );
        }
    }
    if !failed.is_empty() {
        return Err(Error::StagesFailed {
            failed: failed.len(),
            stages: failed,
        });
    }
    Ok(record)
}
