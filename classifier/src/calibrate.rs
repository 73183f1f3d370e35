//! Calibration: temperature scaling fitted on the validation split, and expected calibration
//! error (ECE, 15 equal-width bins over the top probability).

/// Softmax of each row of row-major logits divided by `t`.
pub fn softmax_rows(logits: &[f32], classes: usize, t: f64) -> Vec<f32> {
    let mut out = vec![0f32; logits.len()];
    let inv = (1.0 / t) as f32;
    for (row, o) in logits.chunks(classes).zip(out.chunks_mut(classes)) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0f32;
        for (v, x) in o.iter_mut().zip(row) {
            *v = ((x - m) * inv).exp();
            s += *v;
        }
        for v in o.iter_mut() {
            *v /= s;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
