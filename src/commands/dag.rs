use std::path::PathBuf;

use crate::console;

/// `isco-dag dag`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file.
    #[arg(default_value = "pipelines/full.toml")]
    pipeline: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Dot,
    Mermaid,
}

/// Text or JSON, for commands with both.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format2 {
    /// Human-readable.
    Text,
    /// Machine-readable.
    Json,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let p = super::load_pipeline(&a.pipeline)?;
    let dag = runner::dag::Dag::build(&p)?;
    let f = match a.format {
        Format::Text => "text",
        Format::Dot => "dot",
        Format::Mermaid => "mermaid",
    };
    console::out(runner::dag::render(&p, &dag, f).trim_end());
    Ok(())
}
