use std::path::PathBuf;

use anyhow::Context;
use artifacts::table::TableFormat;
use classifier::predict::{InferenceConfig, Predictor};
use classifier::text::RecordColumns;
use stages::columns::ColumnNames;

use crate::console;

/// `isco-dag predict`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[group(id = "records", required = true, multiple = false)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// Records to code: CSV or Parquet with job_title (and optionally duties_description, or
    /// the columns [data] names); `-` reads them from standard input.
    #[arg(long, short = 'i', group = "records")]
    input: Option<PathBuf>,
    /// The records to code, named without `--input` (`isco-dag predict records.csv`).
    #[arg(value_name = "FILE", group = "records")]
    file: Option<PathBuf>,
    /// Where to write the coded records: `.csv`, or `.parquet`/`.pq` for Parquet; default:
    /// CSV on standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Also write `<output>.explain.csv` (and `.parquet`): per row, the unit group explained,
    /// its top tokens, the part that decided and the code decided (a coarser group when the
    /// coder fell back, explained by the unit group it was reached from); and
    /// `<output>.explain.html`. `predictions.explain.*` when the coded records go to standard
    /// output.
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    coder: CoderArgs,
    /// Code only this share of the rows: those whose position (from 0) is INDEX modulo
    /// COUNT. Run COUNT processes (INDEX 0 … COUNT-1, e.g. a SLURM array or a Kubernetes
    /// Indexed Job), then `isco-dag predict merge` joins their outputs into exactly the file
    /// one process writes.
    #[arg(
        long,
        value_name = "INDEX/COUNT",
        requires = "output",
        conflicts_with = "explain"
    )]
    shard: Option<stages::shard::Shard>,
}

/// The model and settings a command codes with: `predict`'s and `evaluate`'s.
#[derive(clap::Args)]
pub struct CoderArgs {
    /// Model: a ref name in the store (default `best`) or a model directory.
    #[arg(long, short = 'm', default_value = "best", env = "ISCO_DAG_MODEL")]
    pub model: String,
    /// Store directory.
    #[arg(long, default_value = artifacts::DEFAULT_STORE_DIR, env = "ISCO_DAG_STORE")]
    pub store: PathBuf,
    /// Config file whose [inference] section sets thresholds (and whose [data] names the
    /// columns of the records).
    #[arg(long, default_value = "config/default.toml", env = "ISCO_DAG_CONFIG")]
    pub config: PathBuf,
    /// Run every part of an ensemble on every row (as `[inference] cascade = false`), instead
    /// of leaving the rows its n-gram network is sure of to that network.
    #[arg(long)]
    pub no_cascade: bool,
    /// Never re-read doubtful rows with the model's cross-encoder re-ranker (as `[inference]
    /// rerank = false`), even under its fitted threshold.
    #[arg(long)]
    pub no_rerank: bool,
    /// Set an `[inference]` key, or one of `[data]`'s column names, for this call only, over
    /// the config file's (repeatable; for example `-S inference.confidence_threshold=0.8` or
    /// `-S 'data.title_column=Job Title'`).
    #[arg(short = 'S', long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<runner::spec::Override>,
    /// Take the model's ref from the remote store first (a fresh machine needs nothing
    /// else): the config's `[remote]`, or `--remote s3://bucket/prefix` (or ISCO_DAG_REMOTE).
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "URL", env = "ISCO_DAG_REMOTE")]
    pub remote: Option<String>,
}

impl CoderArgs {
    /// The `[inference]` settings (with `--no-cascade` and `--no-rerank`) and the column
    /// names `C` that `command` reads, from the config file and `-S`.
    pub fn settings<C: ColumnNames>(&self, command: &str) -> anyhow::Result<(InferenceConfig, C)> {
        let (mut cfg, columns) = inference_config(&self.config, &self.set, command)?;
        cfg.cascade &= !self.no_cascade;
        cfg.rerank &= !self.no_rerank;
        Ok((cfg, columns))
    }

