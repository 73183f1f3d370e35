//! The workspace copies of stage outputs: the files and folders a pipeline names
//! (`data/processed/train.parquet`, `models/best`) that hold what the store keeps.
//!
//! A stage that is fresh is skipped, but its workspace copies may have changed since it ran:
//! deleted, edited, or overwritten by a stage of another pipeline that writes the same path
//! (a fine-tune's promotion writes `models/best` too). `status` says so, and `run` acts on it
//! without losing anything:
//! - a missing copy, or one holding another version the store keeps, is put back;
//! - a copy holding content of its own (someone edited or replaced it) is moved to the
//!   store's `quarantine/` first, and the run says where;
//! - a copy holding another stage's last output is left as it is: that stage wrote it after
//!   this one ran, and a run that executes nothing changes nothing (`--force` writes this
//!   stage's again).
//!
//! A stage that executes or is restored writes its outputs over its copies; a copy with
//! content of its own is moved aside the same way first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use artifacts::{OutputRef, StageRecord, Store};
use serde::Serialize;

use crate::error::Result;
use crate::spec::{Pipeline, StageSpec};

/// Where an output's workspace copy lives (`{date}` in a path is today's date).
pub(crate) fn workspace_path(p: &Pipeline, rel: &str) -> PathBuf {
    let date = chrono::Local::now().format("%Y%m%d").to_string();
    p.root.join(rel.replace("{date}", &date))
}

/// What a fresh stage's workspace copy holds instead of the stage's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WorkspaceCopy {
    /// Nothing is there.
    Missing,
    /// Content the store does not hold: someone edited or replaced it. `run` moves it to the
    /// store's `quarantine/` and puts the output back.
    Edited,
    /// Another version the store holds (an older output): `run` puts the output back.
    OtherVersion,
    /// The last output of another stage, which wrote the same path after this one ran (a
    /// fine-tune's promotion writes `models/best` after the first promotion): left.
    OtherStage {
        /// That stage's id.
        stage: String,
        /// The run in which it wrote it.
        run_id: String,
    },
}

/// One workspace copy of a fresh stage that does not hold the stage's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspaceDrift {
    /// The copy's path, as the pipeline names it.
    pub path: String,
    /// What it holds.
    #[serde(flatten)]
    pub copy: WorkspaceCopy,
}

impl WorkspaceDrift {
    /// Whether `run` changes this copy (it leaves another stage's output in place).
    pub fn run_changes_it(&self) -> bool {
        !matches!(self.copy, WorkspaceCopy::OtherStage { .. })
    }
}

impl fmt::Display for WorkspaceDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = &self.path;
        match &self.copy {
            WorkspaceCopy::Missing => write!(
                f,
                "`{path}` is not in the workspace; `run` puts the stage's output there"
            ),
            WorkspaceCopy::Edited => write!(
                f,
                "`{path}` was changed in the workspace; `run` moves the changed copy to the store's quarantine/ and puts the stage's output back"
            ),
            WorkspaceCopy::OtherVersion => write!(
                f,
                "`{path}` holds another version of the output; `run` puts this one back"
            ),
            WorkspaceCopy::OtherStage { stage, run_id } => write!(
                f,
                "`{path}` holds the output of stage `{stage}` (run {run_id}), written after this stage's; `run` leaves it"
            ),
        }
    }
}

/// Every stage's last record, read once and only when a copy needs it.
#[derive(Default)]
pub(crate) struct LastRecords(OnceLock<Vec<StageRecord>>);

impl LastRecords {
    fn get(&self, store: &Store) -> &[StageRecord] {
        self.0
            .get_or_init(|| store.stage_records().unwrap_or_default())
    }
}

/// A copy that does not hold its output, with where it is and what belongs there.
pub(crate) struct Drifted {
    /// What status reports.
    pub drift: WorkspaceDrift,
    dest: PathBuf,
    output: OutputRef,
}

