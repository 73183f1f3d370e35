//! Calibration: temperature scaling fitted on the validation split, and expected calibration
//! error (ECE, 15 equal-width bins over the top probability).

/// Softmax of each row of row-major logits divided by `t`.
pub fn softmax_rows(logits: &[f32], classes: usize, t: f64) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; logits.len()];
    let inv = (1.0 / t) as f32;
    out.par_chunks_mut(classes)
        .zip(logits.par_chunks(classes))
        .for_each(|(o, row)| {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0f32;
            for (v, x) in o.iter_mut().zip(row) {
                *v = ((x - m) * inv).exp();
                s += *v;
            }
            for v in o.iter_mut() {
                *v /= s;
            }
        });
    out
}

fn nll(logits: &[f32], y: &[u32], classes: usize, t: f64) -> f64 {
    let inv = 1.0 / t;
    let mut total = 0.0;
    for (row, &c) in logits.chunks(classes).zip(y) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse: f64 = row
            .iter()
            .map(|&x| ((x as f64 - m) * inv).exp())
            .sum::<f64>()
            .ln();
        total += lse - (row[c as usize] as f64 - m) * inv;
    }
    total / y.len().max(1) as f64
}

/// Fits the temperature minimising the validation negative log-likelihood (golden-section
/// search over log T in [-3, 3]). Returns 1.0 without data.
pub fn fit_temperature(logits: &[f32], y: &[u32], classes: usize) -> f64 {
    if y.is_empty() {
        return 1.0;
    }
    let f = |lt: f64| nll(logits, y, classes, lt.exp());
    let (mut a, mut b) = (-3.0f64, 3.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..40 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// Fits the temperature that minimises the expected calibration error of the top-1
/// confidence (grid over T in [0.25, 4], refined around the best point). With noisy labels
/// the NLL-optimal temperature leaves the confident bins over-confident (a wrong label caps
/// their accuracy), which is what ECE and the production rate measure; this fit targets it.
pub fn fit_temperature_ece(logits: &[f32], y: &[u32], classes: usize) -> f64 {
    if y.is_empty() {
        return 1.0;
    }
    let score = |t: f64| {
        let p = softmax_rows(logits, classes, t);
        let (conf, ok) = top_label(&p, y, classes);
        ece(&conf, &ok)
    };
    let mut best = (f64::INFINITY, 1.0);
    for k in 0..=40 {
        let t = 0.25 * 16f64.powf(k as f64 / 40.0);
        let s = score(t);
        if s < best.0 {
            best = (s, t);
        }
    }
    let (mut lo, mut hi) = (best.1 / 1.08, best.1 * 1.08);
    for _ in 0..12 {
        let (a, b) = (lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0);
        if score(a) < score(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    let t = (lo + hi) / 2.0;
    if score(t) < best.0 { t } else { best.1 }
}

/// Top-label isotonic calibration: a monotone map from the top-1 probability to the observed
/// accuracy, fitted on validation by pool-adjacent-violators. Applied after temperature
/// scaling; the other classes are rescaled so each row still sums to one and the top class
/// stays on top. It corrects what one temperature cannot, e.g. confident bins whose accuracy
/// is capped by label noise.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Isotonic {
    /// Knots: mean confidence of each pooled block (increasing).
    pub x: Vec<f64>,
    /// Accuracy of each block (non-decreasing).
    pub y: Vec<f64>,
}

impl Isotonic {
    /// Fits the map on (confidence, correct) pairs.
    pub fn fit(confidence: &[f64], correct: &[bool]) -> Option<Isotonic> {
        if confidence.len() < 50 {
            return None;
        }
        let mut idx: Vec<usize> = (0..confidence.len()).collect();
        idx.sort_by(|a, b| confidence[*a].total_cmp(&confidence[*b]));
        // Blocks of (sum conf, sum correct, n).
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
        for i in idx {
            blocks.push((confidence[i], correct[i] as u8 as f64, 1.0));
            while blocks.len() > 1 {
                let n = blocks.len();
                let (a, b) = (blocks[n - 2], blocks[n - 1]);
                if a.1 / a.2 >= b.1 / b.2 {
                    blocks.pop();
                    blocks[n - 2] = (a.0 + b.0, a.1 + b.1, a.2 + b.2);
                } else {
                    break;
                }
            }
        }
        Some(Isotonic {
            x: blocks.iter().map(|b| b.0 / b.2).collect(),
            y: blocks.iter().map(|b| b.1 / b.2).collect(),
        })
    }

    /// Calibrated accuracy of a top-1 probability (linear between knots, flat outside).
    pub fn map(&self, p: f64) -> f64 {
        let k = self.x.partition_point(|&x| x < p);
        if k == 0 {
            return self.y[0];
        }
        if k == self.x.len() {
            return self.y[k - 1];
        }
        let (x0, x1, y0, y1) = (self.x[k - 1], self.x[k], self.y[k - 1], self.y[k]);
        if x1 <= x0 {
            y1
        } else {
            y0 + (y1 - y0) * (p - x0) / (x1 - x0)
        }
    }

    /// Recalibrates one probability row in place.
    pub fn apply_row(&self, row: &mut [f32]) {
        set_top(row, |p1| self.map(p1));
    }
}

/// Sets the top probability of a row to `confidence(top probability)` (clamped inside (0,
/// 1)) and rescales the others so the row still sums to one and the top class stays on top.
pub fn set_top(row: &mut [f32], confidence: impl FnOnce(f64) -> f64) {
    let (mut top, mut p1, mut p2) = (0usize, f32::MIN, f32::MIN);
    for (i, &v) in row.iter().enumerate() {
        if v > p1 {
            p2 = p1;
            p1 = v;
            top = i;
        } else if v > p2 {
            p2 = v;
        }
    }
    let p1 = p1 as f64;
    if p1 >= 1.0 || row.len() < 2 {
        return;
    }
    let p2 = p2.max(0.0) as f64;
    let mut q = confidence(p1).clamp(1e-6, 1.0 - 1e-6);
    // Keep the top class on top after the others are rescaled.
    q = q.max(p2 / (1.0 - p1 + p2));
    let f = ((1.0 - q) / (1.0 - p1)) as f32;
    for (i, v) in row.iter_mut().enumerate() {
        *v = if i == top { q as f32 } else { *v * f };
    }
    // At that floor the second class ties the top one in exact arithmetic, and a tie
    // would hand the row to whichever class comes first; the top stays strictly above.
    let second = (p2 as f32) * f;
    if row[top] <= second {
        row[top] = second.next_up();
    }
}

/// Expected calibration error of top-1 confidences against correctness.
pub fn ece(confidence: &[f64], correct: &[bool]) -> f64 {
    const BINS: usize = 15;
    let mut n = [0usize; BINS];
    let mut conf = [0f64; BINS];
    let mut acc = [0f64; BINS];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * BINS as f64) as usize).min(BINS - 1);
        n[b] += 1;
        conf[b] += c;
        acc[b] += ok as u8 as f64;
    }
    let total = confidence.len().max(1) as f64;
    (0..BINS)
        .filter(|&b| n[b] > 0)
        .map(|b| (n[b] as f64 / total) * ((acc[b] - conf[b]) / n[b] as f64).abs())
        .sum()
}

