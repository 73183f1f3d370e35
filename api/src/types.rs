//! The API's request and response bodies (their OpenAPI schemas come from these types).

use classifier::predict::{Grade, Prediction, Step};
use classifier::retrieval::EntrySource;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A count given as a whole number: JSON Schema counts `3.0` as the integer 3, so it is taken
/// as 3, while `3.5` and negative numbers are refused.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(v) = n.as_u64() {
        return Ok(usize::try_from(v).unwrap_or(usize::MAX));
    }
    match n.as_f64() {
        // The cast saturates: a count too large for the machine is as large as it gets.
        Some(v) if v >= 0.0 && v.fract() == 0.0 => Ok(v as usize),
        _ => Err(serde::de::Error::custom(format!(
            "`{n}` is not a whole number of 0 or more"
        ))),
    }
}

/// A query-string count such as `limit`: any run of digits, however long (a count past what
/// the machine holds is as large as it gets, and is capped by the route anyway).
pub(crate) fn query_count<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<usize>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(serde::de::Error::custom(format!(
            "`{s}` is not a whole number of 0 or more"
        )));
    }
    Ok(Some(s.parse().unwrap_or(usize::MAX)))
}

/// A caller's id for a record, echoed back as it came: text (`"A-17"`) or a number (`17`),
/// as a statistical office's record ids often are.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RecordId {
    /// An id given as text.
    Text(String),
    /// An id given as a whole number.
    Number(i64),
}

impl<'de> Deserialize<'de> for RecordId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // By hand, so that an id of another type is refused with a message saying what an id
        // may be, rather than serde's "did not match any variant".
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(RecordId::Text(s)),
            serde_json::Value::Number(n) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|v| v.fract() == 0.0 && v.abs() < 9.0e15)
                        .map(|v| v as i64)
                })
                .map(RecordId::Number)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "the id `{n}` is not a whole number that fits 64 bits; send it as text"
                    ))
                }),
            other => Err(serde::de::Error::custom(format!(
                "the id `{other}` is neither text nor a whole number; send it as text"
            ))),
        }
    }
}

/// One record to code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Job title as written by the respondent.
    #[schema(example = "senior software engineer")]
    pub job_title: String,
    /// Main duties (optional but it helps).
    #[serde(default)]
    #[schema(example = "designing and writing computer programs")]
    pub duties_description: String,
    /// Add the words that drove the decision (`explanation`).
    #[serde(default)]
    pub explain: bool,
    /// Add this many similar past records (`similar`, at most 50); needs a model with a
    /// retrieval index (`ensemble`).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 50)]
    pub similar: usize,
    /// Caller's id for the record (text or a whole number), echoed back.
    #[serde(default)]
    pub id: Option<RecordId>,
}

/// One record of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRecord {
    /// Job title.
    pub job_title: String,
    /// Duties (optional).
    #[serde(default)]
    pub duties_description: String,
    /// Caller's id (text or a whole number), echoed back.
    #[serde(default)]
    pub id: Option<RecordId>,
}

/// An alternative code.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlternativeOut {
    /// 4-digit ISCO-08 code.
    pub isco_code: String,
    /// Its title.
    pub title: String,
    /// Calibrated probability.
    pub confidence: f64,
}

impl From<classifier::predict::Alternative> for AlternativeOut {
    fn from(a: classifier::predict::Alternative) -> Self {
        AlternativeOut {
            isco_code: a.isco_code.into(),
            title: a.title,
            confidence: a.confidence,
        }
    }
}

/// A past record (or ISCO reference title) whose title is near the query's.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimilarOut {
    /// Its normalised title.
    pub text: String,
    /// The code it was given (for a past record, the code its title was most often given).
    pub isco_code: String,
    /// Title of that code.
    pub title: String,
    /// Where it comes from.
    pub source: SourceOut,
    /// Cosine similarity of the two titles.
    pub similarity: f64,
}

