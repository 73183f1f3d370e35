use std::path::PathBuf;

use runner::StageState;

use crate::console;

/// `isco-dag status`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file.
    #[arg(default_value = "pipelines/full.toml")]
    pipeline: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: super::dag::Format2,
    /// What would be stale with these params set (as `run -S`).
    #[arg(short = 'S', long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<runner::spec::Override>,
    /// Print nothing; exit with 1 when a stage is stale (a `run` would execute it) or a
    /// fresh stage's workspace copy was deleted or changed (a `run` would put it back), and
    /// 0 otherwise, for scripts: `isco-dag status -q p.toml || isco-dag run p.toml`.
    #[arg(short, long, conflicts_with = "format")]
    quiet: bool,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let p = super::load_pipeline_with(&a.pipeline, &a.set)?;
    let st = runner::status(&p)?;
    let to_put_back = st.iter().map(|s| s.workspace.len()).sum::<usize>();
    if a.quiet {
        if st.iter().any(|s| s.state == StageState::Stale) || to_put_back > 0 {
            std::process::exit(1);
        }
        return Ok(());
    }
    if matches!(a.format, super::dag::Format2::Json) {
        console::json(&st);
        return Ok(());
    }
    for s in &st {
        match s.state {
            StageState::Fresh if s.workspace.is_empty() => {
                console::out(&format!("[FRESH] {}", s.id))
            }
            StageState::Fresh => {
                for w in &s.workspace {
                    console::out(&format!("[FRESH] {}: {w}", s.id));
                }
            }
            StageState::Frozen => {
                for r in &s.reasons {
                    console::out(&format!(
                        "[FROZEN] {}: keeps its last results although {r}",
                        s.id
                    ));
                }
                for w in &s.workspace {
                    console::out(&format!("[FROZEN] {}: {w}", s.id));
                }
            }
            StageState::Stale => {
                let suffix = if s.restorable {
                    " (restorable from the run-cache)"
                } else {
                    ""
                };
                for r in &s.reasons {
                    console::out(&format!("[DIRTY] {}: {r}{suffix}", s.id));
                }
            }
        }
    }
    let count = |state| st.iter().filter(|s| s.state == state).count();
    let (stale, frozen) = (count(StageState::Stale), count(StageState::Frozen));
    console::out(&format!(
        "{} stages: {} fresh, {stale} stale{}{}",
        st.len(),
        st.len() - stale - frozen,
        if frozen > 0 {
            format!(", {frozen} frozen")
        } else {
            String::new()
        },
        match to_put_back {
            0 => String::new(),
            1 => "; 1 workspace copy to put back".to_string(),
            n => format!("; {n} workspace copies to put back"),
        }
    ));
    Ok(())
}
