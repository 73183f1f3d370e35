//! Fitting an ensemble's [`TitleOnly`] part: how it codes a title it never saw, given
//! without duties.
//!
//! The rows it is fitted on are the validation records whose titles are not entries of the
//! title index, each reduced to its title. They stand in for what the part is for — an
//! office's titles phrased unlike any it coded before, arriving without duties — and they
//! are drawn from validation only, so nothing here has been trained on. From their n-gram
//! and ensemble logits it fits the n-gram calibration, a cascade threshold (by the same rule
//! as the ensemble's own, [`fit_cascade`]), the calibration of the rows under it, and the
//! ensemble's calibration of every such row for coding without the cascade.
//!
//! Validation titles the model never saw are mostly the office's own titles respelt, and it
//! codes them right about as often as their confidence says; titles phrased the way another
//! coder phrases them are coded right less often at the same confidence. When training is
//! given titles coded outside the records ([`crate::titles`]), those not in the title index
//! join the rows, so the part is fitted on both kinds.

use std::collections::HashSet;

use super::cascade::fit_cascade;
use super::data::{Examples, encode};
use crate::agreement::Parts;
use crate::artifact::{Calibrated, Cascade, TitleOnly, TitleOnlyFit};
use crate::calibrate::{CalibrationMethod, ece, fit_calibration, softmax_rows, top_label};
use crate::error::Error;
use crate::features::{FeatureConfig, FeatureMatrix};
use crate::model::Trained;
use crate::predict::calibrated;
use crate::retrieval::{Retrieval, mix_probabilities, split_text};
use crate::titles::LabelledTitle;
use crate::transformer::FineTuned;

/// Validation records whose titles are not in `known`, each as its title alone, with their
/// classes: at most `rows` of them, drawn with `seed` (records of codes outside `labels`
/// cannot be scored and are left out).
pub fn unseen_titles(
    va: Examples<'_>,
    labels: &[String],
    known: &HashSet<&str>,
    seed: u64,
    rows: usize,
) -> (Vec<String>, Vec<u32>) {
    let y_all = encode(labels, va.isco_code);
    let mut idx: Vec<usize> = (0..va.len())
        .filter(|&i| {
            let title = split_text(&va.text[i]).0;
            y_all[i].is_some() && !title.is_empty() && !known.contains(title)
        })
        .collect();
    crate::Rng::keyed(seed, "title-only rows").shuffle(&mut idx);
    idx.truncate(rows);
    idx.sort_unstable();
    let texts = idx
        .iter()
        .map(|&i| split_text(&va.text[i]).0.to_string())
        .collect();
    let y = idx.iter().map(|&i| y_all[i].expect("labelled")).collect();
    (texts, y)
}

/// The titles of `external` that are not in `known` and whose codes are labels, with their
/// classes: at most `rows` of them, drawn with `seed`.
pub fn unseen_external(
    external: &[LabelledTitle],
    labels: &[String],
    known: &HashSet<&str>,
    seed: u64,
    rows: usize,
) -> (Vec<String>, Vec<u32>) {
    let class: std::collections::HashMap<&str, u32> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i as u32))
        .collect();
    let mut idx: Vec<(usize, u32)> = external
        .iter()
        .enumerate()
        .filter(|(_, t)| !known.contains(t.title.as_str()))
        .filter_map(|(i, t)| class.get(t.code.as_str()).map(|&c| (i, c)))
        .collect();
    crate::Rng::keyed(seed, "title-only external rows").shuffle(&mut idx);
    idx.truncate(rows);
    idx.sort_unstable();
    idx.iter()
        .map(|&(i, c)| (external[i].title.clone(), c))
        .unzip()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The part from title-only rows' n-gram and ensemble logits and their classes.
