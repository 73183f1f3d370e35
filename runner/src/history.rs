//! Run history and lineage: what `runs diff` and `lineage` compute (the CLI prints it).

use std::collections::BTreeSet;
use std::path::Path;

use artifacts::{
    CacheEntry, ObjectId, RunRecord, StageId, StageKey, StageOutcome, StageRun, Store,
};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fingerprint::{DirtyReason, Fingerprint, InputHash};
use crate::spec::Pipeline;

/// One metric compared between two runs.
#[derive(Debug, Clone, Serialize)]
pub struct MetricDiff {
    /// Stage id.
    pub stage: StageId,
    /// Metric path (`a.b` for nested objects).
    pub metric: String,
    /// Value in run A.
    pub a: Option<f64>,
    /// Value in run B.
    pub b: Option<f64>,
    /// b - a, when both exist.
    pub delta: Option<f64>,
}

/// One stage compared between two runs.
#[derive(Debug, Clone, Serialize)]
pub struct StageDiff {
    /// Stage id.
    pub stage: StageId,
    /// Outcome in A (none: not in that run).
    pub a_outcome: Option<StageOutcome>,
    /// Outcome in B.
    pub b_outcome: Option<StageOutcome>,
    /// The earlier run A's side comes from when run A did not include the stage (a run
    /// with `--only` or `--until`, or one stopped early): the stage's last execution before
    /// A in a run of A's pipeline, which made the outputs A's pipeline stood on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a_from: Option<String>,
    /// The same for run B.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_from: Option<String>,
    /// Whether the key differs.
    pub key_changed: bool,
    /// What changed between the two keys (params with old and new values, inputs,
    /// versions), from the two fingerprints (a blocked stage has none: it computes no key).
    pub changes: Vec<DirtyReason>,
}

/// `runs diff a b`.
#[derive(Debug, Clone, Serialize)]
pub struct RunDiff {
    /// Run A id.
    pub a: String,
    /// Run B id.
    pub b: String,
    /// Per stage.
    pub stages: Vec<StageDiff>,
    /// Numeric metrics that exist in either run.
    pub metrics: Vec<MetricDiff>,
}

/// A stage's metrics as named values: every value that is not an object or an array, named
/// by its path with nested names joined by dots (`test.accuracy`), in the record's order.
/// `runs show` prints these names, and `runs list --metric` and `runs diff` use them.
pub fn metric_values(metrics: &serde_json::Value) -> Vec<(String, &serde_json::Value)> {
    fn walk<'v>(
        prefix: &str,
        v: &'v serde_json::Value,
        out: &mut Vec<(String, &'v serde_json::Value)>,
    ) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&name, v, out);
                }
            }
            serde_json::Value::Array(_) => {}
            v if !prefix.is_empty() => out.push((prefix.to_string(), v)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", metrics, &mut out);
    out
}

/// The numeric values of [`metric_values`].
fn flatten(metrics: &serde_json::Value) -> Vec<(String, f64)> {
    metric_values(metrics)
        .into_iter()
        .filter_map(|(name, v)| v.as_f64().map(|f| (name, f)))
        .collect()
}

/// The stage `id` as it stood when `run` ran: the run's own entry, or else the stage's last
/// execution (run, skipped as fresh or restored) in an earlier run of the same pipeline, with
/// that run's id. A run that processed only some stages stood on the others' last outputs.
fn as_of<'r>(
    history: &'r [RunRecord],
    run: &'r RunRecord,
    id: &StageId,
) -> Option<(&'r StageRun, Option<&'r str>)> {
    if let Some(s) = run.stages.iter().find(|s| &s.id == id) {
        return Some((s, None));
    }
    history
        .iter()
        .filter(|r| r.pipeline == run.pipeline && r.id < run.id)
        .rev()
        .find_map(|r| {
            r.stages
                .iter()
                .find(|s| {
                    &s.id == id
                        && matches!(
                            s.outcome,
                            StageOutcome::Executed | StageOutcome::Skipped | StageOutcome::Restored
                        )
                })
                .map(|s| (s, Some(r.id.as_str())))
        })
}

