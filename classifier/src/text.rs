//! Text normalisation shared by cleaning, training and prediction (the `clean` stage and
//! the predictor must agree exactly).

use artifacts::table::TextEncoding;

/// Normalises one field: lower case; punctuation and special characters become spaces
/// (apostrophes are dropped, so "o'clock" stays one word); `|` is kept as the field
/// separator; runs of white space collapse to one space.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = true;
    for ch in s.chars() {
        if ch == '\'' || ch == '\u{2019}' {
            continue;
        }
        if ch.is_alphanumeric() || ch == '|' {
            for l in ch.to_lowercase() {
                out.push(l);
            }
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// The mark between two clauses of the duties in a model text (`;` in the raw duties, the
/// way records list their tasks). It is not a word: the ngram features skip it (see
/// [`words`]), so they are those of the duties without it; the retrieval scorer queries the
/// duties clause by clause with it (see [`clauses`]).
pub const CLAUSE_MARK: &str = ";";

/// Normalises the duties clause by clause: the clauses of the raw duties (split at `;`),
/// each normalised, the non-empty ones joined with ` ; `.
pub fn normalize_duties(duties: &str) -> String {
    let mut out = String::with_capacity(duties.len());
    for clause in duties.split(';') {
        let c = normalize(clause);
        if !c.is_empty() {
            if !out.is_empty() {
                out.push_str(" ; ");
            }
            out.push_str(&c);
        }
    }
    out
}

/// The words of a normalised text or field: its tokens but the field separator `|` and the
/// clause mark.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace()
        .filter(|w| *w != "|" && *w != CLAUSE_MARK)
}

/// The clauses of normalised duties (see [`normalize_duties`]); one clause when there is no
/// mark.
pub fn clauses(duties: &str) -> impl Iterator<Item = &str> {
    duties
        .split(CLAUSE_MARK)
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

/// The text of normalised duties without the clause marks (what the encoder embeds for the
/// duties as a whole).
pub fn without_clause_marks(duties: &str) -> String {
    words(duties).collect::<Vec<_>>().join(" ")
}

/// Why a record has no model text ([`record_text`] is empty): both fields blank, or holding
/// only punctuation and symbols, which coding ignores.
pub fn why_no_text(title: &str, duties: &str) -> &'static str {
    if title.trim().is_empty() && duties.trim().is_empty() {
        "the job title and duties are empty"
    } else {
        "the job title and duties hold no letters or digits, so there is nothing to code"
    }
}

/// The `note` of an input row that gets no code, the same in every output (the command
/// line's, the pipeline's and the service's files): `row unusable: ` and why.
pub fn unusable_note(why: impl std::fmt::Display) -> String {
    format!("row unusable: {why}")
}

/// The names under which an office's files hold a record's text: its job title and its
/// duties (config `[data]`, `title_column` and `duties_column`), and the character encoding
/// of such a file when it is CSV (`encoding`). Training records, files to code and uploads to
/// the service are read with them; coded output names the two columns `job_title` and
/// `duties_description` whatever they were called, and is UTF-8 whatever the input was.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RecordColumns {
    /// The job title's column.
    pub title_column: String,
    /// The duties' column (a file may lack it: its records are coded by title alone).
    pub duties_column: String,
    /// The encoding a CSV file is read in (UTF-8 unless the office's files are saved in
    /// another; left out of the params, and so of stage keys, when UTF-8).
    #[serde(skip_serializing_if = "TextEncoding::is_utf8")]
    pub encoding: TextEncoding,
}

impl Default for RecordColumns {
    fn default() -> Self {
        RecordColumns {
            title_column: "job_title".into(),
            duties_column: "duties_description".into(),
            encoding: TextEncoding::UTF_8,
        }
    }
}

