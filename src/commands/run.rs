use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use artifacts::StageOutcome;
use runner::exec::Force;
use runner::{Event, RunOptions};

use crate::console;

/// `isco-dag run`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file.
    #[arg(default_value = "pipelines/full.toml")]
    pipeline: PathBuf,
    /// Show what would run, be restored from the run-cache or be put back in the workspace,
    /// and why; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Re-run every selected stage, or only STAGE, regardless of freshness.
    #[arg(long, num_args = 0..=1, default_missing_value = "*", value_name = "STAGE")]
    force: Option<String>,
    /// Run STAGE and what it depends on, nothing downstream.
    #[arg(long, value_name = "STAGE", conflicts_with = "only")]
    until: Option<String>,
    /// Run only STAGE; its inputs come from upstream stages' last successful runs.
    #[arg(long, value_name = "STAGE")]
    only: Option<String>,
    /// Stages run at once (default: number of cores).
    #[arg(long, short = 'j', default_value_t = 0, env = "ISCO_DAG_JOBS")]
    jobs: usize,
    /// Fail at once if another run holds the store lock, instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Print why each stage runs, and what the stages report.
    #[arg(short, long)]
    verbose: bool,
    /// Set a param for this run only, without editing a file: SECTION.KEY=VALUE for a
    /// config section (`-S training.epochs=10`) or STAGE.KEY=VALUE for one stage; repeatable.
    /// The run record keeps them.
    #[arg(short = 'S', long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<runner::spec::Override>,
    /// Share work through the remote store: a stale stage whose key the remote holds is
    /// restored from it instead of computed, what this run computes is uploaded, and refs
    /// (`best`) are taken before and published after the run. The remote is the pipeline's
    /// (or its config's) `[remote]`; `--remote s3://bucket/prefix` (or ISCO_DAG_REMOTE)
    /// names another.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "URL", env = "ISCO_DAG_REMOTE")]
    remote: Option<String>,
}

