//! Evaluation metrics and error analysis.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::calibrate::ece;
use crate::predict::{Prediction, Predictor};

/// Per-class precision and recall.
#[derive(Debug, Clone, Serialize)]
pub struct ClassStats {
    /// Code.
    pub isco_code: String,
    /// Title.
    pub title: String,
    /// Records of this class.
    pub support: usize,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

/// Everything `evaluate` reports for one labelled set.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Headline metrics (what goes into the run record).
    pub metrics: serde_json::Value,
    /// Coverage-accuracy curve: (share coded automatically, accuracy), most confident first.
    pub coverage_curve: Vec<(f64, f64)>,
    /// Reliability diagram bins: (mean confidence, accuracy, count).
    pub reliability: Vec<(f64, f64, usize)>,
    /// Per-class statistics.
    pub classes: Vec<ClassStats>,
    /// Top confused pairs: (true, predicted, count).
    pub confused: Vec<(String, String, usize)>,
    /// Error rate by major group: (group, records, error rate).
    pub by_major: Vec<(String, usize, f64)>,
    /// Error rate by sub-major group.
    pub by_sub_major: Vec<(String, usize, f64)>,
    /// Error rate by minor group (3 digits).
    pub by_minor: Vec<(String, usize, f64)>,
    /// Confusion counts at the 2-digit level (true, predicted) -> n.
    pub confusion_2digit: BTreeMap<(String, String), usize>,
    /// The rows coded wrongly at 4 digits, most confident first (ties: row order).
    pub errors: Vec<RowError>,
}

/// A row whose best 4-digit code is not its label.
#[derive(Debug, Clone, Serialize)]
pub struct RowError {
    /// Index of the row among the scored rows.
    pub index: usize,
    /// Its label.
    pub label: String,
    /// The model's best codes with their calibrated probabilities (top 3 at most).
    pub predicted: Vec<(crate::taxonomy::IscoCode, f64)>,
}

