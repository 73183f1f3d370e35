//! How the retrieval's two channels become probabilities ([`Scores`], [`Mix`]) and how those
//! mix with the base model's, fitted on labelled validation rows.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Fitted mixing parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Weight of the title score against the duties score.
    pub title_weight: f32,
    /// Softmax temperature of the retrieval scores.
    pub temperature: f32,
    /// Weight of retrieval in the ensemble (0: ngram only).
    pub weight: f32,
    /// Weight of a fine-tuned transformer against the ngram model in the base the retrieval
    /// is mixed into (0: none).
    #[serde(default)]
    pub transformer_weight: f32,
}

/// The weights as a stage report shows them (`f32`'s shortest form: `0.01`, not the
/// `0.009999999776482582` its JSON as `f64` reads).
impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "title weight {}, temperature {}, retrieval weight {}, transformer weight {}",
            self.title_weight, self.temperature, self.weight, self.transformer_weight
        )
    }
}

/// Class scores of both channels for normalised texts: `(title [q, c], duties [q, c], has_duties)`.
pub struct Scores {
    /// Best title cosine per class.
    pub title: Vec<f32>,
    /// Best duties cosine per class.
    pub duties: Vec<f32>,
    /// Whether each text has duties.
    pub has_duties: Vec<bool>,
    /// Classes.
    pub classes: usize,
}

impl Scores {
    /// Retrieval probabilities `[q, c]` under a mix.
    pub fn probabilities(&self, mix: &Mix) -> Vec<f32> {
        let c = self.classes;
        let mut out = vec![0f32; self.title.len()];
        out.par_chunks_mut(c).enumerate().for_each(|(i, o)| {
            let a = if self.has_duties[i] {
                mix.title_weight
            } else {
                1.0
            };
            let t = &self.title[i * c..(i + 1) * c];
            let d = &self.duties[i * c..(i + 1) * c];
            let mut m = f32::NEG_INFINITY;
            for k in 0..c {
                o[k] = (a * t[k] + (1.0 - a) * d[k]) / mix.temperature;
                m = m.max(o[k]);
            }
            let mut s = 0f32;
            for v in o.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            o.iter_mut().for_each(|v| *v /= s);
        });
        out
    }
}

/// `(1 - weight) * a + weight * b`, element-wise.
pub fn mix_probabilities(a: &[f32], b: &[f32], weight: f32) -> Vec<f32> {
    a.par_iter()
        .zip(b.par_iter())
        .map(|(x, y)| (1.0 - weight) * x + weight * y)
        .collect()
}

/// Accuracy and mean log-likelihood of `(1 - weight) * a + weight * b` on labelled rows.
fn score_mix(a: &[f32], b: &[f32], weight: f32, y: &[u32], c: usize) -> (f64, f64) {
    let n = y.len();
    let (correct, ll) = (0..n)
        .into_par_iter()
        .map(|i| {
            let row = |k: usize| (1.0 - weight) * a[i * c + k] + weight * b[i * c + k];
            let mut arg = 0;
            let mut m = f32::NEG_INFINITY;
            for k in 0..c {
                let v = row(k);
                if v > m {
                    m = v;
                    arg = k;
                }
            }
            let yi = y[i] as usize;
            ((arg == yi) as usize, (row(yi).max(1e-12) as f64).ln())
        })
        .reduce(|| (0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    (correct as f64 / n.max(1) as f64, ll / n.max(1) as f64)
}

/// The weight in `0..=1` (steps of 0.05) that mixes `b` into `a` best on labelled rows
/// (accuracy, ties: log-likelihood). Returns the weight and its accuracy.
pub fn fit_weight(a: &[f32], b: &[f32], y: &[u32], classes: usize) -> (f32, f64) {
    let mut best = (0f32, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for wi in 0..=20 {
        let w = wi as f32 * 0.05;
        let (acc, ll) = score_mix(a, b, w, y, classes);
        if acc > best.1 || (acc == best.1 && ll > best.2) {
            best = (w, acc, ll);
        }
    }
    (best.0, best.1)
}

/// Mixes ngram probabilities with retrieval probabilities and returns the log (the ensemble's
/// "logits", calibrated downstream).
pub fn mix_log(p_ngram: &[f32], p_ret: &[f32], weight: f32) -> Vec<f32> {
    p_ngram
        .par_iter()
        .zip(p_ret.par_iter())
        .map(|(a, b)| ((1.0 - weight) * a + weight * b).max(1e-12).ln())
        .collect()
}

/// Fits `title_weight`, `temperature` and `weight` on labelled validation scores by grid
/// search on accuracy (ties: higher mean log-likelihood), with the retrieval mixed into the
/// base probabilities `p_base`. Returns the mix (`transformer_weight` 0; the caller sets it)
/// and its accuracy.
pub fn fit_mix(p_base: &[f32], scores: &Scores, y: &[u32]) -> (Mix, f64) {
    let c = scores.classes;
    let mut best: Option<(f64, f64, Mix)> = None;
    for &title_weight in &[0.3f32, 0.4, 0.5, 0.6, 0.7] {
        for &temperature in &[0.01f32, 0.02, 0.03, 0.05, 0.07, 0.1] {
            let base = Mix {
                title_weight,
                temperature,
                weight: 0.0,
                transformer_weight: 0.0,
            };
            let pr = scores.probabilities(&base);
            for wi in 0..=16 {
                let weight = wi as f32 * 0.05;
                let (acc, ll) = score_mix(p_base, &pr, weight, y, c);
                let mix = Mix { weight, ..base };
                if best
                    .as_ref()
                    .is_none_or(|(ba, bl, _)| acc > *ba || (acc == *ba && ll > *bl))
                {
                    best = Some((acc, ll, mix));
                }
            }
        }
    }
    let (acc, _, mix) = best.expect("grid is not empty");
    (mix, acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_reads_as_its_weights_in_their_shortest_form() {
        let mix = Mix {
            title_weight: 0.5,
            temperature: 0.01,
            weight: 0.8,
            transformer_weight: 0.0,
        };
        assert_eq!(
            mix.to_string(),
            "title weight 0.5, temperature 0.01, retrieval weight 0.8, transformer weight 0"
        );
    }
}