/// The numeric metric `path` (`a.b` for nested objects) of stage `stage` as `run` stood on
/// it (see [`as_of`]); `history` is the store's runs, oldest first.
pub fn metric_as_of(
    history: &[RunRecord],
    run: &RunRecord,
    stage: &StageId,
    path: &str,
) -> Option<f64> {
    let (s, _) = as_of(history, run, stage)?;
    flatten(&s.metrics)
        .into_iter()
        .find(|(k, _)| k == path)
        .map(|(_, v)| v)
}

/// Compares two runs stage by stage and metric by metric; a stage whose key changed lists
/// what changed, from the two fingerprints in the run-cache. A stage one run did not include
/// is compared as that run stood on it (see [`as_of`]).
pub fn diff_runs(store: &Store, a: &RunRecord, b: &RunRecord) -> RunDiff {
    // A successful execution's fingerprint is in the run-cache; a failed one's in the run.
    let fingerprint = |s: &artifacts::StageRun| -> Option<Fingerprint> {
        let kept = match &s.failed_fingerprint {
            Some(fp) => fp.clone(),
            None => store.cache_entry(&s.key).ok().flatten()?.fingerprint,
        };
        serde_json::from_value(kept).ok()
    };
    // In the order the newer run ran them (the pipeline's order), then any only the older ran.
    let mut ids: Vec<&StageId> = Vec::new();
    for s in b.stages.iter().chain(&a.stages) {
        if !ids.contains(&&s.id) {
            ids.push(&s.id);
        }
    }
    let history = store.runs().unwrap_or_default();
    let mut stages = Vec::new();
    let mut metrics = Vec::new();
    for id in ids {
        let (sa, a_from) = as_of(&history, a, id).unzip();
        let (sb, b_from) = as_of(&history, b, id).unzip();
        let key_changed = sa.map(|s| &s.key) != sb.map(|s| &s.key);
        let changes = match (sa, sb) {
            (Some(sa), Some(sb)) if key_changed => fingerprint(sa)
                .zip(fingerprint(sb))
                .map(|(fa, fb)| fb.diff(&fa))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        stages.push(StageDiff {
            stage: id.clone(),
            a_outcome: sa.map(|s| s.outcome),
            b_outcome: sb.map(|s| s.outcome),
            a_from: a_from.flatten().map(str::to_string),
            b_from: b_from.flatten().map(str::to_string),
            key_changed,
            changes,
        });
        let ma = sa.map(|s| flatten(&s.metrics)).unwrap_or_default();
        let mb = sb.map(|s| flatten(&s.metrics)).unwrap_or_default();
        let names: BTreeSet<&String> = ma.iter().chain(&mb).map(|(k, _)| k).collect();
        for n in names {
            let va = ma.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
            let vb = mb.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
            metrics.push(MetricDiff {
                stage: id.clone(),
                metric: n.clone(),
                a: va,
                b: vb,
                delta: va.zip(vb).map(|(x, y)| y - x),
            });
        }
    }
    RunDiff {
        a: a.id.clone(),
        b: b.id.clone(),
        stages,
        metrics,
    }
}

/// How an artifact came to be.
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    /// The artifact's object id.
    pub object: String,
    /// Which output of which stage execution it is.
    pub stage: StageId,
    /// Output name.
    pub output: String,
    /// Stage kind and implementation version.
    pub kind: String,
    /// Implementation version.
    pub version: String,
    /// Stage key.
    pub key: StageKey,
    /// Run that produced it.
    pub run_id: String,
    /// When.
    pub created_at: String,
    /// Params.
    pub params: serde_json::Value,
    /// Workspace input files with their hashes.
    pub files: Vec<(String, ObjectId)>,
    /// Upstream artifacts, recursively.
    pub upstream: Vec<Lineage>,
}

