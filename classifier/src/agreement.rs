//! Capping an unseen title's confidence by how far the ensemble's parts agree on its code
//! ([`Agreement`]).
//!
//! The ensemble mixes the n-gram network's and the retrieval's probabilities, so a code one
//! part backs strongly and the other doubts can come out as sure as a code both back. On
//! the office's own titles that rarely matters; on titles phrased unlike its records the
//! parts disagree far more often, and the codes they disagree on are right far less often
//! at the same mixed confidence. Each part's probability of the chosen code is calibrated
//! on the title-only rows the model's calibration of unseen titles is fitted on, so the
//! three are on one scale (the chance that the code is right, as that part sees it); the
//! row's score is the least of them, and an isotonic map fitted on those rows turns it into
//! the share of rows with that score coded right.
//!
//! That share only ever lowers the confidence the calibration gave: the row keeps the lower
//! of the two. Both are fitted on titles the office's records phrase alike, and on titles
//! phrased unlike them both run high, so the lower is the nearer; on the fit rows
//! themselves it leaves confidences somewhat under their accuracy (the fit's `ece`), which
//! sends more of such titles to review rather than coding them wrongly with confidence. The
//! chosen code never changes.

use rayon::prelude::*;

use crate::artifact::{Agreement, AgreementFit, Calibrated};
use crate::calibrate::{CalibrationMethod, Isotonic, ece, fit_calibration, set_top};

/// What each part says of a set of title-only rows, `[rows, classes]` each.
pub struct Parts {
    /// The n-gram network's logits.
    pub ngram_logits: Vec<f32>,
    /// The retrieval's probabilities alone (under the ensemble's mix of its title and duties
    /// scores and its temperature).
    pub retrieval: Vec<f32>,
    /// The ensemble's logits (the log of its mixed probabilities).
    pub ensemble_logits: Vec<f32>,
}

/// The calibrations that put the parts' probabilities on one scale.
pub struct Scales<'a> {
    /// The n-gram network's on such rows.
    pub ngram: &'a Calibrated,
    /// The retrieval's on such rows.
    pub retrieval: &'a Calibrated,
    /// The whole ensemble's on such rows.
    pub whole: &'a Calibrated,
}

/// The first class of highest probability in a row (the one [`set_top`] takes as the top).
fn top_of(row: &[f32]) -> usize {
    let mut top = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[top] {
            top = i;
        }
    }
    top
}

/// Per row, the least of the three parts' calibrated probabilities of `chosen[i]`.
pub fn scores(parts: &Parts, scales: &Scales<'_>, chosen: &[usize], classes: usize) -> Vec<f64> {
    let n = scales.ngram.probabilities(&parts.ngram_logits, classes);
    let r = scales
        .retrieval
        .probabilities(&retrieval_logits(&parts.retrieval), classes);
    let e = scales.whole.probabilities(&parts.ensemble_logits, classes);
    chosen
        .par_iter()
        .enumerate()
        .map(|(i, &k)| {
            let at = |p: &[f32]| p[i * classes + k] as f64;
            at(&n).min(at(&r)).min(at(&e))
        })
        .collect()
}

/// The retrieval's probabilities as logits, for a temperature and a calibration to act on.
fn retrieval_logits(p: &[f32]) -> Vec<f32> {
    p.par_iter().map(|v| v.max(1e-12).ln()).collect()
}

/// Caps the confidence of each row of `probabilities` (`[rows, classes]`, the model's
/// answer to the rows `parts` describes) at the share of fit rows coded right whose parts
/// agreed on their codes as far as this row's do on its top code.
pub fn apply(
    agreement: &Agreement,
    parts: &Parts,
    ngram: &Calibrated,
    whole: &Calibrated,
    probabilities: &mut [f32],
    classes: usize,
) {
    let chosen: Vec<usize> = probabilities.chunks(classes).map(top_of).collect();
    let scales = Scales {
        ngram,
        retrieval: &agreement.retrieval,
        whole,
    };
    let s = scores(parts, &scales, &chosen, classes);
    probabilities
        .par_chunks_mut(classes)
        .zip(s.par_iter())
        .for_each(|(row, &s)| set_top(row, |p| p.min(agreement.isotonic.map(s))));
}

/// Share of `confidence` at 0.9 or more, and the accuracy there (0 when there is none).
fn confident(confidence: &[f64], correct: &[bool]) -> (f64, f64) {
    let at: Vec<bool> = confidence
        .iter()
        .zip(correct)
        .filter(|(c, _)| **c >= 0.9)
        .map(|(_, &ok)| ok)
        .collect();
    let share = at.len() as f64 / confidence.len().max(1) as f64;
    let right = at.iter().filter(|&&ok| ok).count() as f64 / at.len().max(1) as f64;
    (share, right)
}