fn line(run: &artifacts::StageRun, dry_run: bool) -> String {
    let reasons = || {
        run.reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let what = match run.outcome {
        StageOutcome::Skipped if run.reasons.is_empty() => "fresh".to_string(),
        StageOutcome::Skipped => "frozen (stale, kept its last results)".to_string(),
        // A dry run restores nothing: the stage's note says where it would come from.
        StageOutcome::Restored if dry_run => "would be restored".to_string(),
        StageOutcome::Restored => "restored from the run-cache".to_string(),
        StageOutcome::WouldRun => format!("would run: {}", reasons()),
        StageOutcome::Blocked => reasons(),
        StageOutcome::Failed => run.error.clone().unwrap_or_default(),
        StageOutcome::Executed => format!("{:.2}s", run.duration_s),
    };
    let outcome = match run.outcome {
        StageOutcome::Restored if dry_run => "restore",
        o => o.as_str(),
    };
    format!("{outcome:<9} {:<18} {what}", run.id)
}

/// One structured event per finished stage, so that `--log-format json` alone tells what a
/// run did: the outcome (`executed`, `skipped`, `restored`, `failed`, …) with its reasons,
/// duration, key and metrics.
fn log_finished(run: &artifacts::StageRun, summary: &[String]) {
    let reasons = serde_json::to_string(&run.reasons).unwrap_or_default();
    let metrics = run.metrics.to_string();
    let summary = summary.join("; ");
    match run.outcome {
        StageOutcome::Failed => tracing::error!(
            event = "stage_finished",
            stage = %run.id,
            outcome = run.outcome.as_str(),
            duration_s = run.duration_s,
            error = run.error.as_deref().unwrap_or(""),
            "stage failed"
        ),
        _ => tracing::info!(
            event = "stage_finished",
            stage = %run.id,
            kind = %run.kind,
            outcome = run.outcome.as_str(),
            duration_s = run.duration_s,
            key = %run.key,
            reasons = %reasons,
            metrics = %metrics,
            summary = %summary,
            "stage finished"
        ),
    }
}

/// On Ctrl-C or SIGTERM: clear the progress bars, record the run as `interrupted` with the
/// stages it finished (their results are kept and stay fresh), say so in one line, and exit
/// with 130 as a shell expects. The stage that was running is simply not recorded.
fn on_interrupt(
    store_dir: PathBuf,
    run_id: Arc<Mutex<Option<String>>>,
    progress: Option<indicatif::MultiProgress>,
) {
    let handler = move || {
        if let Some(mp) = &progress {
            let _ = mp.clear();
        }
        let id = run_id.lock().ok().and_then(|g| g.clone());
        let kept = id.and_then(|id| {
            let store = artifacts::Store::open(&store_dir).ok()?;
            store.mark_interrupted(&id).ok()
        });
        match kept {
            Some(rec) => {
                let done: Vec<&str> = rec
                    .stages
                    .iter()
                    .filter(|s| {
                        matches!(
                            s.outcome,
                            StageOutcome::Executed | StageOutcome::Skipped | StageOutcome::Restored
                        )
                    })
                    .map(|s| s.id.as_str())
                    .collect();
                console::error(&format!(
                    "interrupted: run {} recorded as interrupted; kept the {} finished stage(s){}; `isco-dag run` goes on from there",
                    rec.id,
                    done.len(),
                    if done.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", done.join(", "))
                    }
                ));
            }
            None => console::error("interrupted before the run was recorded; nothing was kept"),
        }
        std::process::exit(130);
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        console::error(&format!(
            "warning: Ctrl-C will not be recorded cleanly ({e})"
        ));
    }
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let p = super::load_pipeline_with(&a.pipeline, &a.set)?;
    let opts = RunOptions {
        dry_run: a.dry_run,
        force: a.force.map(|f| {
            if f == "*" {
                Force::All
            } else {
                Force::Stage(f)
            }
        }),
        until: a.until,
        only: a.only,
        jobs: a.jobs,
        no_wait: a.no_wait,
        progress: console::progress(),
        remote: match &a.remote {
            Some(url) => Some(Arc::new(super::open_remote(
                p.remote.as_ref(),
                url,
                &p.path.display().to_string(),
            )?)),
            None => None,
        },
    };
    let verbose = a.verbose;
    let counts = Mutex::new([0usize; 6]);
    let run_id: Arc<Mutex<Option<String>>> = Arc::default();
    if !a.dry_run {
        on_interrupt(p.store_dir.clone(), run_id.clone(), opts.progress.clone());
    }
    let on_event = |e: Event| match e {
        Event::RunStarted { id } => {
            tracing::info!(event = "run_started", run_id = %id, pipeline = %p.rel_path, "run started");
            *run_id.lock().expect("run id") = Some(id);
        }
        Event::Warning(w) => {
            tracing::warn!(event = "warning", "{w}");
            console::error(&format!("warning: {w}"))
        }
        Event::Remote(m) => {
            tracing::info!(event = "remote", "{m}");
            console::out(&format!("remote    {m}"))
        }
        Event::WaitingForLock { holder } => {
            tracing::info!(event = "waiting_for_lock", holder = %holder, "waiting for the store lock");
            console::error(&format!("waiting for the store lock held by {holder} …"))
        }
        Event::LockRecovered { holder } => {
            tracing::warn!(event = "lock_recovered", holder = %holder, "recovered the store lock of a process that died");
            console::error(&format!(
                "recovered the store lock left by a process that died ({holder})"
            ))
        }
        Event::Started { id, reasons } => {
            tracing::info!(
                event = "stage_started",
                stage = %id,
                reasons = %serde_json::to_string(&reasons).unwrap_or_default(),
                "stage started"
            );
            if verbose {
                for r in reasons {
                    console::out(&format!("[DIRTY] {id}: {r}"));
                }
            }
            console::out(&format!("running   {id}"));
        }
        Event::Finished {
            run,
            summary,
            workspace,
        } => {
            log_finished(&run, &summary);
            counts.lock().expect("counts")[run.outcome as usize] += 1;
            if verbose && run.outcome == StageOutcome::WouldRun {
                for r in &run.reasons {
                    console::out(&format!("[DIRTY] {}: {r}", run.id));
                }
            }
            if run.outcome == StageOutcome::Failed {
                console::error(&format!(
                    "error: stage {} failed: {}",
                    run.id,
                    run.error.as_deref().unwrap_or("")
                ));
            }
            console::out(&line(&run, a.dry_run));
            // A restore says where from (this store's run-cache or the remote).
            if verbose || matches!(run.outcome, StageOutcome::Executed | StageOutcome::Restored) {
                for s in summary {
                    console::out(&format!("          {s}"));
                }
            }
            // Whatever the outcome: a workspace copy put back, moved aside or left.
            for w in workspace {
                tracing::info!(event = "workspace", stage = %run.id, "{w}");
                console::out(&format!("          {w}"));
            }
        }
    };
    // A stage named on the command line that the pipeline lacks is a usage error: nothing
    // ran, so there is no run to summarise.
    runner::check_selection(&p, &opts)?;
    let started = std::time::Instant::now();
    let result = runner::run_pipeline(&p, &opts, &on_event);
    let c = counts.into_inner().expect("counts");
    match &result {
        Ok(rec) => tracing::info!(
            event = "run_finished",
            run_id = %rec.id,
            status = %rec.status,
            duration_s = started.elapsed().as_secs_f64(),
            "run finished"
        ),
        Err(e) => {
            tracing::error!(event = "run_finished", status = "failed", error = %e, "run failed")
        }
    }
    // A run refused before any stage (the store locked with `--no-wait`, a damaged store)
    // has nothing to count: its error alone says what happened.
    if result.is_err() && c.iter().all(|&n| n == 0) {
        return result.map(|_| ()).map_err(Into::into);
    }
    let n = |o: StageOutcome| c[o as usize];
    let counts = if a.dry_run {
        // Nothing executed or was restored: say what a run would do.
        format!(
            "{} (dry run): {} would run, {} would be restored, {} skipped, {} failed",
            p.name,
            n(StageOutcome::WouldRun),
            n(StageOutcome::Restored),
            n(StageOutcome::Skipped),
            n(StageOutcome::Failed)
        )
    } else {
        format!(
            "{}: {} executed, {} skipped, {} restored, {} failed, {} blocked",
            p.name,
            n(StageOutcome::Executed),
            n(StageOutcome::Skipped),
            n(StageOutcome::Restored),
            n(StageOutcome::Failed),
            n(StageOutcome::Blocked)
        )
    };
    console::out(&format!(
        "{counts} in {:.2}s",
        started.elapsed().as_secs_f64()
    ));
    result?;
    Ok(())
}