/// The stage execution that wrote `object`. `entries` are oldest first; the same bytes may
/// have been written by several executions, and the newest that explains them is taken.
///
/// `from` is the `(stage, output)` an input names: a stage that passes its input through
/// unchanged writes the same object as its upstream, so the named producer comes first.
///
/// Otherwise an execution does not explain bytes it copied from outside its inputs: a stage
/// can write an object that it neither computed nor read through an input (a promotion step
/// that keeps the model its ref already points at writes that model again, while its input is
/// a newer candidate). Such an execution is recognised by writing bytes that another stage
/// had written before it, without reading them through any of its inputs; the lineage then
/// goes to an execution that did make or read them, and to the copy only when no other is
/// known.
///
/// `until` is the execution that read the object: the object it read was written no later
/// than that execution ran, so a producer from a later run is left out. A stage that ran
/// again later with new inputs and wrote the same bytes (corrections that changed no
/// record) did not make what the reader read, and its new inputs would be shown as if the
/// reader had seen them.
fn producer(
    entries: &[CacheEntry],
    object: &str,
    from: Option<(&str, &str)>,
    until: Option<&CacheEntry>,
) -> Option<(CacheEntry, String)> {
    // Every (execution index, output name) that wrote the object, oldest first.
    let wrote_where = |bounded: bool| -> Vec<(usize, &str)> {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !bounded || until.is_none_or(|u| ran_at(e) <= ran_at(u)))
            .flat_map(|(i, e)| {
                e.outputs
                    .iter()
                    .filter(|(_, o)| o.id == object)
                    .map(move |(n, _)| (i, n.as_str()))
            })
            .collect()
    };
    // Where no producer up to the reader is recorded any more, a later one still tells
    // how such bytes are made.
    let mut wrote = wrote_where(true);
    if wrote.is_empty() {
        wrote = wrote_where(false);
    }
    let pick = |&(i, n): &(usize, &str)| (entries[i].clone(), n.to_string());
    if let Some(named) = wrote
        .iter()
        .rev()
        .find(|(i, n)| from == Some((entries[*i].stage.as_str(), *n)))
    {
        return Some(pick(named));
    }
    let reads_it = |e: &CacheEntry| {
        crate::fingerprint::upstream_reads(e)
            .iter()
            .any(|r| r.object.as_str() == object)
    };
    let copied = |i: usize| {
        let e = &entries[i];
        !reads_it(e)
            && wrote
                .iter()
                .any(|&(j, _)| j < i && entries[j].stage != e.stage)
    };
    wrote
        .iter()
        .rev()
        .find(|(i, _)| !copied(*i))
        .or_else(|| wrote.last())
        .map(pick)
}

/// Orders stage executions oldest first. Their times are to the second, so two runs in one
/// second tie; the run id (its start to the millisecond, and runs on one store never overlap)
/// orders them.
fn oldest_first(entries: &mut [CacheEntry]) {
    entries.sort_by(|a, b| ran_at(a).cmp(&ran_at(b)));
}

/// When a stage execution ran, as [`oldest_first`] orders them.
fn ran_at(e: &CacheEntry) -> (&str, &str) {
    (e.created_at.as_str(), e.run_id.as_str())
}

fn lineage_of(
    entries: &[CacheEntry],
    object: &str,
    from: Option<(&str, &str)>,
    until: Option<&CacheEntry>,
    depth: usize,
) -> Option<Lineage> {
    let (e, output) = producer(entries, object, from, until)?;
    let fp: Fingerprint = serde_json::from_value(e.fingerprint.clone()).ok()?;
    let mut files = Vec::new();
    let mut upstream = Vec::new();
    for hashes in fp.inputs.values() {
        for h in hashes {
            match h {
                InputHash::File { path, blake3 } => files.push((path.clone(), blake3.clone())),
                InputHash::Stage {
                    stage,
                    output,
                    blake3,
                } => {
                    if depth < 32
                        && let Some(l) = lineage_of(
                            entries,
                            blake3,
                            Some((stage.as_str(), output.as_str())),
                            Some(&e),
                            depth + 1,
                        )
                    {
                        upstream.push(l);
                    }
                }
            }
        }
    }
    Some(Lineage {
        object: object.to_string(),
        stage: e.stage.clone(),
        output,
        kind: e.kind.clone(),
        version: fp.version.clone(),
        key: e.key.clone(),
        run_id: e.run_id.clone(),
        created_at: e.created_at.clone(),
        params: serde_json::to_value(&fp.params).unwrap_or_default(),
        files,
        upstream,
    })
}

