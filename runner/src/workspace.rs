//! The workspace copies of stage outputs: the files and folders a pipeline names
//! (`data/processed/train.parquet`, `models/best`) that hold what the store keeps.
//!
//! A stage that is fresh is skipped, but its workspace copies may have changed since it ran:
//! deleted, edited, or overwritten by a stage of another pipeline that writes the same path.
//! `status` says so, and `run` puts the stage's output back without losing anything: a copy
//! holding content the store does not keep (someone edited or replaced it) is moved to the
//! store's `quarantine/` first, and the run says where. A stage that executes or is restored
//! writes its outputs over its copies the same way.
//!
//! What a copy should hold is the recorded output, or the stage kind's view of it
//! ([`crate::Stage::workspace_view`]): a promotion's model folder shows the model its ref
//! points at now, so the main pipeline's promotion, fresh or restored, does not put back a
//! model a fine-tune's promotion has since replaced. A dated output
//! (`to_review_{date}.csv`) is where it belongs under the day of the run that wrote it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use artifacts::{OutputRef, Store};
use serde::Serialize;

use crate::error::Result;
use crate::spec::{Pipeline, StageSpec};

/// Where an output's workspace copy lives (`{date}` in a path is today's date).
pub(crate) fn workspace_path(p: &Pipeline, rel: &str) -> PathBuf {
    let date = chrono::Local::now().format("%Y%m%d").to_string();
    p.root.join(rel.replace("{date}", &date))
}

/// The copies a dated output path (`data/review/to_review_{date}.csv`) names on any day:
/// the files beside it whose names have eight digits where the file name has `{date}`.
fn dated_copies(p: &Pipeline, rel: &str) -> Vec<PathBuf> {
    let path = p.root.join(rel);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return vec![];
    };
    let Some((before, after)) = name.split_once("{date}") else {
        return vec![];
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n.len() == before.len() + 8 + after.len()
                    && n.starts_with(before)
                    && n.ends_with(after)
                    && n[before.len()..before.len() + 8]
                        .bytes()
                        .all(|b| b.is_ascii_digit())
            })
        })
        .map(|e| e.path())
        .collect()
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
    /// Another version the store holds (an older output, or another pipeline's output at
    /// the same path): `run` puts the output back.
    OtherVersion,
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
        }
    }
}

/// A copy that does not hold its output, with where it is and what belongs there.
pub(crate) struct Drifted {
    /// What status reports.
    pub drift: WorkspaceDrift,
    dest: PathBuf,
    output: OutputRef,
}

/// The copies of the outputs `outs` records for `spec` that do not hold them. With
/// `relink`, a copy that holds its output but is not a hard link to it becomes one again
/// ([`Store::relink`]).
pub(crate) fn drift(
    p: &Pipeline,
    store: &Store,
    spec: &StageSpec,
    outs: &BTreeMap<String, OutputRef>,
    relink: bool,
) -> Result<Vec<Drifted>> {
    let mut found = Vec::new();
    for (name, o) in &spec.outputs {
        let Some(r) = shown(store, spec, outs, name) else {
            continue;
        };
        let dest = workspace_path(p, &o.workspace);
        // A dated output is where it belongs under the date of the run that wrote it: a
        // fresh stage does not copy it to today's name.
        if store.workspace_matches(&r, &dest) {
            if relink {
                store.relink(&r, &dest)?;
            }
            continue;
        }
        if !dest.exists()
            && dated_copies(p, &o.workspace)
                .iter()
                .any(|d| store.workspace_matches(&r, d))
        {
            continue;
        }
        let copy = if std::fs::symlink_metadata(&dest).is_err() {
            WorkspaceCopy::Missing
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
            output: r,
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
    outs: &BTreeMap<String, OutputRef>,
    dry_run: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    for Drifted {
        drift,
        dest,
        output,
    } in drift(p, store, spec, outs, !dry_run)?
    {
        let path = &drift.path;
        let note = match (&drift.copy, dry_run) {
            (WorkspaceCopy::Edited, true) => format!(
                "would move the changed `{path}` to the store's quarantine/ and put the stage's output back"
            ),
            (WorkspaceCopy::Missing | WorkspaceCopy::OtherVersion, true) => {
                format!("would put `{path}` back")
            }
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
        let Some(r) = shown(store, spec, outs, name) else {
            continue;
        };
        let dest = workspace_path(p, &o.workspace);
        if store.workspace_matches(&r, &dest) {
            store.relink(&r, &dest)?;
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
        store.materialise(&r, &dest)?;
    }
    Ok(())
}

/// What the workspace copy of output `name` shows: the stage kind's view of it (a
/// promotion's folder shows its ref's model) when that is intact in the store, else the
/// recorded output.
fn shown(
    store: &Store,
    spec: &StageSpec,
    outs: &BTreeMap<String, OutputRef>,
    name: &str,
) -> Option<OutputRef> {
    let recorded = outs.get(name)?;
    Some(
        spec.stage
            .workspace_view(name, store, &spec.params)
            .filter(|v| v.kind == recorded.kind && store.output_intact(v))
            .unwrap_or_else(|| recorded.clone()),
    )
}

fn relative(p: &Pipeline, path: &Path) -> String {
    path.strip_prefix(&p.root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}
