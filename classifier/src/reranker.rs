//! The cross-encoder re-ranker: a BERT encoder that reads a record and one candidate code's
//! text together (`[CLS] record [SEP] code text [SEP]`, segments 0 and 1) and gives the pair
//! one score. Reading both at once lets every layer compare the two texts, which a
//! bi-encoder's two separate vectors cannot; it costs one forward pass per candidate, so it
//! only re-reads the few best codes of the rows the ensemble is unsure of.
//!
//! **Network.** The encoder's first-token state goes through BERT's pooler (dense + tanh)
//! and a linear layer to one score — Hugging Face's `BertForSequenceClassification` with one
//! label, so a saved re-ranker is an ordinary cross-encoder directory:
//!
//! | file | content |
//! |---|---|
//! | `config.json` | the base encoder's config with `architectures = ["BertForSequenceClassification"]` and one label |
//! | `model.safetensors` | `bert.`-prefixed encoder tensors, `bert.pooler.dense.*`, `classifier.*` (PyTorch layout) |
//! | `tokenizer.json`, `vocab.txt` | the base encoder's tokenizer |
//! | `code_texts.json` | the text read for each code (its unit group's title and the lead of its definition) |
//!
//! sentence-transformers' `CrossEncoder` and `transformers`' sequence-classification models
//! load it as they load any cross-encoder.
//!
//! **Joining the ensemble** ([`rerank_row`]): for a row whose calibrated confidence is under
//! the fitted threshold, the `candidates` most probable codes are re-read; their share of the
//! probability mass is redistributed by `softmax(ln p + weight × score)` and the other codes
//! keep theirs. A row over the threshold is not touched. The threshold and the weight are
//! fitted on validation ([`crate::training::reranker`]) and saved in `model.json`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::encoder::{Encoder, PairTokens};
use crate::error::Error;

/// The scoring head on the first token's state: BERT's pooler and a one-output linear layer.
#[derive(Module, Debug)]
pub struct ScoreHead {
    /// Dense layer of BERT's pooler (followed by tanh).
    pub pooler: Linear,
    /// The score.
    pub classifier: Linear,
}

impl ScoreHead {
    /// Scores `[batch]` of hidden states `[batch, seq, hidden]`.
    pub fn forward(&self, h: Tensor<3>) -> Tensor<1> {
        let [b, _, d] = h.dims();
        let first = h.slice([0..b, 0..1, 0..d]).reshape([b, d]);
        let pooled = burn::tensor::activation::tanh(self.pooler.forward(first));
        self.classifier.forward(pooled).reshape([b])
    }
}

/// How a model's re-ranker joins its ensemble (`model.json` `reranker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankerFit {
    /// Rows whose calibrated confidence is under this are re-ranked (0: none is).
    pub threshold: f64,
    /// Weight of the cross-encoder's scores against the log-probabilities.
    pub weight: f64,
    /// Codes re-read per row (the most probable ones).
    pub candidates: usize,
    /// Tokens per record–code pair.
    pub max_seq_length: usize,
    /// What the fit measured on the validation sample.
    pub fit: RerankerFitReport,
}

/// The re-ranker's fit on the validation sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankerFitReport {
    /// Validation rows.
    pub rows: usize,
    /// Rows under the fitted threshold (re-ranked).
    pub reranked_rows: usize,
    /// Accuracy of the model without the re-ranker.
    pub accuracy_before: f64,
    /// Accuracy with it.
    pub accuracy_after: f64,
    /// Accuracy of the rows under the threshold, before and after.
    pub reranked_accuracy_before: f64,
    /// See `reranked_accuracy_before`.
    pub reranked_accuracy_after: f64,
    /// Share of the re-ranked rows whose code is among the candidates.
    pub candidate_recall: f64,
}

/// A cross-encoder with the texts it reads for each code.
pub struct CrossEncoder {
    encoder: Encoder,
    head: ScoreHead,
    texts: BTreeMap<String, String>,
}

