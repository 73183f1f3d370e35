//! The column names `[data]` gives, for stages that read files beside the pipeline's own
//! tables: `predict`'s records to code ([`RecordColumns`]) and `evaluate`'s and `promote`'s
//! labelled `extra` files ([`LabelledColumns`]).
//!
//! Such a stage reads `title_column`, `duties_column` (and for labelled files
//! `code_column`) beside its own params. The names join the stage's params only when they
//! differ from the standard ones, so a pipeline on the standard headings keeps its key. Each
//! file is read by the configured names, or by the standard ones where it has those instead:
//! a table this tool wrote (a split, a corrections hold-out) is read whatever the office calls
//! its columns, beside the office's own files.

use std::path::Path;

use artifacts::table::TextEncoding;
use classifier::text::RecordColumns;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A set of column names a stage reads from `[data]`.
pub trait ColumnNames: Serialize + DeserializeOwned + Default + PartialEq + Clone {
    /// The config keys that set the names, in [`ColumnNames::names`]' order, then
    /// `encoding`.
    const KEYS: &'static [&'static str];
    /// Which of the columns must be in a file (the others may be missing).
    const REQUIRED: &'static [bool];
    /// The names (as headings are compared: without surrounding spaces).
    fn names(&self) -> Vec<&str>;
    /// The encoding a CSV file is read in.
    fn encoding(&self) -> TextEncoding;
    /// The names to read a file with `header` by: each configured name, or the standard
    /// one where the header lacks the configured name but has the standard.
    fn in_header(&self, header: &[String]) -> Self;
    /// Refuses an empty name or one column named for two fields; the message starts with
    /// the key.
    fn validate(&self) -> Result<(), String>;
}

impl ColumnNames for RecordColumns {
    const KEYS: &'static [&'static str] = &RecordColumns::KEYS;
    const REQUIRED: &'static [bool] = &[true, false];
    fn names(&self) -> Vec<&str> {
        RecordColumns::names(self).to_vec()
    }
    fn encoding(&self) -> TextEncoding {
        self.encoding
    }
    fn in_header(&self, header: &[String]) -> Self {
        RecordColumns::in_header(self, header)
    }
    fn validate(&self) -> Result<(), String> {
        RecordColumns::validate(self)
    }
}

/// The columns of a labelled file: a record's text and the code it is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelledColumns {
    /// The job title's column.
    pub title_column: String,
    /// The duties' column (a file may lack it: its records are scored by title alone).
    pub duties_column: String,
    /// The ISCO-08 code's column.
    pub code_column: String,
    /// The encoding a CSV file is read in (left out of the params when UTF-8).
    #[serde(skip_serializing_if = "TextEncoding::is_utf8")]
    pub encoding: TextEncoding,
}

impl Default for LabelledColumns {
    fn default() -> Self {
        let text = RecordColumns::default();
        LabelledColumns {
            title_column: text.title_column,
            duties_column: text.duties_column,
            code_column: "isco_code".into(),
            encoding: text.encoding,
        }
    }
}

impl LabelledColumns {
    /// The columns of the record's text.
    pub fn text(&self) -> RecordColumns {
        RecordColumns {
            title_column: self.title_column.clone(),
            duties_column: self.duties_column.clone(),
            encoding: self.encoding,
        }
    }
}

impl ColumnNames for LabelledColumns {
    const KEYS: &'static [&'static str] =
        &["title_column", "duties_column", "code_column", "encoding"];
    const REQUIRED: &'static [bool] = &[true, false, true];
    fn names(&self) -> Vec<&str> {
        vec![
            self.title_column.trim(),
            self.duties_column.trim(),
            self.code_column.trim(),
        ]
    }
    fn encoding(&self) -> TextEncoding {
        self.encoding
    }
    fn in_header(&self, header: &[String]) -> Self {
        let text = self.text().in_header(header);
        let has = |name: &str| header.iter().any(|h| h.trim() == name);
        let standard = LabelledColumns::default();
        let code = self.code_column.trim();
        LabelledColumns {
            encoding: self.encoding,
            title_column: text.title_column,
            duties_column: text.duties_column,
            code_column: if !has(code) && has(&standard.code_column) {
                standard.code_column
            } else {
                code.to_string()
            },
        }
    }
    fn validate(&self) -> Result<(), String> {
        self.text().validate()?;
        let code = self.code_column.trim();
        if code.is_empty() {
            return Err(
                "`code_column` is empty; give the heading of that column in the files".into(),
            );
        }
        for (key, other) in [
            ("title_column", &self.title_column),
            ("duties_column", &self.duties_column),
        ] {
            if code == other.trim() {
                return Err(format!(
                    "`code_column` is `{code}`, the same as `{key}`; name two different columns"
                ));
            }
        }
        Ok(())
    }
}

/// A stage's params (TOML as configured, or JSON as resolved) split into its own and the
/// column names of `C`.
pub fn split_params<C: ColumnNames, V, M>(params: impl IntoIterator<Item = (String, V)>) -> (M, M)
where
    M: Default + Extend<(String, V)>,
{
    params
        .into_iter()
        .partition(|(k, _)| !C::KEYS.contains(&k.as_str()))
}

/// A stage's param names: its own (`own`) and the keys of `C`.
pub fn param_names<C: ColumnNames>(mut own: Vec<String>) -> Vec<String> {
    own.extend(C::KEYS.iter().map(|k| k.to_string()));
    own
}