    /// Loads the model `--model` names with `cfg`, saying which it is on standard error,
    /// after taking the refs from the remote store with `--remote`; an ensemble reuses (and
    /// adds to) the store's shared sentence vectors, which [`Coding::finish`] writes back.
    pub fn load(&self, cfg: InferenceConfig) -> anyhow::Result<Coding> {
        if let Some(url) = &self.remote {
            let settings = super::remote_from_config(&self.config)?;
            let remote =
                super::open_remote(settings.as_ref(), url, &self.config.display().to_string())?;
            let store = artifacts::Store::open(&self.store)?;
            let _lock = store.lock(true, &|holder| {
                console::error(&format!("waiting for the store lock held by {holder} …"))
            })?;
            remote.sync_refs(&store, artifacts::Direction::Pull { theirs: true })?;
        }
        let (dir, about) = model_dir(&self.model, &self.store)?;
        console::error(&about);
        let pred = Predictor::load(&dir, cfg)?;
        let shared = pred
            .retrieval()
            .filter(|_| self.store.is_dir())
            .and_then(|r| {
                let root = artifacts::Store::open(&self.store)
                    .ok()?
                    .shared_dir("embeddings");
                r.attach_shared_cache(&root).ok()
            });
        Ok(Coding {
            pred,
            shared: shared.is_some(),
        })
    }
}

/// A loaded model, and whether it reads the store's shared sentence vectors.
pub struct Coding {
    pub pred: Predictor,
    shared: bool,
}

impl Coding {
    /// Writes the sentence vectors embedded while coding to the store's shared cache.
    pub fn finish(&self) -> anyhow::Result<()> {
        if let (true, Some(r)) = (self.shared, self.pred.retrieval()) {
            r.flush_shared_cache()?;
        }
        Ok(())
    }
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Join the outputs of `predict --shard i/n` (all n of them) into the file one process
    /// would have written, rows in input order.
    Merge {
        /// The merged file: `.csv`, or `.parquet`/`.pq`, like the shards.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// The shards' outputs, in any order.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
    },
}

/// Reads `[inference]` and `[data]`'s column names `C` from the config file (strictly, if
/// the file exists) with the `-S inference.KEY=VALUE` and `-S data.title_column=…` settings
/// `set` on top, for the subcommand `command` (a record's text for `predict`; with its code
/// for `evaluate`).
pub fn inference_config<C: ColumnNames>(
    path: &std::path::Path,
    set: &[runner::spec::Override],
    command: &str,
) -> anyhow::Result<(InferenceConfig, C)> {
    let mut table: toml::Table = if path.is_file() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    } else {
        toml::Table::new()
    };
    let mut section = |name: &str| match table.remove(name) {
        Some(toml::Value::Table(t)) => Ok(t),
        Some(_) => Err(super::UsageError(format!(
            "{}: `{name}` must be a section ([{name}]), not a value",
            path.display()
        ))),
        None => Ok(toml::Table::new()),
    };
    let mut inference = section("inference")?;
    // Of [data], only how a file of records is read (its column names and encoding)
    // concerns coding; the rest is for training.
    let mut data: toml::Table = section("data")?
        .into_iter()
        .filter(|(k, _)| C::KEYS.contains(&k.as_str()))
        .collect();
    for o in set {
        match o.target.as_str() {
            "inference" => inference.insert(o.key.clone(), o.value.clone()),
            "data" if C::KEYS.contains(&o.key.as_str()) => {
                data.insert(o.key.clone(), o.value.clone())
            }
            _ => {
                let names: Vec<String> = C::KEYS
                    .iter()
                    .map(|k| match *k {
                        "encoding" => format!("-S data.{k}=ENCODING"),
                        _ => format!("-S data.{k}=NAME"),
                    })
                    .collect();
                return Err(super::UsageError(format!(
                    "-S {}: `isco-dag {command}` takes only [inference] settings and how [data] says files are read (-S inference.KEY=VALUE, {}); other settings belong to a pipeline run",
                    o.text,
                    names.join(", ")
                ))
                .into());
            }
        };
    }
    let whence = |name: &str| {
        let given: Vec<&str> = set
            .iter()
            .filter(|o| o.target == name)
            .map(|o| o.text.as_str())
            .collect();
        if given.is_empty() {
            format!("{}: section [{name}]", path.display())
        } else {
            format!(
                "{}: section [{name}] with -S {}",
                path.display(),
                given.join(", -S ")
            )
        }
    };
    let cfg: InferenceConfig = toml::Value::Table(inference).try_into().map_err(|e| {
        super::UsageError(format!(
            "{}: {}",
            whence("inference"),
            e.to_string().trim_end()
        ))
    })?;
    cfg.validate()
        .map_err(|m| super::UsageError(format!("{}: {m}", whence("inference"))))?;
    let columns: C = toml::Value::Table(data).try_into().map_err(|e| {
        super::UsageError(format!("{}: {}", whence("data"), e.to_string().trim_end()))
    })?;
    columns
        .validate()
        .map_err(|m| super::UsageError(format!("{}: {m}", whence("data"))))?;
    Ok((cfg, columns))
}