/// Pairs per forward pass when scoring.
const SCORE_BATCH: usize = 32;

/// A linear layer from PyTorch-layout weights `[out, in]` and bias `[out]`.
fn linear(w_out_in: &[f32], bias: &[f32], inp: usize, out: usize, device: &Device) -> Linear {
    let mut w = vec![0f32; inp * out];
    for o in 0..out {
        for i in 0..inp {
            w[i * out + o] = w_out_in[o * inp + i];
        }
    }
    Linear {
        weight: Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(w, [inp, out]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::<1>::from_data(
            TensorData::new(bias.to_vec(), [out]),
            device,
        ))),
    }
}

/// A linear layer's weights in PyTorch layout `[out, in]` and its bias.
fn linear_parts(l: &Linear) -> (Vec<f32>, Vec<f32>, usize, usize) {
    let [inp, out] = l.weight.val().dims();
    let w = l
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .expect("float weights");
    let mut t = vec![0f32; inp * out];
    for i in 0..inp {
        for o in 0..out {
            t[o * inp + i] = w[i * out + o];
        }
    }
    let b = l
        .bias
        .as_ref()
        .map(|b| b.val().into_data().try_to_vec::<f32>().expect("float bias"))
        .unwrap_or_else(|| vec![0.0; out]);
    (t, b, inp, out)
}