/// Reliability diagram data: per bin (mean confidence, accuracy, count).
pub fn reliability(confidence: &[f64], correct: &[bool], bins: usize) -> Vec<(f64, f64, usize)> {
    let mut n = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut acc = vec![0f64; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64) as usize).min(bins - 1);
        n[b] += 1;
        conf[b] += c;
        acc[b] += ok as u8 as f64;
    }
    (0..bins)
        .map(|b| {
            if n[b] == 0 {
                ((b as f64 + 0.5) / bins as f64, 0.0, 0)
            } else {
                (conf[b] / n[b] as f64, acc[b] / n[b] as f64, n[b])
            }
        })
        .collect()
}

/// How [`fit_calibration`] fits the confidence on validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// NLL temperature, then a top-label isotonic map.
    #[default]
    Isotonic,
    /// The temperature minimising the expected calibration error.
    Ece,
    /// Classic temperature scaling (negative log-likelihood).
    Nll,
}

/// Fewest labelled rows a calibration is fitted on. With fewer, the temperature fit follows
/// a handful of rows (a few rows all coded right drive it to its sharpest bound, and every
/// later confidence towards 1), so the network's own probabilities are kept instead.
pub const MIN_FIT_ROWS: usize = 30;

/// A fitted calibration and the validation ECE before and after it.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Softmax temperature.
    pub temperature: f64,
    /// Top-label isotonic map (method `isotonic`).
    pub isotonic: Option<Isotonic>,
    /// ECE of the raw softmax.
    pub ece_before: f64,
    /// ECE after calibration.
    pub ece_after: f64,
    /// Rows it was fitted on (none fitted below [`MIN_FIT_ROWS`]).
    pub rows: usize,
}

/// Per row of probabilities `[rows, classes]`: the top probability and whether its class
/// (the first of equal ones) is the label.
pub fn top_label(p: &[f32], y: &[u32], classes: usize) -> (Vec<f64>, Vec<bool>) {
    p.chunks(classes)
        .zip(y)
        .map(|(r, &y)| {
            let (i, v) = r
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
            (v as f64, i as u32 == y)
        })
        .unzip()
}

