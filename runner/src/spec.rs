//! Pipeline files: raw TOML structs, then a validated [`Pipeline`].
//!
//! ```toml
//! [pipeline]
//! name = "full"
//! extends = "base.toml"            # optional: take that file's stages, then add/replace
//! config = "../config/default.toml"  # optional: params sections (data, model, training, …)
//! root = ".."                      # project root, relative to this file (default "..")
//! store = "artifacts/store"        # relative to the root (default)
//! out_dir = "data/processed"       # default workspace folder for outputs
//! frozen = ["split", "train"]      # keep these stages' last results even when stale
//!
//! [[stage]]
//! id = "split"
//! kind = "split"
//! inputs = { records = "clean.records" }     # files, globs, or stage_id.output
//! params_from = ["data"]                     # config sections to take known keys from
//! params = { test_fraction = 0.15 }          # inline params win over config
//! outputs = { train = "data/processed/train.parquet" }  # workspace copies (optional)
//! after = []                                 # ordering-only dependencies (optional)
//! replace = false                            # in an extending file: replace the base stage
//! ```
//!
//! Every error names the file and, when it can, the line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::stage::{Registry, Stage};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    pipeline: Option<RawHeader>,
    /// The shared store this pipeline's runs use with `--remote` (overrides the config's).
    remote: Option<artifacts::RemoteSettings>,
    #[serde(default, rename = "stage")]
    stages: Vec<RawStage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: Option<String>,
    description: Option<String>,
    extends: Option<Spanned<String>>,
    config: Option<Spanned<String>>,
    root: Option<String>,
    store: Option<String>,
    out_dir: Option<String>,
    frozen: Option<Spanned<Vec<String>>>,
    allow_outside_root: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    id: Spanned<String>,
    kind: Spanned<String>,
    description: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<toml::Value>>,
    params: Option<Spanned<toml::Table>>,
    params_from: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    outputs: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    #[serde(default)]
    replace: bool,
}

/// Where a raw stage was declared, for error messages.
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    text: Arc<str>,
}

impl Source {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> Error {
        Error::Spec {
            path: self.path.clone(),
            line: Some(self.line(offset)),
            message: message.into(),
        }
    }
}

/// One input reference after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRef {
    /// A workspace file, relative to the root with `/` separators.
    File(String),
    /// A glob and the files it matched when the pipeline was loaded (sorted, relative).
    Glob {
        /// The pattern as written.
        pattern: String,
        /// Matched files.
        files: Vec<String>,
    },
    /// An output of another stage.
    Stage {
        /// Upstream stage id.
        stage: String,
        /// Output name.
        output: String,
    },
}

/// A stage output's workspace copy.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// File name inside the stage's output directory.
    pub file: String,
    /// Whether it is a directory.
    pub dir: bool,
    /// Workspace path relative to the root (may contain `{date}`).
    pub workspace: String,
}

/// A validated stage.
#[derive(Clone)]
pub struct StageSpec {
    /// Stage id.
    pub id: String,
    /// Kind name.
    pub kind: String,
    /// The implementation.
    pub stage: Arc<dyn Stage>,
    /// Optional description.
    pub description: Option<String>,
    /// Resolved params (canonical JSON object).
    pub params: serde_json::Value,
    /// Named inputs.
    pub inputs: BTreeMap<String, Vec<InputRef>>,
    /// Named outputs.
    pub outputs: BTreeMap<String, OutputSpec>,
    /// Ordering-only dependencies.
    pub after: Vec<String>,
    /// The file that declared it.
    pub defined_in: PathBuf,
    /// Line of its `id`.
    pub line: usize,
}

impl StageSpec {
    /// Upstream stage ids (from inputs and `after`), deduplicated.
    pub fn upstream(&self) -> Vec<String> {
        let mut set: BTreeSet<String> = self.after.iter().cloned().collect();
        for refs in self.inputs.values() {
            for r in refs {
                if let InputRef::Stage { stage, .. } = r {
                    set.insert(stage.clone());
                }
            }
        }
        set.into_iter().collect()
    }
}

/// A validated pipeline, ready to be turned into a DAG.
#[derive(Clone)]
pub struct Pipeline {
    /// The pipeline file as given.
    pub path: PathBuf,
    /// The pipeline file relative to the root (for run records).
    pub rel_path: String,
    /// Name (defaults to the file stem).
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Project root.
    pub root: PathBuf,
    /// Store directory.
    pub store_dir: PathBuf,
    /// Stages in declaration order (base file first).
    pub stages: Vec<StageSpec>,
    /// Stages whose last successful results are kept even when their inputs changed (DVC's
    /// frozen stages): `finetune.toml` freezes the historical-records stages so new
    /// corrections never re-train them; `--force STAGE` still runs one.
    pub frozen: BTreeSet<String>,
    /// Params set on the command line for this run (`-S section.key=value`), as written.
    pub overrides: Vec<String>,
    /// The shared store (`[remote]` of the pipeline file, else of its config file) that
    /// `run --remote`, `push` and `pull` use.
    pub remote: Option<artifacts::RemoteSettings>,
}

/// A param set on the command line for one run, without editing a file (`isco-dag run -S
/// training.epochs=10`, like `dvc exp run -S`). `target` is a config section (every stage
/// reading it sees the value) or a stage id (that stage's inline params); the value is read
/// as TOML (`10`, `0.1`, `true`, `[1, 2]`, `"text"`), and a bare word as a string.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Config section or stage id.
    pub target: String,
    /// Param name.
    pub key: String,
    /// Value.
    pub value: toml::Value,
    /// As written.
    pub text: String,
}

