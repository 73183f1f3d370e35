//! fastText-style hashed features of a record's normalised text.
//!
//! The text is `title | duties` (see `stages::text`). Features, each hashed into one of
//! `buckets` rows of the embedding table:
//!
//! - title words and word bigrams, tagged as title features (`T`), plus character n-grams
//!   (`minn..=maxn`) of each title word with `<`/`>` boundary marks, which carry typos,
//!   abbreviations and inflections;
//! - duties words and bigrams, tagged `D` (character n-grams of the duties too when
//!   `duties_char_ngrams` is set);
//! - the same words untagged (`W`), so a word seen in a title helps when it appears in the
//!   duties of another record and the reverse.
//!
//! The model's input is the bag of a row's feature rows. By default it is their plain mean
//! (fastText). With `field_weights = [title, duties words, duties characters]` each of the
//! three groups present in a row gets that share of the bag (normalised over the groups
//! present), spread evenly over its features: the many character n-grams of a long duties
//! text then no longer drown the few features of the title.

use serde::{Deserialize, Serialize};

/// Featuriser parameters (saved with the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Number of hash buckets (rows of the embedding table).
    pub buckets: usize,
    /// Word n-gram order (1 = unigrams, 2 = plus bigrams).
    pub word_ngrams: usize,
    /// Shortest character n-gram (0 disables character n-grams).
    pub minn: usize,
    /// Longest character n-gram.
    pub maxn: usize,
    /// Also take character n-grams of the duties words.
    pub duties_char_ngrams: bool,
    /// Shares of the bag for the title's features, the duties' word features and the
    /// duties' character n-grams; `None` is the plain mean over all features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_weights: Option<[f32; 3]>,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            buckets: 1 << 18,
            word_ngrams: 2,
            minn: 3,
            maxn: 5,
            duties_char_ngrams: false,
            field_weights: None,
        }
    }
}

#[inline]
fn fnv(tag: u8, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (tag as u64).wrapping_mul(0x1000_0000_01b3);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x20;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Final avalanche so that bucket = h % buckets uses all bits.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Receives (bucket, group, lazy label, word index) for each feature; groups are 0 (title),
/// 1 (duties words) and 2 (duties character n-grams).
type Sink<'a> = dyn FnMut(u32, u8, &dyn Fn() -> String, usize) + 'a;

/// A feature with a human-readable label, for explanations.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedFeature {
    /// Bucket id.
    pub id: u32,
    /// What it is (`word`, `word bigram`, `<char>`…), for display.
    pub label: String,
    /// Index of the word (in the whole text) it belongs to, for highlighting.
    pub word: usize,
    /// Its group: 0 title, 1 duties words, 2 duties character n-grams.
    pub group: u8,
    /// Its weight in the bag (`1 / n` for the plain mean).
    pub weight: f32,
}

impl FeatureConfig {
    fn bucket(&self, h: u64) -> u32 {
        (h % self.buckets as u64) as u32
    }

    fn field(&self, words: &[&str], tag: u8, chars: bool, offset: usize, out: &mut Sink<'_>) {
        let (group, char_group) = if tag == b'T' { (0, 0) } else { (1, 2) };
        for (i, w) in words.iter().enumerate() {
            out(
                self.bucket(fnv(tag, &[w.as_bytes()])),
                group,
                &|| w.to_string(),
                offset + i,
            );
            out(
                self.bucket(fnv(b'W', &[w.as_bytes()])),
                group,
                &|| w.to_string(),
                offset + i,
            );
            if self.word_ngrams >= 2 && i + 1 < words.len() {
                let next = words[i + 1];
                out(
                    self.bucket(fnv(tag.wrapping_add(1), &[w.as_bytes(), next.as_bytes()])),
                    group,
                    &|| format!("{w} {next}"),
                    offset + i,
                );
            }
            if chars && self.minn > 0 {
                self.char_ngrams(w, char_group, offset + i, out);
            }
        }
    }

    /// Character n-grams (`minn..=maxn`) of one boundary-marked word, without the whole word.
    fn char_ngrams(&self, w: &str, group: u8, index: usize, out: &mut Sink<'_>) {
        let marked: Vec<char> = std::iter::once('<')
            .chain(w.chars())
            .chain(std::iter::once('>'))
            .collect();
        let n = marked.len();
        let mut buf = String::new();
        for len in self.minn..=self.maxn.min(n) {
            for s in 0..=(n - len) {
                // Skip the full word (it is a word feature already).
                if len == n {
                    continue;
                }
                buf.clear();
                buf.extend(&marked[s..s + len]);
                out(
                    self.bucket(fnv(b'C', &[buf.as_bytes()])),
                    group,
                    &|| buf.clone(),
                    index,
                );
            }
        }
    }

    fn walk(&self, text: &str, out: &mut Sink<'_>) {
        self.walk_fields(text, self.duties_char_ngrams, out);
    }