/// Fits the calibration on validation logits: `nll` (classic temperature scaling), `ece`
/// (the temperature minimising calibration error) or `isotonic` (NLL temperature, then a
/// top-label isotonic map). Shared by `train` and `fine-tune`. Fewer than [`MIN_FIT_ROWS`] rows
/// fit nothing: temperature 1, no map.
pub fn fit_calibration(
    logits: &[f32],
    y: &[u32],
    classes: usize,
    method: CalibrationMethod,
) -> Calibration {
    if y.len() < MIN_FIT_ROWS {
        let (conf, ok) = top_label(&softmax_rows(logits, classes, 1.0), y, classes);
        let e = ece(&conf, &ok);
        return Calibration {
            temperature: 1.0,
            isotonic: None,
            ece_before: e,
            ece_after: e,
            rows: y.len(),
        };
    }
    let temperature = if method == CalibrationMethod::Ece {
        fit_temperature_ece(logits, y, classes)
    } else {
        fit_temperature(logits, y, classes)
    };
    let top1 = |t: f64, iso: Option<&Isotonic>| -> (Vec<f64>, Vec<bool>) {
        let mut p = softmax_rows(logits, classes, t);
        if let Some(iso) = iso {
            p.chunks_mut(classes).for_each(|r| iso.apply_row(r));
        }
        top_label(&p, y, classes)
    };
    let isotonic = if method == CalibrationMethod::Isotonic {
        let (conf, ok) = top1(temperature, None);
        Isotonic::fit(&conf, &ok)
    } else {
        None
    };
    let ece_of = |(conf, ok): (Vec<f64>, Vec<bool>)| ece(&conf, &ok);
    Calibration {
        ece_before: ece_of(top1(1.0, None)),
        ece_after: ece_of(top1(temperature, isotonic.as_ref())),
        temperature,
        isotonic,
        rows: y.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_confidence_set_under_the_second_class_keeps_its_class_on_top() {
        // The second class comes first in the row, so a tie would hand it the row.
        let mut row = [0.3f32, 0.6, 0.1];
        set_top(&mut row, |_| 0.05);
        assert!(row[1] > row[0], "{row:?}");
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
        let mut row = [0.2f32, 0.7, 0.1];
        set_top(&mut row, |_| 0.5);
        assert!(
            (row[1] - 0.5).abs() < 1e-6 && (row[0] - 0.5 * 2.0 / 3.0).abs() < 1e-6,
            "{row:?}"
        );
    }

    #[test]
    fn too_few_rows_fit_no_calibration() {
        // Every row right: the likelihood keeps rising as the temperature falls.
        let rows = |n: usize| {
            let logits: Vec<f32> = (0..n).flat_map(|i| [1.0 + (i % 3) as f32, 0.0]).collect();
            (logits, vec![0u32; n])
        };
        let (logits, y) = rows(MIN_FIT_ROWS - 1);
        let few = fit_calibration(&logits, &y, 2, CalibrationMethod::Isotonic);
        assert_eq!((few.temperature, few.rows), (1.0, MIN_FIT_ROWS - 1));
        assert!(few.isotonic.is_none() && few.ece_before == few.ece_after);
        let (logits, y) = rows(MIN_FIT_ROWS);
        let enough = fit_calibration(&logits, &y, 2, CalibrationMethod::Nll);
        assert!(enough.temperature < 0.5, "{enough:?}");
        assert_eq!(enough.rows, MIN_FIT_ROWS);
    }

    #[test]
    fn temperature_fixes_overconfidence() {
        // Logits that are 3x too sharp: right 70 % of the time but ~certain.
        let mut logits = Vec::new();
        let mut y = Vec::new();
        for i in 0..1000 {
            logits.extend_from_slice(&[6.0f32, 0.0, 0.0]);
            y.push(if i % 10 < 7 { 0 } else { 1 + (i % 2) as u32 });
        }
        let t = fit_temperature(&logits, &y, 3);
        assert!(t > 2.0, "{t}");
        let p = softmax_rows(&logits, 3, t);
        assert!((p[0] - 0.7).abs() < 0.02, "{}", p[0]);
        let conf: Vec<f64> = p.chunks(3).map(|r| r[0] as f64).collect();
        let correct: Vec<bool> = y.iter().map(|&c| c == 0).collect();
        assert!(ece(&conf, &correct) < 0.02);
        let iso = Isotonic::fit(&vec![0.99; 1000], &correct).unwrap();
        assert!((iso.map(0.99) - 0.7).abs() < 1e-9);
        let mut row = [0.99f32, 0.006, 0.004];
        iso.apply_row(&mut row);
        assert!((row[0] - 0.7).abs() < 1e-6 && (row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!((row[1] / row[2] - 1.5).abs() < 1e-4);
        let t2 = fit_temperature_ece(&logits, &y, 3);
        let p = softmax_rows(&logits, 3, t2);
        assert!((p[0] - 0.7).abs() < 0.01, "{t2} {}", p[0]);
    }
}
