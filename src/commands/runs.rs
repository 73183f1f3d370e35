use std::path::PathBuf;

use super::dag::Format2;
use artifacts::StageOutcome;

use crate::console;

/// `isco-dag runs`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Store directory (default: artifacts/store).
    #[arg(long, global = true, env = "ISCO_DAG_STORE")]
    store: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    format: Format2,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// List recorded runs, oldest first, with the params each set (`-S`).
    List {
        /// Add a column with this metric of each run, as `STAGE.METRIC`
        /// (`evaluate.test.accuracy`; nested metrics joined by dots, as `runs show` prints
        /// them). A stage the run did not include shows its value from the run before.
        #[arg(long = "metric", value_name = "STAGE.METRIC")]
        metrics: Vec<String>,
    },
    /// Show one run (by default the last).
    Show {
        /// The run: `last`, `last~1`, an id or a unique id prefix.
        #[arg(default_value = "last")]
        id: String,
    },
    /// Compare two runs stage by stage and metric by metric (by default the last two).
    Diff {
        /// The earlier run (`last~1`, an id or a unique id prefix).
        #[arg(default_value = "last~1")]
        a: String,
        /// The later run.
        #[arg(default_value = "last")]
        b: String,
    },
}

/// Whether every value of a metric is a whole number (a count, an epoch), so it prints as one.
fn all_whole(mut values: impl Iterator<Item = f64>) -> bool {
    values.all(|x| x.fract() == 0.0 && x.abs() < 1e15)
}