    /// Walks the features (the duties' character n-grams only if `duties_chars`) and returns
    /// the duties words.
    fn walk_fields<'t>(
        &self,
        text: &'t str,
        duties_chars: bool,
        out: &mut Sink<'_>,
    ) -> Vec<&'t str> {
        let (title, duties) = split_fields(text);
        let tw: Vec<&str> = crate::text::words(title).collect();
        let dw: Vec<&str> = crate::text::words(duties).collect();
        self.field(&tw, b'T', true, 0, out);
        self.field(&dw, b'D', duties_chars, tw.len(), out);
        dw
    }

    /// For inference with a per-word cache of the duties' character n-grams (see
    /// [`crate::model::Trained::text_logits`]): the other features' ids and groups, and the
    /// duties words whose character n-grams were left out (in order, with repeats).
    pub fn features_but_duties_chars<'t>(
        &self,
        text: &'t str,
        ids: &mut Vec<u32>,
        groups: &mut Vec<u8>,
    ) -> Vec<&'t str> {
        ids.clear();
        groups.clear();
        self.walk_fields(text, false, &mut |id, g, _, _| {
            ids.push(id);
            groups.push(g);
        })
    }

    /// Bucket ids of the character n-grams of one duties word (empty unless
    /// `duties_char_ngrams`).
    pub fn duties_word_chars(&self, word: &str, out: &mut Vec<u32>) {
        out.clear();
        if self.duties_char_ngrams && self.minn > 0 {
            self.char_ngrams(word, 2, 0, &mut |id, _, _, _| out.push(id));
        }
    }

    /// Bucket ids of a normalised text (with repeats), and their weights in the bag when
    /// `field_weights` is set (`weights` is left empty for the plain mean).
    pub fn features(&self, text: &str, out: &mut Vec<u32>, weights: &mut Vec<f32>) {
        out.clear();
        weights.clear();
        if self.field_weights.is_none() {
            self.walk(text, &mut |id, _, _, _| out.push(id));
            return;
        }
        // Each feature's group first, then its weight in place.
        let mut counts = [0usize; 3];
        self.walk(text, &mut |id, g, _, _| {
            out.push(id);
            weights.push(g as f32);
            counts[g as usize] += 1;
        });
        let share = self.shares(&counts);
        for w in weights.iter_mut() {
            *w = share[*w as usize];
        }
    }

    /// The bag weight of one feature of each group, given the groups' feature counts.
    pub fn shares(&self, counts: &[usize; 3]) -> [f32; 3] {
        let n: usize = counts.iter().sum();
        let mean = 1.0 / n.max(1) as f32;
        let Some(w) = self.field_weights else {
            return [mean; 3];
        };
        let total: f32 = (0..3).filter(|&g| counts[g] > 0).map(|g| w[g]).sum();
        if total <= 0.0 {
            return [mean; 3];
        }
        std::array::from_fn(|g| w[g] / total / counts[g].max(1) as f32)
    }

    /// Features with labels and bag weights, for explanations.
    pub fn named_features(&self, text: &str) -> Vec<NamedFeature> {
        let mut v = Vec::new();
        self.walk(text, &mut |id, group, label, word| {
            v.push(NamedFeature {
                id,
                label: label(),
                word,
                group,
                weight: 0.0,
            })
        });
        let groups: Vec<u8> = v.iter().map(|f| f.group).collect();
        let share = self.shares(&group_counts(&groups));
        for f in v.iter_mut() {
            f.weight = share[f.group as usize];
        }
        v
    }
}

/// How many features of each group (0 title, 1 duties words, 2 duties characters).
pub fn group_counts(groups: &[u8]) -> [usize; 3] {
    let mut n = [0usize; 3];
    for &g in groups {
        n[g as usize] += 1;
    }
    n
}

/// A normalised text's title and duties (`title | duties`).
pub fn split_fields(text: &str) -> (&str, &str) {
    match text.split_once('|') {
        Some((t, d)) => (t, d),
        None => (text, ""),
    }
}

/// Features of many texts, as CSR (offsets into one id array).
#[derive(Debug, Clone, Default)]
pub struct FeatureMatrix {
    /// `ids[offsets[i]..offsets[i + 1]]` are the features of row i.
    pub offsets: Vec<usize>,
    /// Bucket ids.
    pub ids: Vec<u32>,
    /// Bag weight of each id, parallel to `ids`; empty for the plain mean.
    pub weights: Vec<f32>,
}

