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
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            buckets: 1 << 18,
            word_ngrams: 2,
            minn: 3,
            maxn: 5,
            duties_char_ngrams: false,
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

/// Receives (bucket, lazy label, word index) for each feature.
type Sink<'a> = dyn FnMut(u32, &dyn Fn() -> String, usize) + 'a;

/// A feature with a human-readable label, for explanations.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedFeature {
    /// Bucket id.
    pub id: u32,
    /// What it is (`word`, `word bigram`, `<char>`…), for display.
    pub label: String,
    /// Index of the word (in the whole text) it belongs to, for highlighting.
    pub word: usize,
}

impl FeatureConfig {
    fn bucket(&self, h: u64) -> u32 {
        (h % self.buckets as u64) as u32
    }

    fn field(&self, words: &[&str], tag: u8, chars: bool, offset: usize, out: &mut Sink<'_>) {
        for (i, w) in words.iter().enumerate() {
            out(
                self.bucket(fnv(tag, &[w.as_bytes()])),
                &|| w.to_string(),
                offset + i,
            );
            out(
                self.bucket(fnv(b'W', &[w.as_bytes()])),
                &|| w.to_string(),
                offset + i,
            );
            if self.word_ngrams >= 2 && i + 1 < words.len() {
                let next = words[i + 1];
                out(
                    self.bucket(fnv(tag.wrapping_add(1), &[w.as_bytes(), next.as_bytes()])),
                    &|| format!("{w} {next}"),
                    offset + i,
                );
            }
            if chars && self.minn > 0 {
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
                            &|| buf.clone(),
                            offset + i,
                        );
                    }
                }
            }
        }
    }

    fn walk(&self, text: &str, out: &mut Sink<'_>) {
        let (title, duties) = match text.split_once('|') {
            Some((t, d)) => (t, d),
            None => (text, ""),
        };
        let tw: Vec<&str> = title.split_whitespace().collect();
        let dw: Vec<&str> = duties.split_whitespace().collect();
        self.field(&tw, b'T', true, 0, out);
        self.field(&dw, b'D', self.duties_char_ngrams, tw.len(), out);
    }

    /// Bucket ids of a normalised text (with repeats; the model averages them).
    pub fn features(&self, text: &str, out: &mut Vec<u32>) {
        out.clear();
        self.walk(text, &mut |id, _, _| out.push(id));
    }

    /// Bucket ids with labels, for explanations.
    pub fn named_features(&self, text: &str) -> Vec<NamedFeature> {
        let mut v = Vec::new();
        self.walk(text, &mut |id, label, word| {
            v.push(NamedFeature {
                id,
                label: label(),
                word,
            })
        });
        v
    }
}

/// Features of many texts, as CSR (offsets into one id array).
#[derive(Debug, Clone, Default)]
pub struct FeatureMatrix {
    /// `ids[offsets[i]..offsets[i + 1]]` are the features of row i.
    pub offsets: Vec<usize>,
    /// Bucket ids.
    pub ids: Vec<u32>,
}

impl FeatureMatrix {
    /// Featurises texts in parallel.
    pub fn build(cfg: &FeatureConfig, texts: &[String]) -> FeatureMatrix {
        use rayon::prelude::*;
        let per: Vec<Vec<u32>> = texts
            .par_iter()
            .map_init(Vec::new, |buf, t| {
                cfg.features(t, buf);
                buf.clone()
            })
            .collect();
        let mut offsets = Vec::with_capacity(per.len() + 1);
        offsets.push(0);
        let mut ids = Vec::with_capacity(per.iter().map(Vec::len).sum());
        for v in per {
            ids.extend_from_slice(&v);
            offsets.push(ids.len());
        }
        FeatureMatrix { offsets, ids }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Features of row i.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
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
        cfg.features("nurse | caring for patients", &mut a);
        let mut b = Vec::new();
        cfg.features("nurse | caring for patients", &mut b);
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
        cfg.features("nurse", &mut t);
        let mut d = Vec::new();
        cfg.features("| nurse", &mut d);
        assert_ne!(t[0], d[0]);
        assert_eq!(t[1], d[1], "the untagged word feature is shared");
    }
}