/// Resolves `--model` to a model directory, with a line saying which model that is.
pub fn model_dir(model: &str, store: &std::path::Path) -> anyhow::Result<(PathBuf, String)> {
    let p = PathBuf::from(model);
    if p.join("model.json").is_file() {
        return Ok((p, format!("model: the directory {model}")));
    }
    if p.is_dir() {
        return Err(super::UsageError(format!(
            "`{model}` is a directory without a model.json, so not a model; give --model a model directory (a `train` stage's `model` output) or the name of a ref in the store"
        ))
        .into());
    }
    // Only a store that exists can hold the ref: opening one here would create it.
    if !store.is_dir() {
        return Err(super::UsageError(format!(
            "there is no store at {} to look the ref `{model}` up in; run a pipeline there first, give --store the store's directory, or give --model a model directory",
            store.display()
        ))
        .into());
    }
    let store = artifacts::Store::open(store)?;
    let Some(r) = store.get_ref(model)? else {
        let names: Vec<String> = store.refs()?.into_iter().map(|r| r.name).collect();
        let set = if names.is_empty() {
            "no ref is set there yet; run a pipeline with a `promote` stage first".to_string()
        } else {
            format!("the refs set there: {}", names.join(", "))
        };
        // The pipeline's workspace copies (`models/latest`, `models/best`) are directories
        // named like refs; one of them is likely what was meant.
        let workspace = std::path::Path::new("models").join(model);
        let meant = if workspace.join("model.json").is_file() {
            format!(
                "; the directory `{}` holds a model: give --model {}",
                workspace.display(),
                workspace.display()
            )
        } else {
            String::new()
        };
        return Err(super::UsageError(format!(
            "`{model}` is neither a model directory nor a ref in the store at {}; {set}{meant}",
            store.root().display()
        ))
        .into());
    };
    let about = format!(
        "model: `{model}` in {} = {} (set {})",
        store.root().display(),
        &r.target.id[..12.min(r.target.id.len())],
        r.updated_at
    );
    Ok((store.checkout(&r.target)?, about))
}

/// The format `--output` asks for by its extension, checked before any row is coded: an
/// extension of another format, or a folder that does not exist, would otherwise fail (or
/// write CSV under a misleading name) only after the whole input was coded.
fn output_format(out: &std::path::Path) -> anyhow::Result<TableFormat> {
    let Some(format) = TableFormat::of(out) else {
        return Err(super::UsageError(format!(
            "--output `{}`: coded records are written as CSV (`.csv`) or Parquet (`.parquet`); end the file name in one of these, or leave --output out for CSV on standard output",
            out.display()
        ))
        .into());
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(super::UsageError(format!(
            "--output `{}`: the folder `{}` does not exist; create it first",
            out.display(),
            dir.display()
        ))
        .into());
    }
    Ok(format)
}

/// Whether two paths name the same file (both must exist to be compared by identity; a
/// path that does not exist yet cannot be the input).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    if let Some(Sub::Merge { output, parts }) = &a.sub {
        output_format(output)?;
        let started = std::time::Instant::now();
        let rows = stages::shard::merge(parts, output)?;
        console::error(&format!(
            "merged {} shards: {rows} {} into {} in {:.2}s",
            parts.len(),
            if rows == 1 { "row" } else { "rows" },
            output.display(),
            started.elapsed().as_secs_f64()
        ));
        return Ok(());
    }
    let input = a
        .input
        .clone()
        .or_else(|| a.file.clone())
        .expect("clap requires --input or FILE");
    if input.as_os_str() == "-" {
        return code_stdin(&a);
    }
    code(&a, &input, &input.display().to_string())
}