impl FeatureMatrix {
    /// Featurises texts in parallel.
    pub fn build(cfg: &FeatureConfig, texts: &[String]) -> FeatureMatrix {
        use rayon::prelude::*;
        // One buffer per chunk of rows (not per row), then one copy into the matrix.
        let chunks: Vec<(Vec<usize>, Vec<u32>, Vec<f32>)> = texts
            .par_chunks(512)
            .map(|chunk| {
                let (mut ids, mut w) = (Vec::new(), Vec::new());
                let (mut all_ids, mut all_w) = (Vec::new(), Vec::new());
                let mut lens = Vec::with_capacity(chunk.len());
                for t in chunk {
                    cfg.features(t, &mut ids, &mut w);
                    lens.push(ids.len());
                    all_ids.extend_from_slice(&ids);
                    all_w.extend_from_slice(&w);
                }
                (lens, all_ids, all_w)
            })
            .collect();
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0);
        let mut ids = Vec::with_capacity(chunks.iter().map(|c| c.1.len()).sum());
        let mut weights = Vec::with_capacity(chunks.iter().map(|c| c.2.len()).sum());
        for (lens, i, w) in chunks {
            for l in lens {
                offsets.push(offsets[offsets.len() - 1] + l);
            }
            ids.extend_from_slice(&i);
            weights.extend_from_slice(&w);
        }
        FeatureMatrix {
            offsets,
            ids,
            weights,
        }
    }

    /// The given rows, in that order.
    pub fn select(&self, rows: &[usize]) -> FeatureMatrix {
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        let mut ids = Vec::new();
        let mut weights = Vec::new();
        for &i in rows {
            ids.extend_from_slice(self.row(i));
            if let Some(w) = self.row_weights(i) {
                weights.extend_from_slice(w);
            }
            offsets.push(ids.len());
        }
        FeatureMatrix {
            offsets,
            ids,
            weights,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Features of row i.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Bag weights of row i's features (`None`: the plain mean).
    pub fn row_weights(&self, i: usize) -> Option<&[f32]> {
        (!self.weights.is_empty()).then(|| &self.weights[self.offsets[i]..self.offsets[i + 1]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_and_duties_features_differ_and_are_stable() {
        let cfg = FeatureConfig {
            buckets: 1 << 16,
            ..Default::default()
        };
        let mut a = Vec::new();
        cfg.features("nurse | caring for patients", &mut a, &mut Vec::new());
        let mut b = Vec::new();
        cfg.features("nurse | caring for patients", &mut b, &mut Vec::new());
        assert_eq!(a, b);
        let named = cfg.named_features("nurse | caring for patients");
        assert_eq!(named.len(), a.len());
        assert!(named.iter().any(|f| f.label == "<nu"));
        assert!(named.iter().any(|f| f.label == "caring for"));
        assert!(
            !named.iter().any(|f| f.label == "<ca"),
            "no duties char n-grams by default"
        );
        // Title word and duties word hash to different tagged buckets.
        let mut t = Vec::new();
        cfg.features("nurse", &mut t, &mut Vec::new());
        let mut d = Vec::new();
        cfg.features("| nurse", &mut d, &mut Vec::new());
        assert_ne!(t[0], d[0]);
        assert_eq!(t[1], d[1], "the untagged word feature is shared");
    }

    #[test]
    fn field_weights_give_each_present_group_its_share() {
        let cfg = FeatureConfig {
            buckets: 1 << 16,
            duties_char_ngrams: true,
            field_weights: Some([2.0, 1.0, 1.0]),
            ..Default::default()
        };
        let named = cfg.named_features("nurse | caring for patients");
        let total: f32 = named.iter().map(|f| f.weight).sum();
        assert!((total - 1.0).abs() < 1e-5);
        let share = |g: u8| -> f32 {
            named
                .iter()
                .filter(|f| f.group == g)
                .map(|f| f.weight)
                .sum()
        };
        assert!((share(0) - 0.5).abs() < 1e-5, "title share {}", share(0));
        assert!((share(1) - 0.25).abs() < 1e-5, "duties words {}", share(1));
        assert!(
            (share(2) - 0.25).abs() < 1e-5,
            "duties characters {}",
            share(2)
        );
        assert!(named.iter().filter(|f| f.group == 0).all(|f| f.word == 0));
        assert!(named.iter().any(|f| f.group == 2 && f.label == "<ca"));
        // A title alone takes the whole bag; FeatureMatrix carries the same weights.
        let (mut ids, mut w) = (Vec::new(), Vec::new());
        cfg.features("nurse", &mut ids, &mut w);
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let x = FeatureMatrix::build(&cfg, &["nurse | caring".into(), "nurse".into()]);
        assert_eq!(x.row_weights(1), Some(&w[..]));
        let y = x.select(&[1]);
        assert_eq!((y.row(0), y.row_weights(0)), (&ids[..], Some(&w[..])));
        // Without field weights the matrix is the plain mean and carries none.
        let plain = FeatureMatrix::build(&FeatureConfig::default(), &["nurse".into()]);
        assert_eq!(plain.row_weights(0), None);
        let named = FeatureConfig::default().named_features("nurse");
        assert!(
            named
                .iter()
                .all(|f| (f.weight - 1.0 / named.len() as f32).abs() < 1e-7)
        );
    }
}