/// A metric as `runs diff` prints it: `count` (every value of it whole) as a whole number,
/// otherwise to four places; `sign` for a change.
fn fmt_metric(v: Option<f64>, count: bool, sign: bool) -> String {
    match v {
        None => "-".into(),
        Some(x) if count && sign => format!("{x:+.0}"),
        Some(x) if count => format!("{x:.0}"),
        Some(x) if sign => format!("{x:+.4}"),
        Some(x) => format!("{x:.4}"),
    }
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let store = super::open_existing_store(a.store.as_ref())?;
    let json = matches!(a.format, Format2::Json);
    match a.cmd {
        Cmd::List { metrics } => {
            let runs = store.runs()?;
            let metrics = metrics
                .iter()
                .map(|m| match m.split_once('.') {
                    Some((stage, path)) if !stage.is_empty() && !path.is_empty() => {
                        Ok((m, artifacts::StageId::from(stage), path))
                    }
                    _ => Err(super::UsageError(format!(
                        "--metric `{m}` names no stage: give STAGE.METRIC, e.g. evaluate.test.accuracy (`isco-dag runs show` lists each stage's metrics)"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let values: Vec<Vec<Option<f64>>> = runs
                .iter()
                .map(|r| {
                    metrics
                        .iter()
                        .map(|(_, stage, path)| {
                            runner::history::metric_as_of(&runs, r, stage, path)
                        })
                        .collect()
                })
                .collect();
            // A column of whole numbers (counts, epochs) prints as whole numbers.
            let counts: Vec<bool> = (0..metrics.len())
                .map(|k| all_whole(values.iter().filter_map(|v| v[k])))
                .collect();
            for (k, (m, _, _)) in metrics.iter().enumerate() {
                if !runs.is_empty() && values.iter().all(|v| v[k].is_none()) {
                    return Err(super::UsageError(format!(
                        "no run recorded the metric `{m}`; `isco-dag runs show` lists each stage's metrics"
                    ))
                    .into());
                }
            }
            if json {
                console::json(&runs);
            } else {
                let width = runs.iter().map(|r| r.pipeline.len()).max().unwrap_or(0);
                for (r, values) in runs.iter().zip(values) {
                    let count = |o: artifacts::StageOutcome| {
                        r.stages.iter().filter(|s| s.outcome == o).count()
                    };
                    let mut line = format!(
                        "{}  {:<11} {:<width$}  executed {} skipped {} restored {} failed {}",
                        r.id,
                        r.status,
                        r.pipeline,
                        count(artifacts::StageOutcome::Executed),
                        count(artifacts::StageOutcome::Skipped),
                        count(artifacts::StageOutcome::Restored),
                        count(artifacts::StageOutcome::Failed),
                    );
                    for (((m, _, _), v), count) in metrics.iter().zip(values).zip(&counts) {
                        line.push_str(&format!("  {m}={}", fmt_metric(v, *count, false)));
                    }
                    for o in &r.overrides {
                        line.push_str(&format!("  -S {o}"));
                    }
                    console::out(&line);
                }
            }
        }
        Cmd::Show { id } => {
            let r = store.run(&id)?;
            if json {
                console::json(&r);
            } else {
                console::out(&format!(
                    "run {} of {} ({}), started {}, finished {}{}",
                    r.id,
                    r.pipeline,
                    r.status,
                    r.started_at,
                    r.finished_at,
                    r.overrides
                        .iter()
                        .map(|o| format!(" -S {o}"))
                        .collect::<String>()
                ));
                for s in &r.stages {
                    console::out(&format!(
                        "  {:<18} {:<10} {:<9} {:>8.2}s  key {}",
                        s.id,
                        s.kind,
                        s.outcome.as_str(),
                        s.duration_s,
                        &s.key[..s.key.len().min(12)]
                    ));
                    for reason in &s.reasons {
                        console::out(&format!("      because {reason}"));
                    }
                    if let Some(e) = &s.error {
                        console::out(&format!("      error: {e}"));
                    }
                    for (name, v) in runner::history::metric_values(&s.metrics) {
                        console::out(&format!("      {name} = {v}"));
                    }
                }
            }
        }
        Cmd::Diff { a: ra, b: rb } => {
            // `last~N` past the first run is a store with too few runs, not a wrong id.
            let run = |id: &str| match store.run(id) {
                Err(artifacts::Error::UnknownRun(_)) if id.starts_with("last") => {
                    let n = store.runs().map(|r| r.len()).unwrap_or(0);
                    Err(anyhow::anyhow!(
                        "no run `{id}`: this store has recorded {n} run{}; `runs diff` compares two, so run a pipeline again or name two runs (`isco-dag runs list` shows them)",
                        if n == 1 { "" } else { "s" }
                    ))
                }
                r => Ok(r?),
            };
            let d = runner::history::diff_runs(&store, &run(&ra)?, &run(&rb)?);
            if json {
                console::json(&d);
            } else {
                console::out(&format!("runs {} -> {}", d.a, d.b));
                // Stages a run did not include stand as an earlier run left them.
                for (run, side) in [(&d.a, 0), (&d.b, 1)] {
                    let mut from: Vec<(&String, Vec<&str>)> = Vec::new();
                    for s in &d.stages {
                        let Some(f) = [&s.a_from, &s.b_from][side] else {
                            continue;
                        };
                        match from.iter_mut().find(|(r, _)| *r == f) {
                            Some((_, ids)) => ids.push(s.stage.as_str()),
                            None => from.push((f, vec![s.stage.as_str()])),
                        }
                    }
                    for (f, ids) in from {
                        console::out(&format!(
                            "  (run {run} did not include {}: compared as run {f} left them)",
                            ids.join(", ")
                        ));
                    }
                }
                for s in &d.stages {
                    let outcome = |o: Option<StageOutcome>| o.map_or("-", StageOutcome::as_str);
                    let either = |o| s.a_outcome == Some(o) || s.b_outcome == Some(o);
                    let key = if !s.key_changed {
                        "same key"
                    } else if s.a_outcome.is_none() {
                        "only in the newer run"
                    } else if s.b_outcome.is_none() {
                        "only in the older run"
                    } else if either(StageOutcome::Blocked) {
                        "no key to compare: a blocked stage computes none"
                    } else if s.changes.is_empty() && either(StageOutcome::Failed) {
                        "key changed (no fingerprint was kept for the failed attempt)"
                    } else {
                        "key changed"
                    };
                    console::out(&format!(
                        "  {:<18} {:<9} -> {:<9} {key}",
                        s.stage,
                        outcome(s.a_outcome),
                        outcome(s.b_outcome),
                    ));
                    for c in &s.changes {
                        console::out(&format!("      {c}"));
                    }
                }
                // The metrics that moved, of the stages both runs have (a stage only one has
                // is named above; its metrics are in the JSON).
                let in_both = |id: &artifacts::StageId| {
                    d.stages
                        .iter()
                        .any(|s| &s.stage == id && s.a_outcome.is_some() && s.b_outcome.is_some())
                };
                for m in d
                    .metrics
                    .iter()
                    .filter(|m| m.delta != Some(0.0) && in_both(&m.stage))
                {
                    let count = all_whole([m.a, m.b].into_iter().flatten());
                    let delta = match m.delta {
                        Some(_) => format!(" ({})", fmt_metric(m.delta, count, true)),
                        None => String::new(),
                    };
                    console::out(&format!(
                        "  {}.{}: {} -> {}{delta}",
                        m.stage,
                        m.metric,
                        fmt_metric(m.a, count, false),
                        fmt_metric(m.b, count, false),
                    ));
                }
            }
        }
    }
    Ok(())
}