/// `--input -`: the records come on standard input (CSV, or Parquet told by its first
/// bytes). They are copied as they come into a temporary file, deleted at the end, because
/// every reader of records (the separator sniffing, the Parquet reader, a shard's note of the
/// input's hash) works on a file; an error names "standard input" rather than that file.
fn code_stdin(a: &Args) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let reading = "reading the records from standard input";
    let mut stdin = std::io::stdin().lock();
    // The first four bytes say which format; the rest is copied without being held.
    let mut head = Vec::with_capacity(4);
    (&mut stdin)
        .take(4)
        .read_to_end(&mut head)
        .context(reading)?;
    let suffix = if head.starts_with(b"PAR1") {
        ".parquet"
    } else {
        ".csv"
    };
    let keeping = "keeping standard input in a temporary file";
    let mut copy = tempfile::Builder::new()
        .prefix("isco-dag-stdin-")
        .suffix(suffix)
        .tempfile()
        .context(keeping)?;
    copy.write_all(&head).context(keeping)?;
    std::io::copy(&mut stdin, &mut copy)
        .and_then(|_| copy.flush())
        .context("copying standard input into a temporary file")?;
    drop(stdin);
    let path = copy.path().to_path_buf();
    code(a, &path, "standard input").map_err(|e| {
        let named = |s: String| s.replace(&path.display().to_string(), "standard input");
        match e.downcast::<super::UsageError>() {
            Ok(u) => super::UsageError(named(u.0)).into(),
            Err(e) => anyhow::anyhow!(named(format!("{e:#}"))),
        }
    })
}

/// Codes the records of `input` (`shown` to the user as that) as `a` asks.
fn code(a: &Args, input: &std::path::Path, shown: &str) -> anyhow::Result<()> {
    let input = input.to_path_buf();
    let format = a.output.as_deref().map(output_format).transpose()?;
    let (cfg, columns): (_, RecordColumns) = a.coder.settings("predict")?;
    let missing_hint =
        |e: stages::Error| e.with_column_hint(|c| stages::columns::column_hint(c, &columns, true));
    let read_by = stages::columns::columns_of(&input, &columns);
    stages::records::check_input_file(
        &input,
        &read_by.names(),
        &stages::predict::REQUIRED,
        read_by.encoding,
    )
    .map_err(missing_hint)?;
    if let Some(out) = &a.output {
        let explain_base = |ext: &str| out.with_extension(ext);
        let clobbered = same_file(&input, out)
            || (a.explain
                && (same_file(&input, &explain_base("explain.csv"))
                    || same_file(&input, &explain_base("explain.html"))));
        if clobbered {
            return Err(super::UsageError(format!(
                "--output `{}` would overwrite the input `{}`; write the coded records to another file",
                out.display(),
                input.display()
            ))
            .into());
        }
    }
    let coding = a.coder.load(cfg)?;
    let pred = &coding.pred;
    let started = std::time::Instant::now();
    let coded = stages::predict::code_file(pred, &input, &columns, a.shard)?;
    let elapsed = started.elapsed().as_secs_f64();
    coding.finish()?;
    match (&a.output, format) {
        (Some(out), Some(format)) => coded.predictions.write_as(out, format)?,
        _ => console::out_with(|w| {
            coded
                .predictions
                .write_csv_to(w, std::path::Path::new("standard output"))
        })?,
    }
    if let (Some(shard), Some(out)) = (a.shard, &a.output) {
        stages::shard::write_note(out, shard, &input, coded.rows)?;
    }
    if a.explain {
        let base = a
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from("predictions"));
        let written = stages::explain::write_explanations(pred, &coded.predictions, &base)?;
        console::error(&format!(
            "explanations: {}",
            written
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !coded.duties_column {
        console::error(&format!(
            "note: {}",
            stages::predict::no_duties_note(shown, coded.columns.names()[1], true)
        ));
    }
    let steps = stages::predict::steps_text(&coded.steps);
    console::error(&format!(
        "coded {} {} in {:.2}s ({:.0} rows/s{}): {} at a coarser level, {} need review, {} unusable",
        coded.rows,
        if coded.rows == 1 { "row" } else { "rows" },
        elapsed,
        coded.rows as f64 / elapsed.max(1e-9),
        if steps.is_empty() {
            String::new()
        } else {
            format!("; {steps}")
        },
        coded.fallbacks,
        coded.to_review,
        coded.unusable
    ));
    Ok(())
}