fn file_err(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A tensor's values and shape.
type Values = (Vec<f32>, Vec<usize>);

/// A float32 tensor of a safetensors file, if present.
fn tensor_f32(
    st: &safetensors::SafeTensors<'_>,
    names: &[&str],
    path: &Path,
) -> Result<Option<Values>, Error> {
    for n in names {
        if let Ok(t) = st.tensor(n) {
            if t.dtype() != safetensors::Dtype::F32 {
                return Err(file_err(
                    path,
                    format!(
                        "holds `{n}` as {:?}; the re-ranker reads float32 weights",
                        t.dtype()
                    ),
                ));
            }
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            return Ok(Some((v, t.shape().to_vec())));
        }
    }
    Ok(None)
}

impl CrossEncoder {
    /// A re-ranker on an encoder: the pooler from the encoder's weights when they have one
    /// (else the identity), the score layer at zero (every pair scores 0 until trained).
    pub fn from_encoder(
        encoder: Encoder,
        texts: BTreeMap<String, String>,
    ) -> Result<CrossEncoder, Error> {
        let head = read_head(&encoder, &encoder.dir.join("model.safetensors"))?;
        Ok(CrossEncoder {
            encoder,
            head,
            texts,
        })
    }

    /// Reads a re-ranker directory (see the module doc) onto `device`.
    pub fn load_on(
        dir: &Path,
        max_seq_length: usize,
        device: &Device,
    ) -> Result<CrossEncoder, Error> {
        let encoder = Encoder::load_on(dir, max_seq_length, device)?;
        let p = dir.join("code_texts.json");
        let texts: BTreeMap<String, String> = serde_json::from_slice(
            &std::fs::read(&p).map_err(|e| file_err(&p, format!("cannot be read: {e}")))?,
        )
        .map_err(|e| file_err(&p, format!("is not a map of codes to texts: {e}")))?;
        Self::from_encoder(encoder, texts)
    }

    /// The encoder (its network is the part training changes).
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The encoder, to replace its network.
    pub fn encoder_mut(&mut self) -> &mut Encoder {
        &mut self.encoder
    }

    /// The scoring head.
    pub fn head(&self) -> &ScoreHead {
        &self.head
    }

    /// Replaces the scoring head.
    pub fn set_head(&mut self, head: ScoreHead) {
        self.head = head;
    }

    /// The text read for a code (empty when it has none).
    pub fn code_text(&self, code: &str) -> &str {
        self.texts.get(code).map(String::as_str).unwrap_or("")
    }

    /// The code texts.
    pub fn code_texts(&self) -> &BTreeMap<String, String> {
        &self.texts
    }

    /// Tokens of (record, code text) pairs.
    pub fn tokenize(&self, pairs: &[(&str, &str)]) -> Result<Vec<PairTokens>, Error> {
        self.encoder.tokenize_pairs(pairs)
    }

    /// Scores of already tokenised pairs, in their order. Pairs are batched only with pairs
    /// of their own token length (no padding), so a pair's score depends on the pair alone.
    pub fn scores_of(&self, rows: &[PairTokens]) -> Vec<f32> {
        use rayon::prelude::*;
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].ids.len());
        let mut batches: Vec<&[usize]> = Vec::new();
        for run in order.chunk_by(|&a, &b| rows[a].ids.len() == rows[b].ids.len()) {
            batches.extend(run.chunks(SCORE_BATCH));
        }
        let parts: Vec<Vec<f32>> = batches
            .par_iter()
            .map(|b| {
                let sel: Vec<&PairTokens> = b.iter().map(|&i| &rows[i]).collect();
                self.forward(&sel, self.encoder.device())
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("float scores")
            })
            .collect();
        let mut out = vec![0f32; rows.len()];
        for (b, s) in batches.iter().zip(parts) {
            for (&i, v) in b.iter().zip(s) {
                out[i] = v;
            }
        }
        out
    }

    /// Scores of (record, code text) pairs.
    pub fn scores(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, Error> {
        Ok(self.scores_of(&self.tokenize(pairs)?))
    }

    /// Scores `[pairs]` of one padded batch through the whole network (inference path).
    fn forward(&self, rows: &[&PairTokens], device: &Device) -> Tensor<1> {
        let ids: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
        let types: Vec<&[u32]> = rows.iter().map(|r| r.types.as_slice()).collect();
        let model = self.encoder.model();
        let inp = self.encoder.batch(&ids, device);
        let seg = self.encoder.segments(&types, device);
        let h = model.embed_typed(inp.ids, inp.positions, seg);
        let h = self.encoder.layers(h, inp.pad);
        self.head.forward(h)
    }

    /// Writes the re-ranker directory (see the module doc).
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        self.encoder.save_transformer(dir)?;
        let st_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|e| file_err(&st_path, e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| file_err(&st_path, format!("could not be read back: {e}")))?;
        // The sequence-classification layout: the encoder under `bert.`, the pooler and the
        // score layer written from the head (a pooler carried from the base is replaced).
        let mut owned: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        for (name, l) in [
            ("bert.pooler.dense", &self.head.pooler),
            ("classifier", &self.head.classifier),
        ] {
            let (w, b, inp, out) = linear_parts(l);
            let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            owned.push((format!("{name}.weight"), le(&w), vec![out, inp]));
            owned.push((format!("{name}.bias"), le(&b), vec![out]));
        }
        // A re-ranker loaded from this layout carries its old `bert.` tensors along beside
        // the freshly written bare ones; the fresh ones stand.
        let names: std::collections::HashSet<&str> = st.names().into_iter().collect();
        let mut all: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| {
                let bare = n.strip_prefix("bert.").unwrap_or(n);
                let stale = n.starts_with("bert.") && names.contains(bare);
                !stale && !bare.starts_with("pooler.") && !n.starts_with("classifier.")
            })
            .map(|(n, v)| {
                let name = if n.starts_with("bert.") {
                    n
                } else {
                    format!("bert.{n}")
                };
                (name, v)
            })
            .collect();
        for (n, data, shape) in &owned {
            all.push((
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .expect("shape matches the data"),
            ));
        }
        safetensors::tensor::serialize_to_file(all, None, &st_path)
            .map_err(|e| file_err(&st_path, format!("could not be written: {e}")))?;
        let cfg_path = dir.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&cfg_path).map_err(|e| file_err(&cfg_path, e.to_string()))?,
        )
        .map_err(|e| file_err(&cfg_path, e.to_string()))?;
        cfg["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
        cfg["num_labels"] = serde_json::json!(1);
        cfg["id2label"] = serde_json::json!({"0": "LABEL_0"});
        cfg["label2id"] = serde_json::json!({"LABEL_0": 0});
        write_json(&cfg_path, &cfg)?;
        write_json(
            &dir.join("code_texts.json"),
            &serde_json::to_value(&self.texts).expect("a map serialises"),
        )
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), Error> {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("JSON serialises"))
        .map_err(|e| file_err(path, format!("could not be written: {e}")))
}