/// Where a similar title comes from: the schema's view of [`EntrySource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceOut {
    /// The ISCO reference: a unit group's title, an example occupation, a task.
    Reference,
    /// A past record's title, with the code it was most often given.
    Record,
    /// A reviewer's correction.
    Correction,
}

impl From<EntrySource> for SourceOut {
    fn from(s: EntrySource) -> Self {
        match s {
            EntrySource::Reference => SourceOut::Reference,
            EntrySource::Record => SourceOut::Record,
            EntrySource::Correction => SourceOut::Correction,
        }
    }
}

impl From<classifier::predict::Similar> for SimilarOut {
    fn from(s: classifier::predict::Similar) -> Self {
        SimilarOut {
            text: s.text,
            isco_code: s.isco_code.into(),
            title: s.title,
            source: s.source.into(),
            similarity: s.similarity,
        }
    }
}

/// A word's contribution to the chosen code's score.
#[derive(Debug, Serialize, ToSchema)]
pub struct WordOut {
    /// Word of the normalised text.
    pub word: String,
    /// Summed contribution of the n-grams containing it (positive: for the code).
    pub contribution: f64,
}

/// Why the model chose a code.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplanationOut {
    /// The code explained (the top 4-digit code).
    pub isco_code: String,
    /// Per-word contributions, in text order.
    pub words: Vec<WordOut>,
    /// Whether the contributions are exact (linear model) or an approximation.
    pub exact: bool,
    /// Whether only the most influential words are listed (long texts).
    pub truncated: bool,
}

/// How sure the model is of a code, by the configured thresholds (`[inference] grades`): the
/// schema's view of [`Grade`], so clients see the values it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GradeOut {
    /// At or above the first threshold.
    VeryHigh,
    /// At or above the second.
    High,
    /// At or above the third.
    Medium,
    /// At or above the fourth.
    Low,
    /// Below every threshold.
    VeryLow,
}

impl From<Grade> for GradeOut {
    fn from(g: Grade) -> Self {
        match g {
            Grade::VeryHigh => GradeOut::VeryHigh,
            Grade::High => GradeOut::High,
            Grade::Medium => GradeOut::Medium,
            Grade::Low => GradeOut::Low,
            Grade::VeryLow => GradeOut::VeryLow,
        }
    }
}

/// The part of a model that decided a row: the schema's view of [`Step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepOut {
    /// The n-gram network (an `ngram` model, or the first step of an ensemble's cascade).
    Ngram,
    /// The whole ensemble: n-gram network, retrieval (and a transformer when it has one).
    Ensemble,
    /// A fine-tuned transformer.
    Transformer,
    /// The cross-encoder re-ranker re-read the row, which the model before it was unsure of.
    Reranker,
}

impl From<Step> for StepOut {
    fn from(s: Step) -> Self {
        match s {
            Step::Ngram => StepOut::Ngram,
            Step::Ensemble => StepOut::Ensemble,
            Step::Transformer => StepOut::Transformer,
            Step::Reranker => StepOut::Reranker,
        }
    }
}

/// A coded record.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPrediction {
    /// The caller's id, when given, as it was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<RecordId>,
    /// ISCO-08 code at `level` digits (4, or coarser after fallback).
    #[schema(example = "2512")]
    pub isco_code: String,
    /// Digits of the code.
    pub level: usize,
    /// Title of the code.
    pub title: String,
    /// Calibrated probability that the code is right.
    pub confidence: f64,
    /// How sure the model is, by the configured thresholds.
    pub grade: GradeOut,
    /// Whether the code is coarser than 4 digits because no unit group was confident enough.
    pub is_fallback: bool,
    /// Whether a coder should look at it.
    pub needs_review: bool,
    /// Which part of the model decided.
    pub decided_by: StepOut,
    /// Top-k 4-digit codes.
    pub alternatives: Vec<AlternativeOut>,
    /// Store object id of the model that coded it.
    pub model_version: String,
    /// Word contributions, when `explain` was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<ExplanationOut>,
    /// Similar past records, best first, when `similar` was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similar: Option<Vec<SimilarOut>>,
}