/// The copies of the outputs `rec` records for `spec` that do not hold them.
pub(crate) fn drift(
    p: &Pipeline,
    store: &Store,
    spec: &StageSpec,
    rec: &StageRecord,
    records: &LastRecords,
) -> Result<Vec<Drifted>> {
    let outs = &rec.outputs;
    let mut found = Vec::new();
    for (name, o) in &spec.outputs {
        let Some(r) = outs.get(name) else { continue };
        let dest = workspace_path(p, &o.workspace);
        if store.workspace_matches(r, &dest) {
            continue;
        }
        let copy = if std::fs::symlink_metadata(&dest).is_err() {
            WorkspaceCopy::Missing
        } else if let Some(other) = records
            .get(store)
            .iter()
            .filter(|o| {
                // RFC 3339 times in UTC to the second, written by one function: their order is
                // the text's; a tie leaves the copy (a run that executes nothing changes nothing).
                o.stage.as_str() != spec.id
                    && o.finished_at >= rec.finished_at
                    && o.outputs.values().any(|x| {
                        x.kind == r.kind && x.id != r.id && store.workspace_matches(x, &dest)
                    })
            })
            // Of several stages that hold the same object (a model and its promotion), the
            // last one wrote it here; at the same second, one whose output of this name
            // holds it.
            .max_by_key(|o| {
                let same_name = o
                    .outputs
                    .get(name)
                    .is_some_and(|x| store.workspace_matches(x, &dest));
                (o.finished_at.clone(), same_name)
            })
        {
            WorkspaceCopy::OtherStage {
                stage: other.stage.to_string(),
                run_id: other.run_id.clone(),
            }
        } else if store.holds_content_of(&dest)? {
            WorkspaceCopy::OtherVersion
        } else {
            WorkspaceCopy::Edited
        };
        found.push(Drifted {
            drift: WorkspaceDrift {
                path: relative(p, &dest),
                copy,
            },
            dest,
            output: r.clone(),
        });
    }
    Ok(found)
}

/// Puts a fresh (or frozen) stage's outputs back where its copies do not hold them, as
/// [`WorkspaceCopy`] says; with `dry_run`, only says what it would do. Adds one sentence
/// per copy to `notes` as it goes, so a failure later still reports what was moved.
pub(crate) fn put_back(
    p: &Pipeline,
    store: &Store,
    spec: &StageSpec,
    rec: &StageRecord,
    records: &LastRecords,
    dry_run: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    for Drifted {
        drift,
        dest,
        output,
    } in drift(p, store, spec, rec, records)?
    {
        let path = &drift.path;
        let note = match (&drift.copy, dry_run) {
            (WorkspaceCopy::OtherStage { stage, .. }, true) => {
                format!("would leave `{path}`: it holds the output of stage `{stage}`")
            }
            (WorkspaceCopy::Edited, true) => format!(
                "would move the changed `{path}` to the store's quarantine/ and put the stage's output back"
            ),
            (WorkspaceCopy::Missing | WorkspaceCopy::OtherVersion, true) => {
                format!("would put `{path}` back")
            }
            (WorkspaceCopy::OtherStage { stage, run_id }, false) => format!(
                "left `{path}` as it is: it holds the output of stage `{stage}` (run {run_id}), written after this stage's (`run --force {}` writes this stage's)",
                spec.id
            ),
            (WorkspaceCopy::Missing, false) => {
                store.materialise(&output, &dest)?;
                format!("put `{path}` back (it was not in the workspace)")
            }
            (WorkspaceCopy::OtherVersion, false) => {
                store.materialise(&output, &dest)?;
                format!("put `{path}` back (it held another version, which the store keeps)")
            }
            (WorkspaceCopy::Edited, false) => {
                let aside = store.set_aside(&dest, path)?;
                notes.push(format!(
                    "the copy of `{path}` changed in the workspace was moved to {}",
                    aside.display()
                ));
                store.materialise(&output, &dest)?;
                format!("put `{path}` back")
            }
        };
        notes.push(note);
    }
    Ok(())
}

/// Writes outputs a stage just produced (or that were restored) over their workspace
/// copies; a copy with content of its own is moved to the store's `quarantine/` first,
/// with a sentence in `notes` saying where.
pub(crate) fn write(
    p: &Pipeline,
    store: &Store,
    spec: &StageSpec,
    outs: &BTreeMap<String, OutputRef>,
    notes: &mut Vec<String>,
) -> Result<()> {
    for (name, o) in &spec.outputs {
        let Some(r) = outs.get(name) else { continue };
        let dest = workspace_path(p, &o.workspace);
        if store.workspace_matches(r, &dest) {
            continue;
        }
        if !store.holds_content_of(&dest)? {
            let rel = relative(p, &dest);
            let aside = store.set_aside(&dest, &rel)?;
            notes.push(format!(
                "`{rel}` had been changed in the workspace; the changed copy was moved to {}",
                aside.display()
            ));
        }
        store.materialise(r, &dest)?;
    }
    Ok(())
}

fn relative(p: &Pipeline, path: &Path) -> String {
    path.strip_prefix(&p.root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}