/// The head from an encoder's weights file: its pooler and score layer when present (under
/// either naming), else the identity pooler and a zero score layer.
fn read_head(encoder: &Encoder, path: &Path) -> Result<ScoreHead, Error> {
    let d = encoder.dim();
    let device = encoder.device();
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| file_err(path, format!("is not a safetensors file: {e}")))?;
    let shaped = |t: Option<(Vec<f32>, Vec<usize>)>, shape: &[usize], name: &str| match t {
        Some((v, s)) if s == shape => Ok(Some(v)),
        Some((_, s)) => Err(file_err(
            path,
            format!("holds `{name}` of shape {s:?} where the encoder needs {shape:?}"),
        )),
        None => Ok(None),
    };
    let pw = shaped(
        tensor_f32(
            &st,
            &["bert.pooler.dense.weight", "pooler.dense.weight"],
            path,
        )?,
        &[d, d],
        "pooler.dense.weight",
    )?;
    let pb = shaped(
        tensor_f32(&st, &["bert.pooler.dense.bias", "pooler.dense.bias"], path)?,
        &[d],
        "pooler.dense.bias",
    )?;
    let cw = shaped(
        tensor_f32(&st, &["classifier.weight"], path)?,
        &[1, d],
        "classifier.weight",
    )?;
    let cb = shaped(
        tensor_f32(&st, &["classifier.bias"], path)?,
        &[1],
        "classifier.bias",
    )?;
    let pooler = match (pw, pb) {
        (Some(w), Some(b)) => linear(&w, &b, d, d, device),
        _ => {
            let mut eye = vec![0f32; d * d];
            (0..d).for_each(|i| eye[i * d + i] = 1.0);
            linear(&eye, &vec![0.0; d], d, d, device)
        }
    };
    let classifier = match (cw, cb) {
        (Some(w), Some(b)) => linear(&w, &b, d, 1, device),
        _ => linear(&vec![0.0; d], &[0.0], d, 1, device),
    };
    Ok(ScoreHead { pooler, classifier })
}

/// Re-ranks one row of probabilities in place: the candidates' share of the mass is
/// redistributed by `softmax(ln p + weight × score)` over them; other codes are untouched.
pub fn rerank_row(p: &mut [f32], candidates: &[usize], scores: &[f32], weight: f32) {
    let mass: f32 = candidates.iter().map(|&c| p[c]).sum();
    if candidates.is_empty() || mass <= 0.0 {
        return;
    }
    let z: Vec<f32> = candidates
        .iter()
        .zip(scores)
        .map(|(&c, &s)| p[c].max(1e-12).ln() + weight * s)
        .collect();
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
    let sum: f32 = e.iter().sum();
    for (&c, v) in candidates.iter().zip(e) {
        p[c] = mass * v / sum;
    }
}

/// The most probable codes of a row (largest first).
pub fn candidates_of(p: &[f32], k: usize) -> Vec<usize> {
    crate::rank::top_k(p, k)
}

