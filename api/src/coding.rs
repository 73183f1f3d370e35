//! What the prediction routes and the review page share: the loaded model, explanations and
//! similar records as the API shows them, field limits, and recording what was coded.

use std::sync::Arc;

use axum::http::StatusCode;
use classifier::predict::Prediction;

use crate::AppState;
use crate::error::ApiError;
use crate::model::Loaded;
use crate::types::{ExplanationOut, SimilarOut, WordOut};

impl AppState {
    pub(crate) fn loaded(&self) -> Result<Arc<Loaded>, ApiError> {
        self.model.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no model is promoted to `{}` yet; run `isco-dag run pipelines/full.toml` (the server picks it up without a restart)",
                    self.settings.serve.model_ref
                ),
            )
        })
    }
}

/// Most words an explanation lists: the most influential ones, still in text order.
pub(crate) const MAX_EXPLAIN_WORDS: usize = 100;

/// The explanation of `code` for `text`, as the API shows it.
pub(crate) fn explanation(m: &Loaded, text: &str, code: &str) -> Option<ExplanationOut> {
    m.predictor.explain(text, code).map(|e| {
        let mut words: Vec<(usize, String, f64)> = e
            .words
            .into_iter()
            .enumerate()
            .map(|(i, (w, c))| (i, w, c))
            .collect();
        let truncated = words.len() > MAX_EXPLAIN_WORDS;
        if truncated {
            words.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
            words.truncate(MAX_EXPLAIN_WORDS);
            words.sort_by_key(|w| w.0);
        }
        ExplanationOut {
            isco_code: e.isco_code.into(),
            words: words
                .into_iter()
                .map(|(_, word, contribution)| WordOut { word, contribution })
                .collect(),
            exact: e.exact,
            truncated,
        }
    })
}

/// Refuses a record whose title or duties exceed `[serve] max_field_chars`, naming the field
/// (`what` says which record, for batches and CSV rows).
pub(crate) fn check_field_lengths(
    st: &AppState,
    what: &str,
    fields: [(&str, &str); 2],
) -> Result<(), ApiError> {
    let max = st.settings.serve.max_field_chars;
    for (name, value) in fields {
        // Bytes bound characters from above; count characters only when it matters.
        if value.len() > max && value.chars().count() > max {
            return Err(ApiError::unprocessable(format!(
                "{what}`{name}` has {} characters, more than the {max} allowed (max_field_chars in [serve]); shorten it",
                value.chars().count()
            )));
        }
    }
    Ok(())
}

/// Most similar records one request may ask for.
pub(crate) const MAX_SIMILAR: usize = 50;

/// The `k` records most similar to `text`; `Ok(None)` when the model has no retrieval index.
pub(crate) fn similar_records(
    m: &Loaded,
    text: &str,
    k: usize,
) -> Result<Option<Vec<SimilarOut>>, ApiError> {
    match m.predictor.similar(&[text.to_string()], k) {
        None => Ok(None),
        Some(Ok(mut rows)) => Ok(Some(
            rows.pop()
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
        )),
        Some(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("similar records could not be found: {e}"),
        )),
    }
}

pub(crate) fn record(st: &AppState, preds: &[(&str, &str, &Prediction)], version: &str) {
    st.metrics.predictions(
        preds
            .iter()
            .map(|(_, _, p)| (p.grade.as_str(), p.is_fallback, p.needs_review)),
    );
    if !st.settings.serve.api_review_queue {
        return;
    }
    for (title, duties, p) in preds {
        if p.needs_review
            && let Err(e) = st.review.enqueue_api(title, duties, p, version)
        {
            tracing::warn!(error = %e, "could not append to the API review queue");
        }
    }
}