/// Fits the map on title-only rows: what their parts say, their classes `y`, the model's
/// answer to them `probabilities` (through the cascade, as coded by default), and the
/// n-gram and whole-ensemble calibrations fitted on them. `None` with too few rows for an
/// isotonic map. The report compares the rows' confidence without the cap and with it.
pub fn fit(
    parts: &Parts,
    y: &[u32],
    probabilities: &[f32],
    ngram: &Calibrated,
    whole: &Calibrated,
    classes: usize,
    method: CalibrationMethod,
) -> Option<(Agreement, AgreementFit)> {
    let c = fit_calibration(&retrieval_logits(&parts.retrieval), y, classes, method);
    let retrieval = Calibrated {
        temperature: c.temperature,
        isotonic: c.isotonic,
    };
    let chosen: Vec<usize> = probabilities.chunks(classes).map(top_of).collect();
    let correct: Vec<bool> = chosen
        .iter()
        .zip(y)
        .map(|(&k, &y)| k == y as usize)
        .collect();
    let before: Vec<f64> = chosen
        .iter()
        .enumerate()
        .map(|(i, &k)| probabilities[i * classes + k] as f64)
        .collect();
    let scales = Scales {
        ngram,
        retrieval: &retrieval,
        whole,
    };
    let isotonic = Isotonic::fit(&scores(parts, &scales, &chosen, classes), &correct)?;
    let agreement = Agreement {
        retrieval,
        isotonic,
    };
    let mut after = probabilities.to_vec();
    apply(&agreement, parts, ngram, whole, &mut after, classes);
    let after: Vec<f64> = chosen
        .iter()
        .enumerate()
        .map(|(i, &k)| after[i * classes + k] as f64)
        .collect();
    let (share_conf_90_before, accuracy_conf_90_before) = confident(&before, &correct);
    let (share_conf_90, accuracy_conf_90) = confident(&after, &correct);
    let fit = AgreementFit {
        rows: y.len(),
        ece_before: ece(&before, &correct),
        ece: ece(&after, &correct),
        share_conf_90_before,
        accuracy_conf_90_before,
        share_conf_90,
        accuracy_conf_90,
    };
    Some((agreement, fit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows the parts agree on are right, rows they split on are right a third of the time,
    /// and the ensemble is equally sure of both: the cap brings the second kind down to
    /// their accuracy and leaves the first as the calibration had it.
    #[test]
    fn a_code_the_parts_disagree_on_loses_confidence_and_one_they_share_keeps_it() {
        let classes = 3;
        let mut parts = Parts {
            ngram_logits: Vec::new(),
            retrieval: Vec::new(),
            ensemble_logits: Vec::new(),
        };
        let mut y = Vec::new();
        for i in 0..600u32 {
            let agree = i % 2 == 0;
            parts.ngram_logits.extend([4.0f32, 0.0, 0.0]);
            parts.retrieval.extend(if agree {
                [0.9f32, 0.05, 0.05]
            } else {
                [0.2, 0.7, 0.1]
            });
            parts.ensemble_logits.extend([3.0f32, 0.0, 0.0]);
            y.push(if agree || i % 3 == 0 { 0 } else { 1 + i % 2 });
        }
        let plain = Calibrated {
            temperature: 1.0,
            isotonic: None,
        };
        let probabilities = plain.probabilities(&parts.ensemble_logits, classes);
        let (a, report) = fit(
            &parts,
            &y,
            &probabilities,
            &plain,
            &plain,
            classes,
            CalibrationMethod::Isotonic,
        )
        .expect("enough rows");
        let mut after = probabilities.clone();
        apply(&a, &parts, &plain, &plain, &mut after, classes);
        let row = |p: &[f32], i: usize| p[i * classes..(i + 1) * classes].to_vec();
        // The same code on top, and the row still a distribution.
        for i in [0, 1] {
            assert_eq!(top_of(&row(&after, i)), top_of(&row(&probabilities, i)));
            let sum: f32 = row(&after, i).iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        }
        let right =
            |i: usize| y.iter().skip(i).step_by(2).filter(|&&c| c == 0).count() as f32 / 300.0;
        assert_eq!(right(0), 1.0);
        assert_eq!(
            after[0], probabilities[0],
            "agreed: the calibration's confidence"
        );
        assert!(
            (after[classes] - right(1)).abs() < 0.05,
            "split: {} vs {}",
            after[classes],
            right(1)
        );
        assert!(report.ece < report.ece_before / 2.0, "{report:?}");
        assert_eq!(report.rows, 600);
        // Too few rows for a map: no part.
        assert!(
            fit(
                &Parts {
                    ngram_logits: parts.ngram_logits[..30].to_vec(),
                    retrieval: parts.retrieval[..30].to_vec(),
                    ensemble_logits: parts.ensemble_logits[..30].to_vec(),
                },
                &y[..10],
                &probabilities[..30],
                &plain,
                &plain,
                classes,
                CalibrationMethod::Isotonic,
            )
            .is_none()
        );
    }
}