/// `with_duties` is the ensemble's calibration fitted on records with duties, which these
/// rows would get otherwise (for the report).
pub fn fit_parts(
    ngram_logits: &[f32],
    ensemble_logits: &[f32],
    y: &[u32],
    classes: usize,
    with_duties: &Calibrated,
    max_loss: f64,
    method: CalibrationMethod,
) -> TitleOnly {
    let keep = |c: crate::calibrate::Calibration| Calibrated {
        temperature: c.temperature,
        isotonic: c.isotonic,
    };
    let ngram = keep(fit_calibration(ngram_logits, y, classes, method));
    let whole = keep(fit_calibration(ensemble_logits, y, classes, method));
    let cascade = fit_cascade(
        ngram_logits,
        ngram,
        ensemble_logits,
        whole.clone(),
        y,
        classes,
        max_loss,
        method,
    );
    let (conf_before, ok) = top_label(
        &calibrated(ensemble_logits, classes, with_duties),
        y,
        classes,
    );
    let (conf_after, _) = top_label(&calibrated(ensemble_logits, classes, &whole), y, classes);
    let fit = TitleOnlyFit {
        rows: y.len(),
        external_rows: 0,
        accuracy: ok.iter().filter(|&&b| b).count() as f64 / y.len().max(1) as f64,
        ece_with_duties_calibration: ece(&conf_before, &ok),
        ece: ece(&conf_after, &ok),
        confidence_with_duties_calibration: mean(&conf_before),
        confidence: mean(&conf_after),
        agreement: None,
    };
    TitleOnly {
        whole,
        cascade,
        fit,
        external: Vec::new(),
        agreement: None,
    }
}

/// The probabilities a cascade gives rows `[rows, classes]`: the n-gram network's where
/// its calibrated confidence reaches the threshold, else the ensemble's under the deferred
/// calibration (as the predictor codes them).
fn through_cascade(
    cascade: &Cascade,
    ngram_logits: &[f32],
    ensemble_logits: &[f32],
    classes: usize,
) -> Vec<f32> {
    let mut p = calibrated(ngram_logits, classes, &cascade.ngram);
    let deferred = calibrated(ensemble_logits, classes, &cascade.deferred);
    for (row, later) in p.chunks_mut(classes).zip(deferred.chunks(classes)) {
        if row.iter().cloned().fold(0f32, f32::max) < cascade.threshold as f32 {
            row.copy_from_slice(later);
        }
    }
    p
}

/// The parts of an ensemble that score a title.
pub(super) struct Scorer<'a> {
    /// The n-gram network and its featuriser.
    pub net: &'a Trained,
    /// See `net`.
    pub features: &'a FeatureConfig,
    /// A fine-tuned transformer mixed in, with its weight.
    pub transformer: Option<(&'a FineTuned, f32)>,
    /// The retrieval half, its mix fitted.
    pub retrieval: &'a Retrieval,
}

/// How to fit the part.
pub(super) struct Settings {
    /// Fewest rows to fit on; with fewer the model has no such part.
    pub min_rows: usize,
    /// Most rows drawn.
    pub max_rows: usize,
    /// Seed of the draw.
    pub seed: u64,
    /// The cascade's allowed loss.
    pub max_loss: f64,
    /// The calibration method.
    pub method: CalibrationMethod,
}