/// Resolves the column names of `columns` (the keys of `C` in a stage's configured params)
/// and adds them to `own`, the stage's other params as resolved, when they are not the
/// standard names.
pub fn resolve<C: ColumnNames>(
    mut own: serde_json::Value,
    columns: &toml::Table,
) -> Result<serde_json::Value, String> {
    let names: C = serde_json::from_value(runner::stage::typed_params::<C>(columns)?)
        .map_err(|e| e.to_string())?;
    names.validate()?;
    if names != C::default()
        && let (serde_json::Value::Object(m), serde_json::Value::Object(c)) = (
            &mut own,
            serde_json::to_value(&names).map_err(|e| e.to_string())?,
        )
    {
        m.extend(c);
    }
    Ok(own)
}

/// A stage's resolved params split into its own (`P`) and its column names (`C`).
pub fn read_params<P: DeserializeOwned, C: ColumnNames>(
    params: &serde_json::Value,
) -> Result<(P, C), serde_json::Error> {
    let all = params.as_object().cloned().unwrap_or_default();
    let (own, names): (serde_json::Map<_, _>, serde_json::Map<_, _>) = split_params::<C, _, _>(all);
    Ok((
        serde_json::from_value(serde_json::Value::Object(own))?,
        serde_json::from_value(serde_json::Value::Object(names))?,
    ))
}

/// The columns to read `input` by: `columns`, or the standard names where the file has
/// those instead (see [`ColumnNames::in_header`]). A file whose header cannot be read is
/// left to the reading that follows to report.
pub fn columns_of<C: ColumnNames>(input: &Path, columns: &C) -> C {
    let header_with = |names: &C| {
        crate::records::header_of(input, &names.names(), C::REQUIRED, columns.encoding())
    };
    let Ok(header) = header_with(columns) else {
        return columns.clone();
    };
    let standard = C::default();
    if *columns == standard || header.iter().any(|h| h.trim() == columns.names()[0]) {
        return columns.in_header(&header);
    }
    // A CSV's separator is told from the names looked for, so look for the standard ones.
    match header_with(&standard) {
        Ok(header) => columns.in_header(&header),
        Err(_) => columns.clone(),
    }
}

/// The hint a missing column's error ends with, for a caller whose `[data]` settings name
/// the columns; `with_set`: the caller also takes `-S data.KEY=NAME`.
pub fn column_hint<C: ColumnNames>(column: &str, columns: &C, with_set: bool) -> String {
    let key = columns
        .names()
        .iter()
        .position(|n| *n == column)
        .map_or(C::KEYS[0], |i| C::KEYS[i]);
    let set = if with_set {
        format!(" (or give `-S data.{key}=NAME`)")
    } else {
        String::new()
    };
    format!(", or set `{key}` in [data] to the name it has{set}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn office() -> LabelledColumns {
        LabelledColumns {
            title_column: "Job Title".into(),
            duties_column: "Duties".into(),
            code_column: "ISCO".into(),
            encoding: TextEncoding::UTF_8,
        }
    }

    #[test]
    fn a_labelled_file_is_read_by_its_own_names_or_the_standard_ones() {
        let mine = office();
        assert_eq!(
            mine.in_header(&header(&["Job Title", "Duties", "ISCO"])),
            mine
        );
        // A table this tool wrote keeps the standard headings.
        assert_eq!(
            mine.in_header(&header(&["job_title", "duties_description", "isco_code"])),
            LabelledColumns::default()
        );
        // Each column on its own: a configured heading that is there wins.
        let mixed = mine.in_header(&header(&["Job Title", "duties_description", "isco_code"]));
        assert_eq!(
            mixed.names(),
            ["Job Title", "duties_description", "isco_code"]
        );
        // Neither heading: the configured one, for the error to name.
        assert_eq!(mine.in_header(&header(&["title"])), mine);
    }

    #[test]
    fn labelled_columns_refuse_an_empty_name_and_one_column_for_two_fields() {
        assert_eq!(LabelledColumns::default().validate(), Ok(()));
        let mut c = office();
        c.code_column = " ".into();
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("`code_column` is empty")
        );
        c.code_column = "Duties ".into();
        assert_eq!(
            c.validate().unwrap_err(),
            "`code_column` is `Duties`, the same as `duties_column`; name two different columns"
        );
        c.code_column = "ISCO".into();
        c.duties_column = "Job Title".into();
        assert!(c.validate().unwrap_err().starts_with("`duties_column`"));
    }

    #[test]
    fn names_join_the_params_only_when_they_are_not_the_standard_ones() {
        let own = serde_json::json!({"top_k": 3});
        let standard: toml::Table = toml::from_str("code_column = \"isco_code\"").unwrap();
        assert_eq!(
            resolve::<LabelledColumns>(own.clone(), &standard).unwrap(),
            own
        );
        let named: toml::Table = toml::from_str("code_column = \"ISCO\"").unwrap();
        let v = resolve::<LabelledColumns>(own.clone(), &named).unwrap();
        assert_eq!(v["code_column"], "ISCO");
        assert_eq!(v["title_column"], "job_title");
        let (top, names): (serde_json::Value, LabelledColumns) = read_params(&v).unwrap();
        assert_eq!(top, own);
        assert_eq!(names.code_column, "ISCO");
        let bad: toml::Table = toml::from_str("code_column = 3").unwrap();
        assert!(
            resolve::<LabelledColumns>(own, &bad)
                .unwrap_err()
                .starts_with("`code_column`")
        );
    }

    #[test]
    fn the_hint_names_the_key_of_the_missing_column() {
        let c = office();
        assert_eq!(
            column_hint("ISCO", &c, false),
            ", or set `code_column` in [data] to the name it has"
        );
        assert_eq!(
            column_hint("Duties", &c.text(), true),
            ", or set `duties_column` in [data] to the name it has (or give `-S data.duties_column=NAME`)"
        );
    }
}