/// The answer to a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// Store object id of the model.
    pub model_version: String,
    /// One prediction per record, in order.
    pub predictions: Vec<JobPrediction>,
}

/// The service is up and serving a model.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthOut {
    /// Always `ok` (a service without a model answers 503 instead).
    #[schema(example = "ok")]
    pub status: String,
    /// Version (content hash) of the model being served.
    pub model_version: String,
}

/// An error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong and what to do.
    pub error: String,
    /// HTTP status.
    pub status: u16,
}

/// The CSV upload form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CsvUpload {
    /// CSV (UTF-8) or Parquet with `job_title` and optionally `duties_description` (other
    /// columns are kept; the service's config may name the two columns otherwise, in
    /// `[data]`'s `title_column` and `duties_column`). A CSV is separated by commas, semicolons, tabs or `|` as its header
    /// row shows; a Parquet upload is answered in Parquet.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

pub(crate) fn to_out(p: Prediction, version: &str, id: Option<RecordId>) -> JobPrediction {
    JobPrediction {
        id,
        isco_code: p.isco_code.into(),
        level: p.level,
        title: p.title,
        confidence: p.confidence,
        grade: p.grade.into(),
        is_fallback: p.is_fallback,
        needs_review: p.needs_review,
        decided_by: p.decided_by.into(),
        alternatives: p.alternatives.into_iter().map(Into::into).collect(),
        model_version: version.to_string(),
        explanation: None,
        similar: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ids_are_read_as_clients_write_them() {
        let similar = |body: &str| {
            serde_json::from_str::<JobRequest>(&format!(r#"{{"job_title":"chef",{body}}}"#))
                .map(|r| r.similar)
                .map_err(|e| e.to_string())
        };
        assert_eq!(similar(r#""similar":3"#), Ok(3));
        assert_eq!(similar(r#""similar":3.0"#), Ok(3));
        assert!(
            similar(r#""similar":3.5"#)
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(
            similar(r#""similar":-1"#)
                .unwrap_err()
                .contains("not a whole number")
        );
        #[derive(Deserialize)]
        struct Q {
            #[serde(default, deserialize_with = "query_count")]
            limit: Option<usize>,
        }
        let limit = |q: &str| {
            serde_json::from_str::<Q>(q)
                .map(|q| q.limit)
                .map_err(|e| e.to_string())
        };
        assert_eq!(limit("{}"), Ok(None));
        let id = |v: &str| {
            serde_json::from_str::<BatchRecord>(&format!(r#"{{"job_title":"chef","id":{v}}}"#))
                .map(|r| r.id)
                .map_err(|e| e.to_string())
        };
        assert_eq!(id(r#""A-17""#), Ok(Some(RecordId::Text("A-17".into()))));
        assert_eq!(id("17"), Ok(Some(RecordId::Number(17))));
        assert_eq!(id("17.0"), Ok(Some(RecordId::Number(17))));
        assert_eq!(id("null"), Ok(None));
        assert!(id("1.5").unwrap_err().contains("send it as text"));
        assert!(
            id("true")
                .unwrap_err()
                .contains("neither text nor a whole number")
        );
        assert_eq!(
            serde_json::to_string(&RecordId::Number(17)).unwrap(),
            "17",
            "echoed back as it came"
        );
        assert_eq!(limit(r#"{"limit":"12"}"#), Ok(Some(12)));
        assert_eq!(
            limit(r#"{"limit":"4252328266569602826240"}"#),
            Ok(Some(usize::MAX))
        );
        for bad in ["", "-1", "1e3", "many"] {
            assert!(
                limit(&format!(r#"{{"limit":"{bad}"}}"#))
                    .unwrap_err()
                    .contains("not a whole number"),
                "{bad}"
            );
        }
    }
}