impl std::str::FromStr for Override {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}` is not SECTION.KEY=VALUE (for example training.epochs=10)");
        let (path, raw) = s.split_once('=').ok_or_else(bad)?;
        let (target, key) = path.trim().rsplit_once('.').ok_or_else(bad)?;
        if target.is_empty() || key.is_empty() {
            return Err(bad());
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        Ok(Override {
            target: target.to_string(),
            key: key.to_string(),
            value,
            text: s.to_string(),
        })
    }
}

impl Pipeline {
    /// A stage by id.
    pub fn stage(&self, id: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.id == id)
    }
}

fn read(path: &Path) -> Result<Source> {
    if !path.is_file() {
        return Err(Error::NoPipelineFile {
            path: path.to_path_buf(),
            hint: pipeline_file_hint(path),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Source {
        path: path.to_path_buf(),
        text: text.into(),
    })
}

fn parse<T: for<'de> Deserialize<'de>>(src: &Source) -> Result<T> {
    toml::from_str(&src.text).map_err(|e| Error::Toml {
        path: src.path.clone(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Lexically normalises a path (resolves `.` and `..` without touching the file system). A
/// `..` cancels the name before it; one that has no name to cancel stays (`../../x` keeps
/// both), and `..` right after the root is the root.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The absolute, symlink-free form of a path that may not exist yet: the longest existing
/// ancestor canonicalised, the rest appended lexically. Two spellings of one file compare
/// equal, which is what the output checks need.
fn absolute(p: &Path) -> PathBuf {
    let p = if p.is_absolute() {
        normalize(p)
    } else {
        let cwd = std::env::current_dir().unwrap_or_default();
        normalize(&cwd.join(p))
    };
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return normalize(&out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return p,
        }
    }
}

fn rel_string(p: &Path) -> String {
    p.to_string_lossy().replace('\\', "/")
}

struct Merged {
    /// `frozen` lists of every file in the chain, with where each was written.
    frozen: Vec<(Spanned<Vec<String>>, Source)>,
    header: RawHeader,
    header_src: Source,
    config: Option<(Source, PathBuf)>,
    remote: Option<artifacts::RemoteSettings>,
    stages: Vec<(RawStage, Source)>,
    /// Every pipeline file of the `extends` chain (outputs must never overwrite them).
    files: Vec<PathBuf>,
}

fn load_raw(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Merged> {
    let src = read(path)?;
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if chain.contains(&canon) {
        let names: Vec<String> = chain
            .iter()
            .chain(std::iter::once(&canon))
            .map(|p| p.display().to_string())
            .collect();
        return Err(Error::Spec {
            path: path.to_path_buf(),
            line: None,
            message: format!("`extends` forms a loop: {}", names.join(" -> ")),
        });
    }
    chain.push(canon);
    let raw: RawFile = parse(&src)?;
    let header = raw.pipeline.unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let config = header
        .config
        .as_ref()
        .map(|c| (src.clone(), normalize(&dir.join(c.get_ref()))));
    let mut merged = if let Some(ext) = &header.extends {
        let base_path = normalize(&dir.join(ext.get_ref()));
        if !base_path.is_file() {
            return Err(src.err(
                ext.span().start,
                format!(
                    "`extends` names `{}`, which does not exist; give a path relative to this file",
                    ext.get_ref()
                ),
            ));
        }
        load_raw(&base_path, chain)?
    } else {
        Merged {
            frozen: Vec::new(),
            header: RawHeader::default(),
            header_src: src.clone(),
            config: None,
            remote: None,
            stages: Vec::new(),
            files: Vec::new(),
        }
    };
    if raw.remote.is_some() {
        merged.remote = raw.remote;
    }
    merged.files.push(path.to_path_buf());
    // Child header fields override the base's.
    let h = &mut merged.header;
    if header.name.is_some() {
        h.name = header.name;
    }
    if header.description.is_some() {
        h.description = header.description;
    }
    if header.root.is_some() {
        h.root = header.root;
    }
    if header.store.is_some() {
        h.store = header.store;
    }
    if header.out_dir.is_some() {
        h.out_dir = header.out_dir;
    }
    if header.allow_outside_root.is_some() {
        h.allow_outside_root = header.allow_outside_root;
    }
    if let Some(f) = header.frozen {
        merged.frozen.push((f, src.clone()));
    }
    if config.is_some() {
        merged.config = config;
    }
    merged.header_src = src.clone();
    for st in raw.stages {
        let id = st.id.get_ref().clone();
        match merged
            .stages
            .iter()
            .position(|(s, _)| *s.id.get_ref() == id)
        {
            Some(pos) if st.replace => merged.stages[pos] = (st, src.clone()),
            Some(pos) => {
                let (_, first_src) = &merged.stages[pos];
                let first_line = first_src.line(merged.stages[pos].0.id.span().start);
                return Err(src.err(
                    st.id.span().start,
                    format!(
                        "duplicate stage id `{id}` (first declared at {}:{first_line}); rename it, or set `replace = true` to replace the inherited stage",
                        first_src.path.display()
                    ),
                ));
            }
            None if st.replace => {
                return Err(src.err(
                    st.id.span().start,
                    format!("stage `{id}` has `replace = true` but no inherited stage has that id"),
                ));
            }
            None => merged.stages.push((st, src.clone())),
        }
    }
    chain.pop();
    Ok(merged)
}

/// How many files an input names: a glob's matches, one for a file or another stage's output.
fn file_count(refs: &[InputRef]) -> usize {
    refs.iter()
        .map(|r| match r {
            InputRef::Glob { files, .. } => files.len(),
            _ => 1,
        })
        .sum()
}

/// The param a validation message is about: the first `backticked` word, or failing that the
/// first word, that is one of the stage's params.
fn named_key(message: &str, accepted: &[String]) -> Option<String> {
    let backticked = message.split('`').skip(1).step_by(2);
    let words = message.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    backticked
        .chain(words)
        .find(|w| accepted.iter().any(|a| a == w))
        .map(str::to_string)
}

