//! Fitting an ensemble's cascade on the validation sample its mix was fitted on: the lowest
//! n-gram confidence threshold that costs at most `max_loss` of accuracy against the whole
//! ensemble, and the ensemble's calibration on the rows under it.

use crate::artifact::{Calibrated, Cascade, CascadeFit};
use crate::calibrate::{CalibrationMethod, fit_calibration};
use crate::model::argmax_rows;
use crate::predict::calibrated;

/// Fewest rows under the threshold to fit their own calibration on; with fewer, the
/// ensemble's calibration on every row is used.
const MIN_DEFERRED_ROWS: usize = 200;

/// The cascade of an ensemble from labelled rows: the n-gram network's logits and its
/// calibration, the ensemble's logits and its calibration on every row.
#[allow(clippy::too_many_arguments)]
pub fn fit_cascade(
    ngram_logits: &[f32],
    ngram: Calibrated,
    ensemble_logits: &[f32],
    ensemble: Calibrated,
    y: &[u32],
    classes: usize,
    max_loss: f64,
    method: CalibrationMethod,
) -> Cascade {
    let n = y.len();
    let p_ngram = calibrated(ngram_logits, classes, &ngram);
    let p_ensemble = calibrated(ensemble_logits, classes, &ensemble);
    let conf: Vec<f32> = p_ngram
        .chunks(classes)
        .map(|r| r.iter().cloned().fold(0f32, f32::max))
        .collect();
    let ngram_ok: Vec<bool> = argmax_rows(&p_ngram, classes)
        .iter()
        .zip(y)
        .map(|(a, b)| a == b)
        .collect();
    let ensemble_ok: Vec<bool> = argmax_rows(&p_ensemble, classes)
        .iter()
        .zip(y)
        .map(|(a, b)| a == b)
        .collect();
    let full = ensemble_ok.iter().filter(|&&ok| ok).count();
    // Rows by n-gram confidence, most confident first; the first step takes a prefix, cut
    // only between different confidences.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]).then(a.cmp(&b)));
    let allowed = (max_loss * n as f64).floor() as i64;
    // Correct rows of the cascade minus those of the whole ensemble, as the prefix grows.
    let mut delta: i64 = 0;
    let mut best = 0;
    for k in 1..=n {
        let i = order[k - 1];
        delta += ngram_ok[i] as i64 - ensemble_ok[i] as i64;
        let boundary = k == n || conf[order[k]] < conf[i];
        if boundary && -delta <= allowed {
            best = k;
        }
    }
    // Nothing taken: a threshold above every probability.
    let threshold = if best == 0 {
        1.0 + f64::EPSILON.sqrt()
    } else {
        conf[order[best - 1]] as f64
    };
    let cascade_ok: usize = order[..best].iter().filter(|&&i| ngram_ok[i]).count()
        + order[best..].iter().filter(|&&i| ensemble_ok[i]).count();
    let deferred_rows: Vec<usize> = order[best..].to_vec();
    let (deferred, fitted_on) = if deferred_rows.len() >= MIN_DEFERRED_ROWS {
        let logits: Vec<f32> = deferred_rows
            .iter()
            .flat_map(|&i| {
                ensemble_logits[i * classes..(i + 1) * classes]
                    .iter()
                    .copied()
            })
            .collect();
        let yd: Vec<u32> = deferred_rows.iter().map(|&i| y[i]).collect();
        let cal = fit_calibration(&logits, &yd, classes, method);
        (
            Calibrated {
                temperature: cal.temperature,
                isotonic: cal.isotonic,
            },
            deferred_rows.len(),
        )
    } else {
        (ensemble, 0)
    };
    Cascade {
        ngram,
        threshold,
        deferred,
        fit: CascadeFit {
            rows: n,
            max_loss,
            first_step_share: best as f64 / n.max(1) as f64,
            accuracy: cascade_ok as f64 / n.max(1) as f64,
            accuracy_full: full as f64 / n.max(1) as f64,
            deferred_rows: fitted_on,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Calibrated {
        Calibrated {
            temperature: 1.0,
            isotonic: None,
        }
    }

    /// Two classes; rows as (n-gram logit margin for class 0, ensemble margin, label).
    fn rows(spec: &[(f32, f32, u32)]) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
        let mut ng = Vec::new();
        let mut en = Vec::new();
        let mut y = Vec::new();
        for &(a, b, l) in spec {
            ng.extend([a, 0.0]);
            en.extend([b, 0.0]);
            y.push(l);
        }
        (ng, en, y)
    }

    #[test]
    fn the_threshold_keeps_the_confident_rows_within_the_allowed_loss() {
        // Confident and right (n-gram margin 5): 8 rows; unsure and wrong where the ensemble
        // is right: 2 rows.
        let mut spec = vec![(5.0, 5.0, 0); 8];
        spec.extend([(0.3, -2.0, 1), (0.2, -2.0, 1)]);
        let (ng, en, y) = rows(&spec);
        let c = fit_cascade(
            &ng,
            plain(),
            &en,
            plain(),
            &y,
            2,
            0.0,
            CalibrationMethod::Nll,
        );
        assert_eq!(c.fit.first_step_share, 0.8);
        assert_eq!(c.fit.accuracy, 1.0);
        assert_eq!(c.fit.accuracy_full, 1.0);
        let top = 1.0 / (1.0 + (-5f32).exp());
        assert!((c.threshold - top as f64).abs() < 1e-6, "{}", c.threshold);
        // Allowing a loss of one row in ten takes one unsure row too.
        let c = fit_cascade(
            &ng,
            plain(),
            &en,
            plain(),
            &y,
            2,
            0.1,
            CalibrationMethod::Nll,
        );
        assert_eq!(c.fit.first_step_share, 0.9);
        assert!((c.fit.accuracy - 0.9).abs() < 1e-9);
    }

    #[test]
    fn when_the_ngram_network_is_never_enough_nothing_stops_at_the_first_step() {
        let (ng, en, y) = rows(&[(4.0, -3.0, 1), (4.0, -3.0, 1), (3.0, 3.0, 0)]);
        let c = fit_cascade(
            &ng,
            plain(),
            &en,
            plain(),
            &y,
            2,
            0.0,
            CalibrationMethod::Nll,
        );
        assert_eq!(c.fit.first_step_share, 0.0);
        assert!(c.threshold > 1.0);
        assert_eq!(
            c.fit.deferred_rows, 0,
            "too few rows for their own calibration"
        );
    }
}
