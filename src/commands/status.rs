use std::path::PathBuf;

use crate::console;

/// `isco-dag status`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file.
    pipeline: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: super::dag::Format2,
    /// What would be stale with these params set (as `run -S`).
    #[arg(short = 'S', long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<runner::spec::Override>,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let p = super::load_pipeline_with(&a.pipeline, &a.set)?;
    let st = runner::status(&p)?;
    if matches!(a.format, super::dag::Format2::Json) {
        console::json(&st);
        return Ok(());
    }
    for s in &st {
        if s.state == "fresh" {
            console::out(&format!("[FRESH] {}", s.id));
        } else if s.state == "frozen" {
            for r in &s.reasons {
                console::out(&format!(
                    "[FROZEN] {}: keeps its last results although {r}",
                    s.id
                ));
            }
        } else {
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
    let stale = st.iter().filter(|s| s.state == "stale").count();
    let frozen = st.iter().filter(|s| s.state == "frozen").count();
    console::out(&format!(
        "{} stages: {} fresh, {stale} stale{}",
        st.len(),
        st.len() - stale - frozen,
        if frozen > 0 {
            format!(", {frozen} frozen")
        } else {
            String::new()
        }
    ));
    Ok(())
}