/// The part of an ensemble, fitted on the validation records whose titles it never saw and
/// on the titles of `external` it never saw (each drawn up to `settings.max_rows`); `None`
/// when there are fewer than `settings.min_rows` validation rows.
pub(super) fn fit(
    scorer: &Scorer<'_>,
    va: Examples<'_>,
    external: &[LabelledTitle],
    labels: &[String],
    with_duties: &Calibrated,
    settings: &Settings,
) -> Result<Option<TitleOnly>, Error> {
    let known: HashSet<&str> = scorer
        .retrieval
        .titles
        .texts
        .iter()
        .map(String::as_str)
        .collect();
    let (mut texts, mut y) = unseen_titles(va, labels, &known, settings.seed, settings.max_rows);
    if y.len() < settings.min_rows.max(1) {
        return Ok(None);
    }
    let (more_texts, more_y) =
        unseen_external(external, labels, &known, settings.seed, settings.max_rows);
    let external_rows = more_y.len();
    texts.extend(more_texts);
    y.extend(more_y);
    let c = labels.len();
    let x = FeatureMatrix::build(scorer.features, &texts);
    let rows: Vec<usize> = (0..x.rows()).collect();
    let ngram_logits = scorer.net.logits(&x, &rows);
    let mut p = softmax_rows(&ngram_logits, c, 1.0);
    if let Some((t, w)) = scorer.transformer {
        p = mix_probabilities(&p, &softmax_rows(&t.logits(&texts)?, c, 1.0), w);
    }
    // The mix stays the one fitted on records with duties: a mix fitted on these rows
    // leans further on the retrieval, which suits spelling variants of the office's own
    // titles but codes titles phrased unlike them worse.
    let (retrieval, ensemble_logits) = scorer.retrieval.parts(&p, &texts, c)?;
    let mut part = fit_parts(
        &ngram_logits,
        &ensemble_logits,
        &y,
        c,
        with_duties,
        settings.max_loss,
        settings.method,
    );
    let coded = through_cascade(&part.cascade, &ngram_logits, &ensemble_logits, c);
    (part.agreement, part.fit.agreement) = match crate::agreement::fit(
        &Parts {
            ngram_logits,
            retrieval,
            ensemble_logits,
        },
        &y,
        &coded,
        &part.cascade.ngram,
        &part.whole,
        c,
        settings.method,
    ) {
        Some((agreement, fit)) => (Some(agreement), Some(fit)),
        None => (None, None),
    };
    part.fit.external_rows = external_rows;
    part.external = external.to_vec();
    Ok(Some(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::bare_title;

    #[test]
    fn only_records_with_unseen_titles_are_drawn_and_lose_their_duties() {
        let text: Vec<String> = [
            "nurse | care for patients",
            "ward nurse | care ; give medicine",
            "baker",
            "| only duties here",
            "bus driver | drive",
            "pilot | fly",
        ]
        .map(String::from)
        .to_vec();
        let codes: Vec<String> = ["2221", "2221", "7512", "2221", "8331", "3153"]
            .map(String::from)
            .to_vec();
        let labels: Vec<String> = ["2221", "7512", "8331"].map(String::from).to_vec();
        let known: HashSet<&str> = ["nurse", "bus driver"].into_iter().collect();
        let va = Examples::new(&text, &codes);
        let (texts, y) = unseen_titles(va, &labels, &known, 7, 100);
        // Seen titles, an empty title and a code outside the labels are left out.
        assert_eq!(texts, vec!["ward nurse".to_string(), "baker".to_string()]);
        assert_eq!(y, vec![0, 1]);
        let (texts, _) = unseen_titles(va, &labels, &known, 7, 1);
        assert_eq!(texts.len(), 1);
        assert_eq!(bare_title("baker"), Some("baker"));
        assert_eq!(bare_title("baker | bake bread"), None);
        assert_eq!(bare_title("| bake bread"), None);
    }

    #[test]
    fn external_titles_the_index_holds_or_of_unknown_codes_are_left_out() {
        let t = |title: &str, code: &str| LabelledTitle {
            title: title.into(),
            code: code.into(),
        };
        let external = [
            t("nurse", "2221"),
            t("theatre nurse", "2221"),
            t("dough artisan", "7512"),
            t("astronaut", "3153"),
        ];
        let labels: Vec<String> = ["2221", "7512", "8331"].map(String::from).to_vec();
        let known: HashSet<&str> = ["nurse"].into_iter().collect();
        let (texts, y) = unseen_external(&external, &labels, &known, 7, 100);
        assert_eq!(texts, ["theatre nurse", "dough artisan"]);
        assert_eq!(y, [0, 1]);
        assert_eq!(unseen_external(&external, &labels, &known, 7, 1).0.len(), 1);
    }

    /// Over-confident title-only rows: the calibration fitted on records with duties keeps
    /// them confident, this part brings their confidence down to their accuracy.
    #[test]
    fn the_part_brings_over_confident_titles_down_to_their_accuracy() {
        let classes = 4;
        let mut ngram = Vec::new();
        let mut ens = Vec::new();
        let mut y = Vec::new();
        // Every row puts a large margin on class 0; only 60 % are class 0.
        for i in 0..1000u32 {
            ngram.extend([4.0f32, 0.0, 0.0, 0.0]);
            ens.extend([5.0f32, 0.0, 0.0, 0.0]);
            y.push(if i % 5 < 3 { 0 } else { 1 + i % 3 });
        }
        let with_duties = Calibrated {
            temperature: 1.0,
            isotonic: None,
        };
        let part = fit_parts(
            &ngram,
            &ens,
            &y,
            classes,
            &with_duties,
            0.002,
            CalibrationMethod::Isotonic,
        );
        assert_eq!(part.fit.rows, 1000);
        assert!((part.fit.accuracy - 0.6).abs() < 1e-9, "{:?}", part.fit);
        assert!(part.fit.confidence_with_duties_calibration > 0.95);
        assert!((part.fit.confidence - 0.6).abs() < 0.02, "{:?}", part.fit);
        assert!(part.fit.ece < 0.02 && part.fit.ece_with_duties_calibration > 0.3);
        // The cascade's first step may keep every row: the ensemble is no better here.
        assert!(part.cascade.fit.accuracy >= part.cascade.fit.accuracy_full - 0.002);
    }
}
