use std::path::PathBuf;

use super::dag::Format2;
use crate::console;

/// `isco-dag lineage`.
#[derive(clap::Args)]
pub struct Args {
    /// A workspace output path, `stage.output`, or an object id prefix.
    artifact: String,
    /// The pipeline that produced it.
    #[arg(long, default_value = "pipelines/full.toml")]
    pipeline: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format2,
}

/// Prints the tree, each artifact once: one read by several stages is printed in full the
/// first time and referred to after.
fn print(l: &runner::history::Lineage, depth: usize, seen: &mut std::collections::HashSet<String>) {
    let pad = "  ".repeat(depth);
    // The same bytes can be two artifacts (a stage passing its input through unchanged).
    if !seen.insert(format!("{}.{}:{}", l.stage, l.output, l.object)) {
        console::out(&format!(
            "{pad}{}.{} (blake3 {}), shown above",
            l.stage,
            l.output,
            &l.object[..12]
        ));
        return;
    }
    console::out(&format!(
        "{pad}{}.{} (blake3 {}) <- stage {} [{} v{}] key {} in run {}",
        l.stage,
        l.output,
        &l.object[..12],
        l.stage,
        l.kind,
        l.version,
        &l.key[..12],
        l.run_id
    ));
    if let serde_json::Value::Object(m) = &l.params
        && !m.is_empty()
    {
        let ps: Vec<String> = m
            .iter()
            .map(|(k, v)| format!("{k}={}", runner::fingerprint::param_text(v)))
            .collect();
        console::out(&format!("{pad}  params: {}", ps.join(", ")));
    }
    for (f, h) in &l.files {
        console::out(&format!("{pad}  file {f} (blake3 {})", &h[..12]));
    }
    for u in &l.upstream {
        print(u, depth + 1, seen);
    }
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let p = super::load_pipeline(&a.pipeline)?;
    let l = runner::history::lineage(&p, &a.artifact)?;
    if matches!(a.format, Format2::Json) {
        console::json(&l);
    } else {
        print(&l, 0, &mut Default::default());
    }
    Ok(())
}
