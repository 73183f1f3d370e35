//! `isco-dag push` and `isco-dag pull`: move the store's work to and from the remote.
use std::path::PathBuf;

use artifacts::{RefSync, Transfer};

use crate::console;

/// Where the store and the remote are.
#[derive(clap::Args)]
pub struct Args {
    /// Config file whose `[remote]` section names the remote.
    #[arg(long, default_value = "config/default.toml")]
    config: PathBuf,
    /// Store directory (default: artifacts/store).
    #[arg(long, env = "ISCO_DAG_STORE")]
    store: Option<PathBuf>,
    /// The remote, `s3://bucket/prefix` (default: the config's `[remote] url`).
    #[arg(long, env = "ISCO_DAG_REMOTE", value_name = "URL")]
    remote: Option<String>,
    /// Fail at once if another process holds the store lock, instead of waiting.
    #[arg(long)]
    no_wait: bool,
}

/// `isco-dag push`.
#[derive(clap::Args)]
pub struct PushArgs {
    #[command(flatten)]
    at: Args,
    /// Where the remote's ref was moved by another store since this one last synced,
    /// replace it with this store's (the default refuses and says so).
    #[arg(long)]
    ours: bool,
}

/// `isco-dag pull`.
#[derive(clap::Args)]
pub struct PullArgs {
    #[command(flatten)]
    at: Args,
    /// Where this store moved a ref that the remote moved too, take the remote's (the
    /// default refuses and says so).
    #[arg(long)]
    theirs: bool,
}

fn open(a: &Args) -> anyhow::Result<(artifacts::Store, artifacts::Remote, artifacts::StoreLock)> {
    let settings = super::remote_from_config(&a.config)?;
    let remote = super::open_remote(
        settings.as_ref(),
        a.remote.as_deref().unwrap_or(""),
        &a.config.display().to_string(),
    )?;
    let store = super::open_store(a.store.as_ref(), None)?;
    let lock = store.lock(!a.no_wait, &|holder| {
        console::error(&format!("waiting for the store lock held by {holder} …"))
    })?;
    Ok((store, remote, lock))
}

fn report(
    verb: &str,
    url: &str,
    t: &Transfer,
    refs: artifacts::Result<Vec<RefSync>>,
    seconds: f64,
) -> anyhow::Result<()> {
    console::out(&format!(
        "{verb} {url}: {} objects ({:.1} MB), {} run-cache entries, {} runs in {seconds:.2}s",
        t.objects,
        t.bytes as f64 / 1e6,
        t.entries,
        t.runs
    ));
    for r in refs? {
        if !matches!(r, RefSync::Same { .. }) {
            console::out(&r.to_string());
        }
    }
    Ok(())
}

pub fn push(a: PushArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (store, remote, _lock) = open(&a.at)?;
    let (t, refs) = remote.push(&store, a.ours)?;
    report(
        "pushed to",
        &remote.url(),
        &t,
        refs,
        started.elapsed().as_secs_f64(),
    )
}

pub fn pull(a: PullArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (store, remote, _lock) = open(&a.at)?;
    let (t, refs) = remote.pull(&store, a.theirs)?;
    report(
        "pulled from",
        &remote.url(),
        &t,
        refs,
        started.elapsed().as_secs_f64(),
    )
}