/// Re-ranks the rows of `p` (`[rows, classes]`) listed in `rows`: each row's `candidates`
/// most probable labels are scored against `texts[row]` and mixed in with `weight`.
#[allow(clippy::too_many_arguments)] // each is one of the fit's knobs, passed by the fit and the predictor alike
pub fn rerank_rows(
    cross: &CrossEncoder,
    p: &mut [f32],
    classes: usize,
    labels: &[String],
    texts: &[String],
    rows: &[usize],
    candidates: usize,
    weight: f32,
) -> Result<(), Error> {
    let cands: Vec<Vec<usize>> = rows
        .iter()
        .map(|&r| candidates_of(&p[r * classes..(r + 1) * classes], candidates))
        .collect();
    let pairs: Vec<(&str, &str)> = rows
        .iter()
        .zip(&cands)
        .flat_map(|(&r, cs)| {
            cs.iter()
                .map(move |&c| (texts[r].as_str(), cross.code_text(&labels[c])))
        })
        .collect();
    let scores = cross.scores(&pairs)?;
    let mut at = 0;
    for (&r, cs) in rows.iter().zip(&cands) {
        rerank_row(
            &mut p[r * classes..(r + 1) * classes],
            cs,
            &scores[at..at + cs.len()],
            weight,
        );
        at += cs.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::write_random_encoder;

    #[test]
    fn reranking_moves_mass_only_among_the_candidates() {
        let mut p = vec![0.5, 0.3, 0.15, 0.05];
        rerank_row(&mut p, &[0, 1], &[0.0, 5.0], 1.0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[0], "{p:?}");
        assert_eq!(&p[2..], &[0.15, 0.05]);
        let mut q = vec![0.5, 0.3, 0.15, 0.05];
        rerank_row(&mut q, &[0, 1], &[0.0, 5.0], 0.0);
        for (a, b) in q.iter().zip([0.5, 0.3, 0.15, 0.05]) {
            assert!((a - b).abs() < 1e-6, "weight 0 changes nothing: {q:?}");
        }
    }

    #[test]
    fn a_saved_reranker_scores_the_same_and_has_the_classification_layout() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let words = ["nurse", "ward", "driver", "bus", "baker", "bread"];
        write_random_encoder(&base, &words, 32, 2, 9).unwrap();
        let enc = Encoder::load(&base, 24).unwrap();
        let texts: BTreeMap<String, String> = [("2221", "nurse ward"), ("8331", "bus driver")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut cross = CrossEncoder::from_encoder(enc, texts).unwrap();
        // A non-zero score layer, so scores differ between pairs.
        let d = cross.encoder().dim();
        let w: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
        let head = ScoreHead {
            pooler: cross.head().pooler.clone(),
            classifier: linear(&w, &[0.1], d, 1, cross.encoder().device()),
        };
        cross.set_head(head);
        let pairs = [
            ("nurse", "nurse ward"),
            ("bus driver", "nurse ward"),
            ("baker bread", "bus driver"),
        ];
        let a = cross.scores(&pairs).unwrap();
        assert!(a[0] != a[1], "{a:?}");
        let out = dir.path().join("reranker");
        cross.save(&out).unwrap();
        let again = CrossEncoder::load_on(&out, 24, cross.encoder().device()).unwrap();
        assert_eq!(again.scores(&pairs).unwrap(), a);
        assert_eq!(again.code_text("8331"), "bus driver");
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        for n in [
            "classifier.weight",
            "bert.pooler.dense.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
        assert_eq!(st.tensor("classifier.weight").unwrap().shape(), &[1, d]);
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["architectures"][0], "BertForSequenceClassification");
        // A pair's score does not depend on the pairs scored with it.
        let one = again.scores(&pairs[1..2]).unwrap();
        assert_eq!(one[0], a[1]);
        // A loaded re-ranker saves again (as a further training does) to the same tensors.
        let twice = dir.path().join("twice");
        again.save(&twice).unwrap();
        let bytes2 = std::fs::read(twice.join("model.safetensors")).unwrap();
        let st2 = safetensors::SafeTensors::deserialize(&bytes2).unwrap();
        let mut names2: Vec<String> = st2.names().into_iter().map(str::to_string).collect();
        let mut names = names;
        names.sort();
        names2.sort();
        assert_eq!(names2, names);
        let third = CrossEncoder::load_on(&twice, 24, cross.encoder().device()).unwrap();
        assert_eq!(third.scores(&pairs).unwrap(), a);
    }
}
