//! Text normalisation shared by cleaning, training and prediction (the `clean` stage and
//! the predictor must agree exactly).

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
