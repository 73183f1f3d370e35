use std::io::Write as _;
use std::path::PathBuf;

/// `isco-dag serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (default: `[serve] addr`, else 127.0.0.1:8000; port 0 picks one).
    #[arg(long, env = "ISCO_DAG_ADDR")]
    addr: Option<String>,
    /// Config file with the [serve] and [inference] sections (default: config/default.toml
    /// if it exists, else built-in defaults).
    #[arg(long, env = "ISCO_DAG_CONFIG")]
    config: Option<PathBuf>,
    /// Store directory (default: `[serve] store`, else artifacts/store).
    #[arg(long, env = "ISCO_DAG_STORE")]
    store: Option<PathBuf>,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let config = match a.config {
        Some(p) if !p.is_file() => {
            return Err(api::Error::Config {
                path: p,
                message:
                    "does not exist; give the path of a TOML file with [serve] and [inference]"
                        .into(),
            }
            .into());
        }
        Some(p) => p,
        None => PathBuf::from("config/default.toml"),
    };
    let mut settings = api::Settings::load(&config)?;
    if let Some(addr) = a.addr {
        settings.serve.addr = addr;
    }
    if let Some(store) = a.store {
        settings.serve.store = store;
    }
    if !settings.serve.store.is_dir() {
        crate::console::error(&format!(
            "no store at {} yet: the service answers 503 until a pipeline run there promotes a model (it is picked up without a restart)",
            settings.serve.store.display()
        ));
    }
    api::serve(settings, |addr| {
        // The bound address, on stdout, so scripts and tests can find a port-0 server.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "listening on http://{addr} (API docs: http://{addr}/docs, review page: http://{addr}/review)"
        );
        let _ = out.flush();
    })?;
    Ok(())
}