/// Finds the lineage of an artifact named by workspace path, `stage.output`, or object id
/// (prefix).
pub fn lineage(p: &Pipeline, artifact: &str) -> Result<Lineage> {
    let store = Store::open(&p.store_dir)?;
    let mut entries = store.cache_entries()?;
    oldest_first(&mut entries);
    let object = resolve_artifact(p, &store, artifact)?;
    lineage_of(&entries, &object, None, None, 0)
        .ok_or_else(|| Error::UnknownArtifact(artifact.to_string()))
}

fn resolve_artifact(p: &Pipeline, store: &Store, artifact: &str) -> Result<ObjectId> {
    if let Some((sid, out)) = artifact.split_once('.')
        && !artifact.contains('/')
        && let Some(rec) = store.stage_record(sid)?
        && let Some(o) = rec.outputs.get(out)
    {
        return Ok(o.id.clone());
    }
    let candidates = [p.root.join(artifact), Path::new(artifact).to_path_buf()];
    for c in candidates {
        if c.is_file() {
            return Ok(artifacts::hash_file(&c)?.0);
        }
        if c.is_dir() {
            // A workspace directory output: the recorded output whose files it holds, as a
            // file is known by its hash. The pipeline's own output at that path comes first;
            // another pipeline may have written there since (a fine-tune's promotion writes
            // `models/best` too), so every stage's last output, every ref's target and then
            // every output the run-cache holds are tried next.
            let canon = c.canonicalize().ok();
            let mut candidates: Vec<artifacts::OutputRef> = Vec::new();
            for s in &p.stages {
                for (name, o) in &s.outputs {
                    if p.root.join(&o.workspace).canonicalize().ok() == canon
                        && let Some(rec) = store.stage_record(&s.id)?
                        && let Some(r) = rec.outputs.get(name)
                    {
                        candidates.push(r.clone());
                    }
                }
            }
            for rec in store.stage_records()? {
                candidates.extend(rec.outputs.into_values());
            }
            candidates.extend(store.refs()?.into_iter().map(|r| r.target));
            for e in store.cache_entries()? {
                candidates.extend(e.outputs.into_values());
            }
            let mut tried = BTreeSet::new();
            for r in candidates {
                if r.kind == artifacts::OutputKind::Dir
                    && tried.insert(r.id.clone())
                    && store.workspace_matches(&r, &c)
                {
                    return Ok(r.id);
                }
            }
            return Err(Error::UnrecordedDirectory(artifact.to_string()));
        }
    }
    if !artifact.contains('/')
        && let Ok(Some(r)) = store.get_ref(artifact)
    {
        return Ok(r.target.id);
    }
    if artifact.len() >= 6 && artifact.chars().all(|c| c.is_ascii_hexdigit()) {
        let entries = store.cache_entries()?;
        let ids: BTreeSet<ObjectId> = entries
            .iter()
            .flat_map(|e| e.outputs.values().map(|o| o.id.clone()))
            .filter(|id| id.starts_with(artifact))
            .collect();
        if ids.len() == 1 {
            return Ok(ids.into_iter().next().expect("one"));
        }
    }
    Err(Error::UnknownArtifact(artifact.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use artifacts::{OutputKind, OutputRef};

    use super::*;

    /// An execution of `stage` in `run`, reading `reads` (an upstream output's object) and
    /// writing `writes` as its output `out`, at one and the same second as every other.
    fn execution(
        run: &str,
        stage: &str,
        reads: Option<&str>,
        out: &str,
        writes: &str,
    ) -> CacheEntry {
        execution_reading(
            run,
            stage,
            reads.map(|o| ("train", "model", o)),
            out,
            writes,
        )
    }

    /// The same, reading `reads`: (upstream stage, its output, the object).
    fn execution_reading(
        run: &str,
        stage: &str,
        reads: Option<(&str, &str, &str)>,
        out: &str,
        writes: &str,
    ) -> CacheEntry {
        let mut inputs = BTreeMap::new();
        if let Some((upstream, output, object)) = reads {
            inputs.insert(
                output.to_string(),
                vec![InputHash::Stage {
                    stage: upstream.into(),
                    output: output.into(),
                    blake3: object.to_string().into(),
                }],
            );
        }
        // Executions of one stage with other inputs have other keys.
        inputs.insert(
            "run".to_string(),
            vec![InputHash::File {
                path: run.to_string(),
                blake3: run.to_string().into(),
            }],
        );
        let fp = Fingerprint {
            cache_version: crate::fingerprint::CACHE_VERSION,
            kind: stage.into(),
            version: "1".into(),
            params: BTreeMap::new(),
            inputs,
            external: serde_json::Value::Null,
        };
        CacheEntry {
            key: fp.key(),
            stage: stage.to_string().into(),
            kind: stage.into(),
            fingerprint: serde_json::to_value(&fp).unwrap(),
            outputs: BTreeMap::from([(
                out.to_string(),
                OutputRef {
                    id: writes.to_string().into(),
                    kind: OutputKind::File,
                    size: 1,
                },
            )]),
            metrics: serde_json::Value::Null,
            run_id: run.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            duration_s: 0.0,
        }
    }

    #[test]
    fn a_kept_model_comes_from_the_run_that_trained_it_whatever_the_listing_order() {
        // Run 1 trains model A and promotes it; run 2 trains B, and its promotion refuses B
        // and writes A again. All in one second, listed in every order a store may list them.
        let (r1, r2) = ("20260101T000000001Z-aaaaaa", "20260101T000000502Z-bbbbbb");
        let all = [
            execution(r1, "train", None, "model", "A"),
            execution(r1, "promote", Some("A"), "best", "A"),
            execution(r2, "train", None, "model", "B"),
            execution(r2, "promote", Some("B"), "best", "A"),
        ];
        for order in [
            [0, 1, 2, 3],
            [3, 2, 1, 0],
            [1, 3, 0, 2],
            [3, 1, 2, 0],
            [2, 3, 1, 0],
        ] {
            let mut entries: Vec<CacheEntry> = order.iter().map(|&i| all[i].clone()).collect();
            oldest_first(&mut entries);
            let l = lineage_of(&entries, "A", None, None, 0).unwrap();
            let trained = l
                .upstream
                .first()
                .map(|u| u.run_id.as_str())
                .unwrap_or(l.run_id.as_str());
            assert_eq!(trained, r1, "listing order {order:?}: {l:?}");
        }
    }

    #[test]
    fn an_input_comes_from_the_execution_before_its_reader_not_a_later_one() {
        // Run 1: corrections write records R, train reads R and writes model M. Run 2: new
        // corrections (for texts the records lack) run again and write R again; train is
        // fresh. M was trained on run 1's R.
        let (r1, r2) = ("20260101T000000001Z-aaaaaa", "20260101T000000502Z-bbbbbb");
        let mut entries = vec![
            execution_reading(r1, "corrections", None, "records", "R"),
            execution_reading(
                r1,
                "train",
                Some(("corrections", "records", "R")),
                "model",
                "M",
            ),
            execution_reading(r2, "corrections", None, "records", "R"),
        ];
        oldest_first(&mut entries);
        let l = lineage_of(&entries, "M", None, None, 0).unwrap();
        assert_eq!(l.upstream[0].run_id, r1, "{l:?}");
        // Asked about R itself, the newest execution that wrote it answers.
        let l = lineage_of(&entries, "R", None, None, 0).unwrap();
        assert_eq!(l.run_id, r2, "{l:?}");
    }

    #[test]
    fn a_diff_lists_stages_in_the_order_the_newer_run_ran_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stage = |id: &str| artifacts::StageRun {
            id: id.into(),
            kind: id.into(),
            outcome: artifacts::StageOutcome::Skipped,
            duration_s: 0.0,
            key: format!("{id}-key").into(),
            metrics: serde_json::Value::Null,
            reasons: vec![],
            error: None,
            failed_fingerprint: None,
        };
        let run = |id: &str, stages: &[&str]| RunRecord {
            id: id.into(),
            pipeline: "p.toml".into(),
            started_at: String::new(),
            finished_at: String::new(),
            status: artifacts::RunStatus::Succeeded,
            stages: stages.iter().map(|s| stage(s)).collect(),
            overrides: vec![],
        };
        let a = run("a", &["clean", "split", "train", "report"]);
        let b = run("b", &["clean", "split", "train", "promote", "evaluate"]);
        let d = diff_runs(&store, &a, &b);
        let order: Vec<&str> = d.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            order,
            ["clean", "split", "train", "promote", "evaluate", "report"]
        );
    }

    #[test]
    fn a_stage_a_run_did_not_include_is_compared_as_an_earlier_run_left_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stage = |id: &str, key: &str, outcome| artifacts::StageRun {
            id: id.into(),
            kind: id.into(),
            outcome,
            duration_s: 0.0,
            key: key.into(),
            metrics: serde_json::json!({ "rows": key.len() }),
            reasons: vec![],
            error: None,
            failed_fingerprint: None,
        };
        let run = |id: &str, pipeline: &str, stages: Vec<artifacts::StageRun>| {
            let r = RunRecord {
                id: id.into(),
                pipeline: pipeline.into(),
                started_at: String::new(),
                finished_at: String::new(),
                status: artifacts::RunStatus::Succeeded,
                stages,
                overrides: vec![],
            };
            store.write_run(&r).unwrap();
            r
        };
        use artifacts::StageOutcome::{Blocked, Executed, Skipped};
        run(
            "r1",
            "p.toml",
            vec![
                stage("clean", "c1", Executed),
                stage("split", "s1", Executed),
            ],
        );
        // Another pipeline's run and a blocked stage are not what the run stood on.
        run("r2", "other.toml", vec![stage("clean", "other", Executed)]);
        run("r3", "p.toml", vec![stage("split", "blocked", Blocked)]);
        let partial = run("r4", "p.toml", vec![stage("train", "t1", Skipped)]);
        let full = run(
            "r5",
            "p.toml",
            vec![
                stage("clean", "c1", Skipped),
                stage("split", "s22", Executed),
                stage("train", "t2", Executed),
            ],
        );
        let d = diff_runs(&store, &partial, &full);
        let of = |id: &str| d.stages.iter().find(|s| s.stage.as_str() == id).unwrap();
        assert_eq!(of("clean").a_from.as_deref(), Some("r1"));
        assert!(!of("clean").key_changed);
        assert_eq!(of("split").a_from.as_deref(), Some("r1"));
        assert_eq!(of("split").a_outcome, Some(Executed));
        assert!(of("split").key_changed);
        assert_eq!(of("train").a_from, None);
        assert_eq!(of("train").b_from, None);
        let split_rows = d
            .metrics
            .iter()
            .find(|m| m.stage.as_str() == "split")
            .unwrap();
        assert_eq!((split_rows.a, split_rows.b), (Some(2.0), Some(3.0)));
        // With nothing earlier to stand on, a stage is only in the run that has it.
        let d = diff_runs(&store, &full, &partial);
        assert_eq!(d.stages.len(), 3);
        assert_eq!(
            d.stages
                .iter()
                .find(|s| s.stage.as_str() == "split")
                .unwrap()
                .b_from
                .as_deref(),
            Some("r1")
        );
    }
}
