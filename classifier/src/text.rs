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

/// The model text of a record: `title | duties` (normalised), or just the title when the
/// duties are empty.
pub fn record_text(title: &str, duties: &str) -> String {
    let t = normalize(title);
    let d = normalize(duties);
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
}