impl RecordColumns {
    /// The config keys of `[data]` that say how to read a file of records: the two names,
    /// then the encoding.
    pub const KEYS: [&'static str; 3] = ["title_column", "duties_column", "encoding"];

    /// The two names, title first (as headings are compared: without surrounding spaces).
    pub fn names(&self) -> [&str; 2] {
        [self.title_column.trim(), self.duties_column.trim()]
    }

    /// The names to read a file with `header` by: each configured name, or the standard one
    /// where the header lacks the configured name but has the standard (a table this tool
    /// wrote, such as a cleaned split, is coded whatever the office calls its columns).
    pub fn in_header<S: AsRef<str>>(&self, header: &[S]) -> RecordColumns {
        let has = |name: &str| header.iter().any(|h| h.as_ref().trim() == name);
        let standard = RecordColumns::default();
        let pick = |mine: &str, theirs: &str| {
            if !has(mine) && has(theirs) {
                theirs.to_string()
            } else {
                mine.to_string()
            }
        };
        let [title, duties] = self.names();
        let [std_title, std_duties] = standard.names();
        RecordColumns {
            title_column: pick(title, std_title),
            duties_column: pick(duties, std_duties),
            encoding: self.encoding,
        }
    }

    /// Refuses an empty name or one column named for both; the message starts with the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, name) in Self::KEYS.iter().zip(self.names()) {
            if name.trim().is_empty() {
                return Err(format!(
                    "`{key}` is empty; give the heading of that column in the files"
                ));
            }
        }
        let [title, duties] = self.names();
        if title == duties {
            return Err(format!(
                "`duties_column` is `{duties}`, the same as `title_column`; name two different columns"
            ));
        }
        Ok(())
    }
}

/// The model text of a record: `title | duties` (normalised; the duties' clauses separated
/// by ` ; `, see [`CLAUSE_MARK`]), or just the title when the duties are empty.
pub fn record_text(title: &str, duties: &str) -> String {
    let t = normalize(title);
    let d = normalize_duties(duties);
    match (t.is_empty(), d.is_empty()) {
        (_, true) => t,
        (true, false) => format!("| {d}"),
        (false, false) => format!("{t} | {d}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_columns_refuse_an_empty_name_and_one_column_for_both() {
        assert_eq!(RecordColumns::default().validate(), Ok(()));
        let named = |t: &str, d: &str| RecordColumns {
            title_column: t.into(),
            duties_column: d.into(),
            ..RecordColumns::default()
        };
        assert_eq!(
            named(" Job Title ", "Duties").names(),
            ["Job Title", "Duties"]
        );
        assert!(
            named(" ", "Duties")
                .validate()
                .unwrap_err()
                .starts_with("`title_column` is empty")
        );
        assert!(
            named("Title", "Title ")
                .validate()
                .unwrap_err()
                .contains("the same as `title_column`")
        );
    }

    #[test]
    fn normalises_case_punctuation_and_space() {
        assert_eq!(
            normalize("  Sr. Software-Engineer (Java)!! "),
            "sr software engineer java"
        );
        assert_eq!(normalize("Teacher's aide"), "teachers aide");
        assert_eq!(normalize("Crème brûlée CHEF"), "crème brûlée chef");
        assert_eq!(
            record_text("Teacher", "Plan lessons, grade work."),
            "teacher | plan lessons grade work"
        );
        assert_eq!(record_text("Teacher", ""), "teacher");
    }

    #[test]
    fn duties_keep_their_clauses_and_words_skip_the_marks() {
        let t = record_text("Nurse", "Give care; ; monitor patients;;  write notes.;");
        assert_eq!(t, "nurse | give care ; monitor patients ; write notes");
        let (_, d) = t.split_once('|').unwrap();
        assert_eq!(
            clauses(d).collect::<Vec<_>>(),
            ["give care", "monitor patients", "write notes"]
        );
        assert_eq!(
            words(&t).collect::<Vec<_>>(),
            [
                "nurse", "give", "care", "monitor", "patients", "write", "notes"
            ]
        );
        assert_eq!(
            without_clause_marks(d),
            "give care monitor patients write notes"
        );
        // The words are those of the text normalised without clauses.
        let plain = format!(
            "{} | {}",
            normalize("Nurse"),
            normalize("Give care; monitor patients; write notes.")
        );
        assert_eq!(
            words(&t).collect::<Vec<_>>(),
            words(&plain).collect::<Vec<_>>()
        );
        assert_eq!(clauses("one clause").collect::<Vec<_>>(), ["one clause"]);
        assert_eq!(record_text("", ";"), "");
    }
}
