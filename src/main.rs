//! `isco-dag`: the command-line front end. Each subcommand lives in `commands/` with its clap
//! arguments and an `exec` that calls the library crates; this file only parses, sets up
//! logging and maps errors to exit codes (1 failure, 2 usage or configuration).

mod commands;
mod console;

/// mimalloc: coding 150k records allocates and frees about a million small strings across
/// the rayon threads, which glibc's allocator spends a fifth of the run on.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in the `mi_option_e` enum of the
/// mimalloc 3 the allocator crate builds; the bindings name only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays mapped before mimalloc returns it to the OS. Its default
/// (one second) is shorter than the gap between the encoder's passes in a prediction run, so
/// every pass mapped its large activations afresh and the kernel zeroed them again: a tenth
/// of a 150k-record ensemble run. Thirty seconds keeps them through a run (and a burst of
/// requests in the service) and still gives memory back when the process idles.
/// `MIMALLOC_PURGE_DELAY` in the environment still overrides it.
fn keep_freed_memory_mapped() {
    // SAFETY: a plain setter of one allocator option, called once before any other thread
    // starts; it does not replace a value the environment set.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, 30_000) };
}

use clap::{Parser, Subcommand};

/// Codes job descriptions into ISCO-08 occupations with a declarative, cached pipeline.
#[derive(Parser)]
#[command(name = "isco-dag", version, about, propagate_version = true)]
struct Cli {
    /// Log format for tracing output (`RUST_LOG` sets the level).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "ISCO_DAG_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: stale stages execute, fresh ones are skipped (their deleted or edited
    /// workspace copies put back).
    Run(commands::run::Args),
    /// Show which stages are fresh or stale, and why, and the workspace copies a run puts back.
    Status(commands::status::Args),
    /// Print the stage graph.
    Dag(commands::dag::Args),
    /// Run history: list, show, diff.
    Runs(commands::runs::Args),
    /// Code records with the promoted model (or another ref or model directory).
    Predict(commands::predict::Args),
    /// Score a model on labelled files: accuracy, macro-F1, calibration, error tables.
    Evaluate(commands::evaluate::Args),
    /// Serve the promoted model over HTTP, with the coders' review page.
    Serve(commands::serve::Args),
    /// Show how an artifact was produced.
    Lineage(commands::lineage::Args),
    /// Remove store objects no kept run, stage record or ref needs.
    Gc(commands::gc::Args),
    /// Re-hash every object in the store and report corruption.
    Verify(commands::verify::Args),
    /// Upload the store's run-cache entries, objects, runs and refs to the remote.
    Push(commands::remote::PushArgs),
    /// Download the remote's run-cache entries, objects, runs and refs into the store.
    Pull(commands::remote::PullArgs),
    /// Get and check pretrained encoders (for the retrieval and ensemble models).
    Models(commands::models::Args),
    /// Write the synthetic demo data set.
    Demo(commands::demo::Args),
    /// List the stage kinds with their inputs, outputs and params.
    Kinds,
    /// Print a shell completion script (`isco-dag completions bash > /etc/bash_completion.d/isco-dag`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn init_tracing(format: LogFormat) {
    // A JSON log is for machines, which want every run and stage event; a terminal wants
    // only warnings next to the command's own lines. `run` prints each of its events itself
    // (a failed stage, a warning, a recovered lock), so on a terminal its log would say each
    // twice. RUST_LOG overrides both.
    let default = match format {
        LogFormat::Text => "warn,isco_dag::commands::run=off",
        LogFormat::Json => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The error and its causes on one line. The libraries' messages already name their cause
/// (`could not read x.toml: No such file…`), so a cause is added only where the message so far
/// does not hold it.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if line.is_empty() {
            line = c;
        } else if !line.contains(&c) {
            line.push_str(": ");
            line.push_str(&c);
        }
    }
    line
}

fn main() {
    keep_freed_memory_mapped();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Run(a) => commands::run::exec(a),
        Command::Status(a) => commands::status::exec(a),
        Command::Dag(a) => commands::dag::exec(a),
        Command::Runs(a) => commands::runs::exec(a),
        Command::Lineage(a) => commands::lineage::exec(a),
        Command::Predict(a) => commands::predict::exec(a),
        Command::Evaluate(a) => commands::evaluate::exec(a),
        Command::Push(a) => commands::remote::push(a),
        Command::Pull(a) => commands::remote::pull(a),
        Command::Serve(a) => commands::serve::exec(a),
        Command::Gc(a) => commands::gc::exec(a),
        Command::Verify(a) => commands::verify::exec(a),
        Command::Demo(a) => commands::demo::exec(a),
        Command::Models(a) => commands::models::exec(a),
        Command::Kinds => commands::kinds::exec(),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "isco-dag", &mut std::io::stdout());
            Ok(())
        }
    };
    if let Err(e) = result {
        console::error(&format!("error: {}", one_line(&e)));
        std::process::exit(commands::exit_code(&e));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_the_message_names_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let read = runner::Error::Read {
            path: "p.toml".into(),
            source: io,
        };
        assert_eq!(
            super::one_line(&anyhow::Error::new(read)),
            "could not read `p.toml`: no such file"
        );
        let wrapped = anyhow::anyhow!("no such file").context("loading the model");
        assert_eq!(super::one_line(&wrapped), "loading the model: no such file");
    }

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: plain getters of the allocator's version and options.
        let (version, before) = unsafe {
            (
                libmimalloc_sys::mi_version(),
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY),
            )
        };
        // The option's position is mimalloc 3's; another major version may number it apart.
        assert_eq!(
            version / 10_000,
            3,
            "mimalloc {version}: check MI_OPTION_PURGE_DELAY"
        );
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // mimalloc 3's purge delay defaults to 1000 ms; no option next to it does.
            assert_eq!(before, 1000);
            super::keep_freed_memory_mapped();
            // SAFETY: as above.
            let after = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
            assert_eq!(after, 30_000);
        }
    }
}
