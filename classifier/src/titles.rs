//! Occupation titles coded by a source other than the office's records: ESCO's occupations
//! with their alternative labels, or a national index of occupational titles.
//!
//! They are never trained on and never indexed. An ensemble draws from them, beside its
//! validation titles, the rows that calibrate titles it never saw given without duties
//! ([`crate::training::title_only`]): the office's own unseen titles are mostly respellings
//! of titles it has and are coded right about as often as their confidence says, while
//! titles phrased the way another coder phrases them are coded right less often at the same
//! confidence. A calibration fitted on validation titles alone therefore over-states the
//! confidence of exactly the titles this part is for.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::IscoCode;
use crate::Taxonomy;
use crate::error::Error;
use crate::taxonomy::{find_column, open_csv};
use crate::text::normalize;

/// Columns holding a title's code.
const CODE_COLS: &[&str] = &["isco_code", "code", "isco08_code", "iscogroup"];
/// Columns holding one title of the row.
const TITLE_COLS: &[&str] = &["job_title", "preferred_label", "preferredlabel", "title"];
/// Columns holding more titles of the same code, separated by `|` or line breaks (ESCO's
/// exports put one alternative label a line).
const ALT_COLS: &[&str] = &["alt_labels", "altlabels", "alternative_labels"];

/// One title and its 4-digit unit group, the title normalised as a model text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabelledTitle {
    /// The normalised title.
    pub title: String,
    /// Its ISCO-08 unit group.
    pub code: IscoCode,
}

/// Reads a CSV of coded titles: a code column (`isco_code`, `code`, `iscoGroup`), a title
/// column (`job_title`, `preferred_label`, `preferredLabel`, `title`) and optionally a column
/// of alternative titles (`alt_labels`, `altLabels`). Every title of a row becomes one
/// [`LabelledTitle`]; repeated pairs are kept once. Codes are normalised as the records'
/// are ([`Taxonomy::normalize_code`]: a spreadsheet's `.0` or lost leading zero); a code
/// that is still not a unit group (of `tax`, when it has a reference) is an error naming the
/// row and column, so a shifted column is not read as titles.
pub fn load_labelled_titles(path: &Path, tax: &Taxonomy) -> Result<Vec<LabelledTitle>, Error> {
    let file_err = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    let known: Vec<&str> = [CODE_COLS, TITLE_COLS, ALT_COLS].concat();
    let (mut rdr, headers) = open_csv(path, &known, false)?;
    let find = |names: &[&str]| find_column(&headers, names);
    // A column the file must have, or the error naming what it should be called.
    let require = |names: &[&str], what: &str, name: &str| {
        find(names).ok_or_else(|| {
            file_err(format!(
                "has no {what} column (looked for {}; found {}); name the column of {what}s `{name}`",
                names.join(", "),
                headers.join(", ")
            ))
        })
    };
    let ci = require(CODE_COLS, "ISCO code", "isco_code")?;
    let ti = require(TITLE_COLS, "title", "job_title")?;
    let ai = find(ALT_COLS);
    let mut out = BTreeSet::new();
    let mut records = rdr.records().enumerate().peekable();
    while let Some((i, rec)) = records.next() {
        // Row numbers as a spreadsheet shows them: the header is row 1.
        let row = i + 2;
        let rec = rec.map_err(|e| file_err(format!("row {row}: {e}; fix or remove the row")))?;
        // A quote left open in the last column runs to the end of the file, which the CSV
        // reader accepts: the field then ends with the file's last line break.
        if records.peek().is_none() && rec.iter().next_back().is_some_and(|f| f.ends_with('\n')) {
            let line = rec.position().map_or(row as u64, |p| p.line());
            return Err(file_err(format!(
                "row {row}: a quote opened on line {line} is never closed, so the rest of the file became one value; close it (a quote inside a value is written twice: \"\")"
            )));
        }
        let (code, _) = tax.normalize_code(rec.get(ci).unwrap_or(""));
        if let Err(why) = tax.check_unit(&code) {
            return Err(file_err(format!(
                "row {row} column `{}`: {why}; fix or remove the row",
                &headers[ci]
            )));
        }
        let alternatives = ai.and_then(|a| rec.get(a)).unwrap_or("");
        let titles =
            std::iter::once(rec.get(ti).unwrap_or("")).chain(alternatives.split(['|', '\n']));
        for t in titles {
            let title = normalize(t);
            if !title.is_empty() {
                out.insert(LabelledTitle {
                    title,
                    code: IscoCode::from(code.as_str()),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(file_err(
            "holds no titles; list coded occupation titles in it or leave the input out".into(),
        ));
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(text: &str, tax: &Taxonomy) -> Result<Vec<LabelledTitle>, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("titles.csv");
        std::fs::write(&path, text).unwrap();
        load_labelled_titles(&path, tax)
    }

    fn load(text: &str) -> Result<Vec<LabelledTitle>, Error> {
        load_with(text, &Taxonomy::codes_only())
    }

    fn pairs(v: &[LabelledTitle]) -> Vec<(&str, &str)> {
        v.iter()
            .map(|t| (t.title.as_str(), t.code.as_str()))
            .collect()
    }

    #[test]
    fn every_label_of_an_occupation_is_a_title_of_its_code() {
        let v = load(
            "esco_uri,isco_code,preferred_label,alt_labels,description\n\
             u1,2166,Technical Director,head of technical|technical manager,\"Directs, plans\"\n\
             u2,5120,cook,\"chef de partie\nline cook\",cooks\n\
             u3,5120,Cook,,again\n",
        )
        .unwrap();
        assert_eq!(
            pairs(&v),
            vec![
                ("chef de partie", "5120"),
                ("cook", "5120"),
                ("head of technical", "2166"),
                ("line cook", "5120"),
                ("technical director", "2166"),
                ("technical manager", "2166"),
            ]
        );
        let plain = load("job_title;isco_code\nWebsite author;2641\n").unwrap();
        assert_eq!(pairs(&plain), vec![("website author", "2641")]);
    }

    #[test]
    fn codes_a_spreadsheet_mangled_are_read_as_the_records_are() {
        let tax = Taxonomy::from_groups(["0110", "2221"].map(|c| crate::taxonomy::Group {
            code: c.into(),
            title: String::new(),
            definition: String::new(),
        }));
        let v = load_with("job_title,isco_code\nofficer,110\nnurse,2221.0\n", &tax).unwrap();
        assert_eq!(pairs(&v), vec![("nurse", "2221"), ("officer", "0110")]);
        let e = load_with("job_title,isco_code\nbaker,7512\n", &tax)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 2 column `isco_code`: `7512` is not an ISCO-08 unit group in the reference file"),
            "{e}"
        );
    }

    #[test]
    fn a_code_that_is_not_a_unit_group_names_its_row_and_column() {
        let e = load("job_title,isco_code\nnurse,2221\nbaker,75\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 3 column `isco_code`: `75` is not a 4-digit ISCO-08 unit group"),
            "{e}"
        );
        let e = load("name,code\nnurse,2221\n").unwrap_err().to_string();
        assert!(e.contains("has no title column"), "{e}");
        let e = load("job_title,isco_code\n").unwrap_err().to_string();
        assert!(e.contains("holds no titles"), "{e}");
        let e = load("isco_code,job_title\n2221,nurse\n5120,\"cook\n7512,baker\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 3: a quote opened on line 3 is never closed"),
            "{e}"
        );
    }
}