/// Line of `key` inside `[section]` of a TOML text (best effort, for messages).
fn config_key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t.trim_start_matches('[').trim_end_matches(']').trim() == section;
        } else if in_section {
            let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
            if t.contains('=') && k == key {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Loads and validates a pipeline file.
pub fn load(path: &Path, registry: &Registry) -> Result<Pipeline> {
    load_with(path, registry, &[])
}

/// Loads and validates a pipeline file with params set on the command line.
pub fn load_with(path: &Path, registry: &Registry, overrides: &[Override]) -> Result<Pipeline> {
    let merged = load_raw(path, &mut Vec::new())?;
    if merged.stages.is_empty() {
        return Err(Error::Spec {
            path: path.to_path_buf(),
            line: None,
            message: "the pipeline has no stages; add `[[stage]]` tables (see `isco-dag kinds`), or `extends` a pipeline that has them".into(),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let root = normalize(&dir.join(merged.header.root.as_deref().unwrap_or("..")));
    let root = if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    };
    let store_dir = root.join(
        merged
            .header
            .store
            .as_deref()
            .unwrap_or(artifacts::DEFAULT_STORE_DIR),
    );
    let out_dir = merged
        .header
        .out_dir
        .clone()
        .unwrap_or_else(|| "data/processed".to_string());
    let name = merged.header.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
    });

    let mut config = read_config(&merged)?;
    let config_remote = match &mut config {
        Some((cfg_src, table)) => match table.remove("remote") {
            Some(v) => Some(v.try_into::<artifacts::RemoteSettings>().map_err(|e| {
                Error::Spec {
                    path: cfg_src.path.clone(),
                    line: cfg_src
                        .text
                        .lines()
                        .position(|l| l.trim() == "[remote]")
                        .map(|i| i + 1),
                    message: format!("[remote]: {}", e.message()),
                }
            })?),
            None => None,
        },
        None => None,
    };
    let remote = merged.remote.clone().or(config_remote);
    let ids: BTreeSet<String> = merged
        .stages
        .iter()
        .map(|(s, _)| s.id.get_ref().clone())
        .collect();
    let stage_overrides = route_overrides(path, &mut config, &ids, overrides)?;
    let kinds = stage_kinds(&merged, registry)?;
    let cx = Loading {
        path,
        root,
        out_dir,
        config,
        ids,
        kinds,
        overrides,
    };

    // Which stages read which config section (for validating the config file), which
    // section overrides some stage took, and which stage writes each workspace path.
    let mut section_readers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section_overrides_used: BTreeSet<&str> = BTreeSet::new();
    let mut workspace_owner: BTreeMap<String, String> = BTreeMap::new();
    let mut stages = Vec::new();
    for (st, src) in &merged.stages {
        let id = st.id.get_ref().clone();
        let stage = cx.kinds[&id].clone();
        let params = cx.stage_params(
            st,
            src,
            &id,
            &stage,
            stage_overrides.get(&id),
            &mut section_readers,
            &mut section_overrides_used,
        )?;
        let inputs = cx.stage_inputs(st, src, &id, &stage)?;
        let files = |name: &str| inputs.get(name).map(|refs| file_count(refs));
        stage.check_inputs(&params, &files).map_err(|m| {
            src.err(
                st.id.span().start,
                format!("stage `{id}` (kind {}): {m}", stage.kind()),
            )
        })?;
        let outputs = cx.stage_outputs(st, src, &id, &stage, &mut workspace_owner)?;
        let after = cx.stage_after(st, src, &id)?;
        stages.push(StageSpec {
            id: id.clone(),
            kind: stage.kind().to_string(),
            stage,
            description: st.description.clone(),
            params,
            inputs,
            outputs,
            after,
            defined_in: src.path.clone(),
            line: src.line(st.id.span().start),
        });
    }

    check_section_overrides_taken(&cx, &section_overrides_used, &section_readers)?;
    let frozen = frozen_stages(&merged, &cx.ids)?;
    check_globs_miss_outputs(&stages, &workspace_owner)?;
    check_config_file(&cx, registry, &section_readers)?;
    let config_file = merged.config.as_ref().map(|(_, p)| p.clone());
    check_output_paths(
        &stages,
        &cx.root,
        &store_dir,
        &merged.files,
        config_file.as_deref(),
        merged.header.allow_outside_root.unwrap_or(false),
        path,
    )?;

    let rel_path = path
        .canonicalize()
        .ok()
        .zip(cx.root.canonicalize().ok())
        .and_then(|(p, r)| p.strip_prefix(&r).ok().map(rel_string))
        .unwrap_or_else(|| rel_string(path));
    Ok(Pipeline {
        path: path.to_path_buf(),
        rel_path,
        name,
        description: merged.header.description,
        root: cx.root,
        store_dir,
        stages,
        frozen,
        overrides: overrides.iter().map(|o| o.text.clone()).collect(),
        remote,
    })
}

/// What resolving each stage needs to know about the pipeline being loaded.
struct Loading<'a> {
    /// The pipeline file.
    path: &'a Path,
    /// The project root.
    root: PathBuf,
    /// Where outputs without a path of their own go.
    out_dir: String,
    /// The config file and its sections (command-line section params applied).
    config: Option<(Source, toml::Table)>,
    /// Every stage id.
    ids: BTreeSet<String>,
    /// Each stage's implementation.
    kinds: BTreeMap<String, Arc<dyn Stage>>,
    /// Params set on the command line.
    overrides: &'a [Override],
}

impl<'a> Loading<'a> {
    /// A stage's params: its config sections first, then its inline params, then `-S`.
    #[allow(clippy::too_many_arguments)]
    fn stage_params(
        &self,
        st: &RawStage,
        src: &Source,
        id: &str,
        stage: &Arc<dyn Stage>,
        stage_overrides: Option<&Vec<&'a Override>>,
        section_readers: &mut BTreeMap<String, Vec<String>>,
        section_overrides_used: &mut BTreeSet<&'a str>,
    ) -> Result<serde_json::Value> {
        let accepted = stage.param_names();
        let mut raw = toml::Table::new();
        let mut from_section: BTreeMap<String, String> = BTreeMap::new();
        if let Some(from) = &st.params_from {
            for sec in from.get_ref() {
                let Some((cfg_src, cfg)) = &self.config else {
                    return Err(src.err(
                        from.span().start,
                        format!(
                            "stage `{id}` takes params from [{sec}] but the pipeline has no `config` file; add `config = \"../config/default.toml\"` under [pipeline]"
                        ),
                    ));
                };
                let Some(section) = cfg.get(sec).and_then(|v| v.as_table()) else {
                    return Err(src.err(
                        from.span().start,
                        format!(
                            "stage `{id}` takes params from [{sec}], which {} does not have; sections there: {}",
                            cfg_src.path.display(),
                            cfg.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                };
                section_readers
                    .entry(sec.clone())
                    .or_default()
                    .push(id.to_string());
                for (k, v) in section {
                    if accepted.iter().any(|a| a == k) {
                        raw.insert(k.clone(), v.clone());
                        from_section.insert(k.clone(), sec.clone());
                    }
                }
            }
        }
        if let Some(p) = &st.params {
            for (k, v) in p.get_ref() {
                raw.insert(k.clone(), v.clone());
                from_section.remove(k);
            }
        }
        for o in stage_overrides.into_iter().flatten() {
            if !accepted.contains(&o.key) {
                return Err(Error::Spec {
                    path: self.path.to_path_buf(),
                    line: None,
                    message: format!(
                        "-S {}: stage `{id}` (kind {}) has no param `{}`{}; its params: {}",
                        o.text,
                        stage.kind(),
                        o.key,
                        did_you_mean(&o.key, &accepted),
                        accepted.join(", ")
                    ),
                });
            }
            raw.insert(o.key.clone(), o.value.clone());
            from_section.remove(&o.key);
        }
        for o in self.overrides {
            if from_section.get(&o.key) == Some(&o.target) {
                section_overrides_used.insert(o.text.as_str());
            }
        }
        stage.resolve_params(&raw).map_err(|m| {
            let key = named_key(&m, &accepted);
            if let Some(o) = self.overrides.iter().find(|o| {
                Some(&o.key) == key.as_ref()
                    && (o.target == id || from_section.get(&o.key) == Some(&o.target))
            }) {
                return Error::Spec {
                    path: self.path.to_path_buf(),
                    line: None,
                    message: format!(
                        "-S {}, read by stage `{id}` (kind {}): {m}",
                        o.text,
                        stage.kind()
                    ),
                };
            }
            // Point at the line that set the offending key: the config file's, when the
            // value came from a section there.
            if let Some((sec, (cfg_src, _))) = key
                .as_ref()
                .and_then(|k| from_section.get(k))
                .zip(self.config.as_ref())
            {
                let key = key.as_deref().unwrap_or_default();
                return Error::Spec {
                    path: cfg_src.path.clone(),
                    line: config_key_line(&cfg_src.text, sec, key),
                    message: format!(
                        "[{sec}] `{key}`, read by stage `{id}` (kind {}): {m}",
                        stage.kind()
                    ),
                };
            }
            let offset = st
                .params
                .as_ref()
                .map(|p| p.span().start)
                .unwrap_or(st.id.span().start);
            src.err(offset, format!("stage `{id}` (kind {}): {m}", stage.kind()))
        })
    }

    /// A stage's inputs: each named as its kind declares, resolved to files, globs or
    /// other stages' outputs; the required ones present.
    fn stage_inputs(
        &self,
        st: &RawStage,
        src: &Source,
        id: &str,
        stage: &Arc<dyn Stage>,
    ) -> Result<BTreeMap<String, Vec<InputRef>>> {
        let mut inputs = BTreeMap::new();
        for (name, value) in &st.inputs {
            let at = value.span().start;
            let Some(decl) = stage.inputs().iter().find(|d| d.name == name) else {
                return Err(src.err(
                    at,
                    format!(
                        "stage `{id}` (kind {}) has no input `{name}`; its inputs: {}",
                        stage.kind(),
                        stage
                            .inputs()
                            .iter()
                            .map(|d| d.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            let items: Vec<String> = match value.get_ref() {
                toml::Value::String(s) => vec![s.clone()],
                toml::Value::Array(a) if a.iter().all(|v| v.is_str()) => {
                    a.iter().map(|v| v.as_str().unwrap().to_string()).collect()
                }
                _ => {
                    return Err(src.err(
                        at,
                        format!(
                            "input `{name}` of stage `{id}` must be a string or an array of strings"
                        ),
                    ));
                }
            };
            let mut refs = Vec::new();
            for item in items {
                refs.push(resolve_input(
                    &item,
                    id,
                    decl,
                    &self.ids,
                    &self.kinds,
                    &self.root,
                    src,
                    at,
                )?);
            }
            let files = file_count(&refs);
            if !decl.many && (refs.len() > 1 || files > 1) {
                return Err(src.err(
                    at,
                    format!(
                        "input `{name}` of stage `{id}` takes one file, but {files} were given"
                    ),
                ));
            }
            inputs.insert(name.clone(), refs);
        }
        for decl in stage.inputs() {
            if decl.required && !inputs.contains_key(decl.name) {
                return Err(src.err(
                    st.id.span().start,
                    format!(
                        "stage `{id}` (kind {}) needs the input `{}` ({}); add it to `inputs`",
                        stage.kind(),
                        decl.name,
                        decl.help
                    ),
                ));
            }
        }
        Ok(inputs)
    }

    /// A stage's outputs: only those its kind declares, each at a workspace path no other
    /// stage writes (`workspace_owner` collects who writes where).
    fn stage_outputs(
        &self,
        st: &RawStage,
        src: &Source,
        id: &str,
        stage: &Arc<dyn Stage>,
        workspace_owner: &mut BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, OutputSpec>> {
        let mut outputs = BTreeMap::new();
        for (name, path) in &st.outputs {
            if !stage.outputs().iter().any(|d| d.name == name) {
                return Err(src.err(
                    path.span().start,
                    format!(
                        "stage `{id}` (kind {}) has no output `{name}`; its outputs: {}",
                        stage.kind(),
                        stage
                            .outputs()
                            .iter()
                            .map(|d| d.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        for decl in stage.outputs() {
            let workspace = match st.outputs.get(decl.name) {
                Some(p) => rel_string(&normalize(Path::new(p.get_ref()))),
                None => format!("{}/{id}/{}", self.out_dir, decl.file),
            };
            if let Some(other) = workspace_owner.insert(workspace.clone(), id.to_string()) {
                return Err(src.err(
                    st.id.span().start,
                    format!(
                        "stage `{id}` output `{}` would be written to `{workspace}`, which stage `{other}` also writes; give one of them another path in `outputs`",
                        decl.name
                    ),
                ));
            }
            outputs.insert(
                decl.name.to_string(),
                OutputSpec {
                    file: decl.file.to_string(),
                    dir: decl.dir,
                    workspace,
                },
            );
        }
        Ok(outputs)
    }

    /// The stages a stage runs `after` (ordering only); each must exist.
    fn stage_after(&self, st: &RawStage, src: &Source, id: &str) -> Result<Vec<String>> {
        let mut after = Vec::new();
        for a in &st.after {
            if !self.ids.contains(a.get_ref()) {
                return Err(src.err(
                    a.span().start,
                    format!("stage `{id}` runs `after` unknown stage `{}`", a.get_ref()),
                ));
            }
            after.push(a.get_ref().clone());
        }
        Ok(after)
    }
}

/// The config file the pipeline names, as sections (every top-level key must be one).
fn read_config(merged: &Merged) -> Result<Option<(Source, toml::Table)>> {
    Ok(match &merged.config {
        Some((decl_src, cfg_path)) => {
            if !cfg_path.is_file() {
                return Err(Error::Spec {
                    path: decl_src.path.clone(),
                    line: None,
                    message: format!(
                        "`config` names `{}`, which does not exist; give a path relative to the pipeline file",
                        cfg_path.display()
                    ),
                });
            }
            let src = read(cfg_path)?;
            let table: toml::Table = parse(&src)?;
            for (k, v) in &table {
                if !v.is_table() {
                    return Err(Error::Spec {
                        path: src.path.clone(),
                        line: src
                            .text
                            .lines()
                            .position(|l| l.trim_start().starts_with(k.as_str()))
                            .map(|i| i + 1),
                        message: format!(
                            "top-level key `{k}` must be a section like [data] or [training]; move it into one"
                        ),
                    });
                }
            }
            Some((src, table))
        }
        None => None,
    })
}

/// Puts each command-line param into its config section, or keeps it for its stage (an
/// `-S stage.key=value`); a target that is neither is an error.
fn route_overrides<'o>(
    path: &Path,
    config: &mut Option<(Source, toml::Table)>,
    ids: &BTreeSet<String>,
    overrides: &'o [Override],
) -> Result<BTreeMap<String, Vec<&'o Override>>> {
    // Command-line params: into their config section, or kept for their stage.
    let mut stage_overrides: BTreeMap<String, Vec<&Override>> = BTreeMap::new();
    for o in overrides {
        let section = config
            .as_mut()
            .and_then(|(_, cfg)| cfg.get_mut(&o.target))
            .and_then(|v| v.as_table_mut());
        if let Some(section) = section {
            section.insert(o.key.clone(), o.value.clone());
        } else if ids.contains(&o.target) {
            stage_overrides.entry(o.target.clone()).or_default().push(o);
        } else {
            return Err(Error::Spec {
                path: path.to_path_buf(),
                line: None,
                message: format!(
                    "-S {}: `{}` is neither a section of the config file nor a stage of this pipeline{}; sections: {}; stages: {}",
                    o.text,
                    o.target,
                    did_you_mean(
                        &o.target,
                        config
                            .as_ref()
                            .into_iter()
                            .flat_map(|(_, c)| c.keys())
                            .chain(ids.iter())
                    ),
                    config
                        .as_ref()
                        .map(|(_, c)| c.keys().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default(),
                    ids.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    Ok(stage_overrides)
}

/// Each stage's implementation, by id; ids must be plain names and kinds registered.
fn stage_kinds(merged: &Merged, registry: &Registry) -> Result<BTreeMap<String, Arc<dyn Stage>>> {
    let mut kinds: BTreeMap<String, Arc<dyn Stage>> = BTreeMap::new();
    for (st, src) in &merged.stages {
        let id = st.id.get_ref();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(src.err(
                st.id.span().start,
                format!(
                    "stage id `{id}` must be non-empty and use only letters, digits, `-` and `_`"
                ),
            ));
        }
        let kind = st.kind.get_ref();
        let Some(stage) = registry.get(kind) else {
            return Err(src.err(
                st.kind.span().start,
                format!(
                    "unknown stage kind `{kind}` for stage `{id}`; known kinds: {}",
                    registry.names().join(", ")
                ),
            ));
        };
        kinds.insert(id.clone(), stage.clone());
    }
    Ok(kinds)
}

/// What to give instead of `path`, which is not a file: a folder's pipeline files, or for a
/// name that does not exist, the file of that name one folder down (`full.toml` given from
/// the folder above `pipelines/`) or the closest name beside it.
fn pipeline_file_hint(path: &Path) -> String {
    let tomls = |dir: &Path| -> Vec<std::path::PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
            .collect();
        found.sort();
        found
    };
    let shown = |ps: &[std::path::PathBuf]| {
        ps.iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if path.is_dir() {
        let found = tomls(path);
        return if found.is_empty() {
            "; it is a folder with no `.toml` file in it".to_string()
        } else {
            format!("; it is a folder: name one of its files, {}", shown(&found))
        };
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let Some(name) = path.file_name() else {
        return String::new();
    };
    let below: Vec<_> = std::fs::read_dir(&parent)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(name))
        .filter(|p| p.is_file())
        .map(|p| p.strip_prefix("./").map(Path::to_path_buf).unwrap_or(p))
        .collect();
    if !below.is_empty() {
        return format!("; did you mean {}?", shown(&below));
    }
    let beside: Vec<String> = tomls(&parent)
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
        .collect();
    closest(&name.to_string_lossy(), &beside)
        .map(|k| format!("; did you mean {}?", shown(&[path.with_file_name(k)])))
        .unwrap_or_default()
}

/// ` (did you mean `x`?)` for the known name closest to a mistyped one, when one is close
/// (at most a third of its letters differ, two swapped letters counting as one), else nothing.
pub(crate) fn did_you_mean<'a>(key: &str, known: impl IntoIterator<Item = &'a String>) -> String {
    closest(key, known)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// The known name closest to a mistyped one, when one is close (see [`did_you_mean`]).
fn closest<'a>(key: &str, known: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
    known
        .into_iter()
        .map(|k| (strsim::osa_distance(key, k), k))
        .filter(|(d, _)| *d <= (key.chars().count() / 3).max(1))
        .min()
        .map(|(_, k)| k)
}

/// A section override that no stage took would be silently ignored: it is an error.
fn check_section_overrides_taken(
    cx: &Loading<'_>,
    used: &BTreeSet<&str>,
    section_readers: &BTreeMap<String, Vec<String>>,
) -> Result<()> {
    for o in cx.overrides {
        let into_section = cx
            .config
            .as_ref()
            .is_some_and(|(_, cfg)| cfg.get(&o.target).is_some_and(|v| v.is_table()));
        if into_section && !used.contains(o.text.as_str()) {
            let readers: Vec<&String> = section_readers
                .get(&o.target)
                .into_iter()
                .flatten()
                .collect();
            let mut expected: BTreeSet<String> = BTreeSet::new();
            for r in &readers {
                expected.extend(cx.kinds[r.as_str()].param_names());
            }
            let (text, sec, key) = (&o.text, &o.target, &o.key);
            let names = readers
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::Spec {
                path: cx.path.to_path_buf(),
                line: None,
                message: if readers.is_empty() {
                    format!(
                        "-S {text}: no stage of this pipeline reads [{sec}]; nothing would change"
                    )
                } else if !expected.contains(key) {
                    format!(
                        "-S {text}: no stage reading [{sec}] ({names}) has a param `{key}`{}; expected one of {}",
                        did_you_mean(key, &expected),
                        expected.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                } else {
                    format!(
                        "-S {text}: every stage reading [{sec}] ({names}) takes `{key}` from a later section or its inline params, so this would change nothing; set it there"
                    )
                },
            });
        }
    }
    Ok(())
}

/// The stages the chain's `frozen` lists name; each must exist.
fn frozen_stages(merged: &Merged, ids: &BTreeSet<String>) -> Result<BTreeSet<String>> {
    let mut frozen = BTreeSet::new();
    for (list, src) in &merged.frozen {
        for f in list.get_ref() {
            if !ids.contains(f) {
                return Err(src.err(
                    list.span().start,
                    format!(
                        "`frozen` names stage `{f}`, which this pipeline does not have; its stages: {}",
                        ids.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            frozen.insert(f.clone());
        }
    }
    Ok(frozen)
}

/// A glob input must not match a stage's workspace output (it would read it next run).
fn check_globs_miss_outputs(
    stages: &[StageSpec],
    workspace_owner: &BTreeMap<String, String>,
) -> Result<()> {
    for st in stages {
        for refs in st.inputs.values() {
            for r in refs {
                let InputRef::Glob { pattern, .. } = r else {
                    continue;
                };
                let Ok(pat) = glob::Pattern::new(pattern) else {
                    continue;
                };
                for (path, writer) in workspace_owner {
                    if pat.matches(path) {
                        return Err(Error::Spec {
                            path: st.defined_in.clone(),
                            line: Some(st.line),
                            message: format!(
                                "the input glob `{pattern}` of stage `{}` matches `{path}`, which stage `{writer}` writes; put that output elsewhere (its `outputs`) or narrow the glob",
                                st.id
                            ),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Every key of a config section read by some stage must be a param of some stage kind,
/// and every section must be read by a stage or known to the registry, so a misspelt key or
/// section is an error rather than silently ignored.
fn check_config_file(
    cx: &Loading<'_>,
    registry: &Registry,
    section_readers: &BTreeMap<String, Vec<String>>,
) -> Result<()> {
    if let Some((cfg_src, cfg)) = &cx.config {
        for (sec, readers) in section_readers {
            let section = cfg[sec].as_table().expect("checked above");
            for key in section.keys() {
                let known = registry
                    .all()
                    .any(|k| k.param_names().iter().any(|p| p == key));
                if !known {
                    let mut expected: BTreeSet<String> = BTreeSet::new();
                    for r in readers {
                        expected.extend(cx.kinds[r].param_names());
                    }
                    return Err(Error::Spec {
                        path: cfg_src.path.clone(),
                        line: config_key_line(&cfg_src.text, sec, key),
                        message: format!(
                            "unknown key `{key}` in [{sec}]{}: no stage kind takes it (stages reading [{sec}]: {}); expected one of {}",
                            did_you_mean(key, &expected),
                            readers.join(", "),
                            expected.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
        }
    }

    if let Some((cfg_src, cfg)) = &cx.config {
        for (sec, _) in cfg {
            if !section_readers.contains_key(sec) && !registry.knows_section(sec) {
                let known: BTreeSet<String> = registry
                    .sections()
                    .map(str::to_string)
                    .chain(section_readers.keys().cloned())
                    .collect();
                let known = known.into_iter().collect::<Vec<_>>().join(", ");
                return Err(Error::Spec {
                    path: cfg_src.path.clone(),
                    line: cfg_src
                        .text
                        .lines()
                        .position(|l| l.trim() == format!("[{sec}]"))
                        .map(|i| i + 1),
                    message: format!(
                        "unknown section [{sec}]: no stage reads it; known sections: {known}; fix its name or remove it"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Refuses, before anything runs, every output that would destroy something the project
/// needs: a file some stage reads, a pipeline or config file, a directory holding any of
/// those, the store, a path inside another output, or anything outside the project root
/// (unless the pipeline sets `allow_outside_root = true`). The store itself must also lie
/// inside the root under the same rule.
fn check_output_paths(
    stages: &[StageSpec],
    root: &Path,
    store_dir: &Path,
    pipeline_files: &[PathBuf],
    config_file: Option<&Path>,
    allow_outside_root: bool,
    pipeline_path: &Path,
) -> Result<()> {
    let abs_root = absolute(root);
    let abs_store = absolute(store_dir);
    let outside_hint =
        "; keep it inside the project or set `allow_outside_root = true` under [pipeline]";
    if !allow_outside_root && !abs_store.starts_with(&abs_root) {
        return Err(Error::Spec {
            path: pipeline_path.to_path_buf(),
            line: None,
            message: format!(
                "the store `{}` lies outside the project root `{}`{outside_hint}",
                store_dir.display(),
                root.display()
            ),
        });
    }
    // What must survive every run, each with a phrase for the message.
    let mut protected: Vec<(PathBuf, String)> = Vec::new();
    for f in pipeline_files {
        protected.push((absolute(f), format!("the pipeline file `{}`", f.display())));
    }
    if let Some(c) = config_file {
        protected.push((absolute(c), format!("the config file `{}`", c.display())));
    }
    for st in stages {
        for (name, refs) in &st.inputs {
            for r in refs {
                let files: Vec<&String> = match r {
                    InputRef::File(f) => vec![f],
                    InputRef::Glob { files, .. } => files.iter().collect(),
                    InputRef::Stage { .. } => vec![],
                };
                for f in files {
                    protected.push((
                        absolute(&root.join(f)),
                        format!("`{f}`, input `{name}` of stage `{}`", st.id),
                    ));
                }
            }
        }
    }
    let outputs: Vec<(&StageSpec, &String, PathBuf)> = stages
        .iter()
        .flat_map(|st| {
            st.outputs
                .iter()
                .map(move |(name, o)| (st, name, absolute(&root.join(&o.workspace))))
        })
        .collect();
    for (st, name, abs) in &outputs {
        let at = |message: String| Error::Spec {
            path: st.defined_in.clone(),
            line: Some(st.line),
            message: format!(
                "stage `{}` output `{name}` would be written to `{}`, {message}",
                st.id, st.outputs[*name].workspace
            ),
        };
        if !allow_outside_root && !abs.starts_with(&abs_root) {
            return Err(at(format!(
                "outside the project root `{}`{outside_hint}",
                root.display()
            )));
        }
        for (p, what) in &protected {
            if abs == p {
                return Err(at(format!(
                    "which would overwrite {what}; give the output another path in `outputs`"
                )));
            }
            if p.starts_with(abs) {
                return Err(at(format!(
                    "a directory that holds {what}; writing the output would replace it, so give the output another path in `outputs`"
                )));
            }
        }
        if abs.starts_with(&abs_store) || abs_store.starts_with(abs) {
            return Err(at(format!(
                "which overlaps the artifact store `{}`; give the output another path in `outputs`",
                store_dir.display()
            )));
        }
        for (other, other_name, other_abs) in &outputs {
            if other_abs != abs && other_abs.starts_with(abs) {
                return Err(at(format!(
                    "a directory that holds output `{other_name}` of stage `{}`; give one of them another path in `outputs`",
                    other.id
                )));
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn resolve_input(
    item: &str,
    id: &str,
    decl: &crate::stage::InputDecl,
    ids: &BTreeSet<String>,
    kinds: &BTreeMap<String, Arc<dyn Stage>>,
    root: &Path,
    src: &Source,
    at: usize,
) -> Result<InputRef> {
    let name = decl.name;
    if !item.contains('/')
        && let Some((sid, out)) = item.split_once('.')
        && ids.contains(sid)
    {
        let up = &kinds[sid];
        if !up.outputs().iter().any(|d| d.name == out) {
            return Err(src.err(
                at,
                format!(
                    "input `{name}` of stage `{id}` refers to `{item}`, but stage `{sid}` (kind {}) has no output `{out}`; its outputs: {}",
                    up.kind(),
                    up.outputs().iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if sid == id {
            return Err(src.err(
                at,
                format!("stage `{id}` cannot read its own output `{item}`"),
            ));
        }
        return Ok(InputRef::Stage {
            stage: sid.to_string(),
            output: out.to_string(),
        });
    }
    let rel = rel_string(&normalize(Path::new(item)));
    if item.contains(['*', '?', '[']) {
        let pattern = root.join(&rel);
        let entries = glob::glob(&pattern.to_string_lossy()).map_err(|e| {
            src.err(
                at,
                format!("input `{name}` of stage `{id}`: bad glob `{item}`: {e}"),
            )
        })?;
        let mut files = Vec::new();
        for e in entries.flatten() {
            if e.is_file() {
                let r = e.strip_prefix(root).unwrap_or(&e);
                files.push(rel_string(r));
            }
        }
        files.sort();
        if files.is_empty() && !decl.many {
            return Err(src.err(
                at,
                format!(
                    "input `{name}` of stage `{id}` is the glob `{item}`, which matches no file under the project root `{}`; this input needs one file",
                    root.display()
                ),
            ));
        }
        return Ok(InputRef::Glob {
            pattern: rel,
            files,
        });
    }
    if root.join(&rel).is_dir() && !decl.many {
        return Err(src.err(
            at,
            format!(
                "input `{name}` of stage `{id}` is `{item}`, a directory; this input reads one file, so name the file"
            ),
        ));
    }
    if !root.join(&rel).exists() {
        return Err(src.err(
            at,
            format!(
                "input `{name}` of stage `{id}` is `{item}`, which does not exist under the project root `{}`; create it or fix the path",
                root.display()
            ),
        ));
    }
    Ok(InputRef::File(rel))
}

#[cfg(test)]
mod tests {
    use super::{did_you_mean, pipeline_file_hint};

    #[test]
    fn a_pipeline_path_that_is_not_a_file_gets_what_to_give_instead() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("pipelines")).unwrap();
        for f in ["full.toml", "ensemble.toml"] {
            std::fs::write(d.join("pipelines").join(f), "").unwrap();
        }
        let hint = |p: std::path::PathBuf| pipeline_file_hint(&p);
        let shown = |rel: &str| format!("`{}`", d.join(rel).display());
        assert_eq!(
            hint(d.join("full.toml")),
            format!("; did you mean {}?", shown("pipelines/full.toml"))
        );
        assert_eq!(
            hint(d.join("pipelines/ful.toml")),
            format!("; did you mean {}?", shown("pipelines/full.toml"))
        );
        assert_eq!(
            hint(d.join("pipelines")),
            format!(
                "; it is a folder: name one of its files, {}, {}",
                shown("pipelines/ensemble.toml"),
                shown("pipelines/full.toml")
            )
        );
        assert_eq!(hint(d.join("pipelines/other.toml")), "");
    }

    #[test]
    fn a_near_name_is_suggested_and_a_far_one_is_not() {
        let known: Vec<String> = ["epochs", "seed", "lr_head"].map(String::from).into();
        assert_eq!(did_you_mean("epoch", &known), " (did you mean `epochs`?)");
        assert_eq!(did_you_mean("sed", &known), " (did you mean `seed`?)");
        assert_eq!(
            did_you_mean("lr-head", &known),
            " (did you mean `lr_head`?)"
        );
        assert_eq!(did_you_mean("xyzzy", &known), "");
        // Two letters swapped count as one change.
        let stages: Vec<String> = ["train", "evaluate"].map(String::from).into();
        assert_eq!(did_you_mean("trian", &stages), " (did you mean `train`?)");
    }
}
