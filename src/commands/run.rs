use std::path::PathBuf;
use std::sync::Mutex;

use artifacts::StageOutcome;
use runner::exec::Force;
use runner::{Event, RunOptions};

use crate::console;

/// `isco-dag run`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file, e.g. pipelines/full.toml.
    pipeline: PathBuf,
    /// Show what would run and why; change nothing.
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
}

fn line(run: &artifacts::StageRun) -> String {
    let what = match run.outcome {
        StageOutcome::Skipped if run.reasons.is_empty() => "fresh".to_string(),
        StageOutcome::Skipped => "frozen (stale, kept its last results)".to_string(),
        StageOutcome::Restored => "restored from the run-cache".to_string(),
        StageOutcome::WouldRun => format!("would run: {}", run.reasons.join("; ")),
        StageOutcome::Blocked => run.reasons.join("; "),
        StageOutcome::Failed => run.error.clone().unwrap_or_default(),
        StageOutcome::Executed => format!("{:.2}s", run.duration_s),
    };
    format!("{:<9} {:<18} {what}", run.outcome.as_str(), run.id)
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let p = super::load_pipeline(&a.pipeline)?;
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
    };
    let verbose = a.verbose;
    let counts = Mutex::new([0usize; 6]);
    let on_event = |e: Event| match e {
        Event::WaitingForLock { holder } => {
            console::error(&format!("waiting for the store lock held by {holder} …"))
        }
        Event::LockRecovered { holder } => console::error(&format!(
            "recovered the store lock left by a process that died ({holder})"
        )),
        Event::Started { id, reasons } => {
            if verbose {
                for r in reasons {
                    console::out(&format!("[DIRTY] {id}: {r}"));
                }
            }
            console::out(&format!("running   {id}"));
        }
        Event::Finished { run, summary } => {
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
            console::out(&line(&run));
            if verbose || run.outcome == StageOutcome::Executed {
                for s in summary {
                    console::out(&format!("          {s}"));
                }
            }
        }
    };
    let started = std::time::Instant::now();
    let result = runner::run_pipeline(&p, &opts, &on_event);
    let c = counts.into_inner().expect("counts");
    console::out(&format!(
        "{}: {} executed, {} skipped, {} restored, {} failed, {} blocked{} in {:.2}s",
        p.name,
        c[StageOutcome::Executed as usize],
        c[StageOutcome::Skipped as usize],
        c[StageOutcome::Restored as usize],
        c[StageOutcome::Failed as usize],
        c[StageOutcome::Blocked as usize],
        if a.dry_run {
            format!(
                ", {} would run (dry run)",
                c[StageOutcome::WouldRun as usize]
            )
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64()
    ));
    result?;
    Ok(())
}