impl Evaluation {
    /// The non-empty reliability bins as (mean confidence, accuracy) points, for plots.
    pub fn reliability_points(&self) -> Vec<(f64, f64)> {
        self.reliability
            .iter()
            .filter(|r| r.2 > 0)
            .map(|r| (r.0, r.1))
            .collect()
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// The confidence of `share_conf_90` and `accuracy_conf_90`: the rows coded at or above it
/// and the accuracy among them.
pub const CONFIDENT: f64 = 0.9;

/// The share of rows coded at confidence [`CONFIDENT`] or more, and the accuracy among them
/// (`None` when there are none): what an office that lets the coder decide alone above that
/// confidence gets.
pub fn confident(confidence: &[f64], correct: &[bool]) -> (f64, Option<f64>) {
    let kept: Vec<bool> = confidence
        .iter()
        .zip(correct)
        .filter(|(c, _)| **c >= CONFIDENT)
        .map(|(_, ok)| *ok)
        .collect();
    let share = kept.len() as f64 / confidence.len().max(1) as f64;
    let right = kept.iter().filter(|ok| **ok).count() as f64;
    (share, (!kept.is_empty()).then(|| right / kept.len() as f64))
}

/// Largest share of records, most confident first, whose accuracy stays at or above `target`.
pub fn production_rate(confidence: &[f64], correct: &[bool], target: f64) -> f64 {
    let mut idx: Vec<usize> = (0..confidence.len()).collect();
    idx.sort_by(|a, b| confidence[*b].total_cmp(&confidence[*a]));
    let mut ok = 0usize;
    let mut best = 0usize;
    for (k, &i) in idx.iter().enumerate() {
        ok += correct[i] as usize;
        if ok as f64 / (k + 1) as f64 >= target {
            best = k + 1;
        }
    }
    best as f64 / confidence.len().max(1) as f64
}

/// Evaluates a predictor on labelled normalised texts. `truth` codes outside the label set
/// count as errors.
pub fn evaluate(pred: &Predictor, texts: &[String], truth: &[String]) -> Evaluation {
    evaluate_probabilities(pred, &pred.probabilities(texts), truth)
}

/// [`evaluate`] from the predictor's calibrated probabilities `[rows, classes]` (computed
/// once when the same rows are scored against two sets of labels).
pub fn evaluate_probabilities(pred: &Predictor, probs: &[f32], truth: &[String]) -> Evaluation {
    let c = pred.classes();
    let decisions: Vec<Prediction> = probs.chunks(c).map(|p| pred.decide(p)).collect();
    let top1: Vec<&str> = decisions
        .iter()
        .map(|d| d.alternatives[0].isco_code.as_str())
        .collect();
    let conf: Vec<f64> = decisions
        .iter()
        .map(|d| d.alternatives[0].confidence)
        .collect();
    let n = truth.len().max(1) as f64;
    let correct: Vec<bool> = top1.iter().zip(truth).map(|(p, t)| *p == t).collect();
    let acc = correct.iter().filter(|c| **c).count() as f64 / n;
    let top3 = decisions
        .iter()
        .zip(truth)
        .filter(|(d, t)| d.alternatives.iter().take(3).any(|a| &a.isco_code == *t))
        .count() as f64
        / n;
    let at = |digits: usize| {
        top1.iter()
            .zip(truth)
            .filter(|(p, t)| t.len() >= digits && p[..digits] == t[..digits])
            .count() as f64
            / n
    };
    // Fallback decisions: right when the returned code is a prefix of the truth.
    let fallback_rate = decisions.iter().filter(|d| d.is_fallback).count() as f64 / n;
    let decision_correct = decisions
        .iter()
        .zip(truth)
        .filter(|(d, t)| t.starts_with(d.isco_code.as_str()))
        .count() as f64
        / n;

    // Per class.
    let mut support: BTreeMap<&str, usize> = BTreeMap::new();
    let mut predicted: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tp: BTreeMap<&str, usize> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut conf2: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (p, t) in top1.iter().zip(truth) {
        *support.entry(t).or_default() += 1;
        *predicted.entry(p).or_default() += 1;
        if p == t {
            *tp.entry(t).or_default() += 1;
        } else {
            *pairs.entry((t.clone(), p.to_string())).or_default() += 1;
        }
        let t2 = t.get(..2).unwrap_or(t).to_string();
        *conf2.entry((t2, p[..2].to_string())).or_default() += 1;
    }
    let mut classes = Vec::new();
    let (mut macro_f1, mut weighted_f1) = (0.0, 0.0);
    for (code, &s) in &support {
        let t = tp.get(code).copied().unwrap_or(0) as f64;
        let pc = predicted.get(code).copied().unwrap_or(0) as f64;
        let precision = if pc > 0.0 { t / pc } else { 0.0 };
        let recall = t / s as f64;
        let f = f1(precision, recall);
        macro_f1 += f;
        weighted_f1 += f * s as f64;
        classes.push(ClassStats {
            isco_code: code.to_string(),
            title: pred.title(code).to_string(),
            support: s,
            precision,
            recall,
            f1: f,
        });
    }
    macro_f1 /= support.len().max(1) as f64;
    weighted_f1 /= n;
    let mut confused: Vec<(String, String, usize)> =
        pairs.into_iter().map(|((a, b), k)| (a, b, k)).collect();
    confused.sort_by(|a, b| b.2.cmp(&a.2).then(a.cmp(b)));
    confused.truncate(10);
    let group_errors = |digits: usize| {
        let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (t, ok) in truth.iter().zip(&correct) {
            let e = m
                .entry(t.get(..digits).unwrap_or(t).to_string())
                .or_default();
            e.0 += 1;
            e.1 += (!ok) as usize;
        }
        m.into_iter()
            .map(|(g, (k, e))| (g, k, e as f64 / k as f64))
            .collect::<Vec<_>>()
    };
    // Coverage curve at 1 % steps.
    let mut idx: Vec<usize> = (0..conf.len()).collect();
    idx.sort_by(|a, b| conf[*b].total_cmp(&conf[*a]));
    let mut curve = Vec::new();
    let mut ok = 0usize;
    let step = (idx.len() / 100).max(1);
    for (k, &i) in idx.iter().enumerate() {
        ok += correct[i] as usize;
        if (k + 1) % step == 0 || k + 1 == idx.len() {
            curve.push(((k + 1) as f64 / n, ok as f64 / (k + 1) as f64));
        }
    }
    let (confident_share, confident_accuracy) = confident(&conf, &correct);
    let metrics = json!({
        "records": truth.len(),
        "share_conf_90": confident_share,
        "accuracy_conf_90": confident_accuracy,
        "accuracy": acc,
        "macro_f1": macro_f1,
        "weighted_f1": weighted_f1,
        "top3_accuracy": top3,
        "accuracy_1digit": at(1),
        "accuracy_2digit": at(2),
        "accuracy_3digit": at(3),
        "fallback_rate": fallback_rate,
        "decision_accuracy": decision_correct,
        "review_rate": decisions.iter().filter(|d| d.needs_review).count() as f64 / n,
        "ece": ece(&conf, &correct),
        "production_rate_95": production_rate(&conf, &correct, 0.95),
        "production_rate_97": production_rate(&conf, &correct, 0.97),
    });
    let mut errors: Vec<RowError> = decisions
        .iter()
        .zip(truth)
        .enumerate()
        .filter(|(i, _)| !correct[*i])
        .map(|(index, (d, t))| RowError {
            index,
            label: t.clone(),
            predicted: d
                .alternatives
                .iter()
                .take(3)
                .map(|a| (a.isco_code.clone(), a.confidence))
                .collect(),
        })
        .collect();
    errors.sort_by(|a, b| b.predicted[0].1.total_cmp(&a.predicted[0].1));
    Evaluation {
        metrics,
        coverage_curve: curve,
        reliability: crate::calibrate::reliability(&conf, &correct, 15),
        classes,
        confused,
        by_major: group_errors(1),
        by_sub_major: group_errors(2),
        by_minor: group_errors(3),
        confusion_2digit: conf2,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_rate_takes_the_confident_prefix() {
        let conf = [0.99, 0.98, 0.97, 0.5, 0.4];
        let correct = [true, true, true, false, true];
        assert_eq!(production_rate(&conf, &correct, 0.95), 0.6);
        assert_eq!(production_rate(&conf, &correct, 0.7), 1.0);
    }

    #[test]
    fn confident_rows_are_counted_with_their_accuracy() {
        let conf = [0.99, 0.95, 0.9, 0.5];
        let correct = [true, false, true, false];
        assert_eq!(confident(&conf, &correct), (0.75, Some(2.0 / 3.0)));
        assert_eq!(confident(&[0.5], &[true]), (0.0, None));
    }
}
