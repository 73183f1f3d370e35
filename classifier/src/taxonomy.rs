//! The ISCO-08 hierarchy: 10 major groups (1 digit), 43 sub-major (2), 130 minor (3) and 436
//! unit groups (4). Codes are strings because of the armed forces' leading zero (`0110`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Error;

/// An ISCO-08 code as text: 4 digits for a unit group, fewer for the major, sub-major and
/// minor groups above it (leading zeros kept: `0110`). Shown, compared and serialised as the
/// text; borrowed as `&str`.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct IscoCode(String);

impl IscoCode {
    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its level: the number of digits (1 to 4).
    pub fn level(&self) -> usize {
        self.0.len()
    }
}

impl std::ops::Deref for IscoCode {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for IscoCode {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IscoCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

impl From<String> for IscoCode {
    fn from(s: String) -> Self {
        IscoCode(s)
    }
}

impl From<&str> for IscoCode {
    fn from(s: &str) -> Self {
        IscoCode(s.to_string())
    }
}

impl From<IscoCode> for String {
    fn from(c: IscoCode) -> String {
        c.0
    }
}

impl PartialEq<str> for IscoCode {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for IscoCode {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for IscoCode {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// One group of the classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Code, 1 to 4 digits.
    pub code: String,
    /// Title (empty when unknown).
    pub title: String,
    /// Definition text (may be empty).
    pub definition: String,
}

/// Normalises a code cell as spreadsheets and integer columns mangle it: trims, drops a
/// trailing `.0`, and restores a lost leading zero when `is_unit` accepts the padded code.
/// Returns the code and whether it was padded.
pub fn normalize_code(raw: &str, is_unit: impl Fn(&str) -> bool) -> (String, bool) {
    let c = raw.trim();
    let c = c.strip_suffix(".0").unwrap_or(c);
    if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_digit()) {
        let padded = format!("0{c}");
        if is_unit(&padded) {
            return (padded, true);
        }
    }
    (c.to_string(), false)
}

/// The ISCO-08 groups known from a reference file (or none, for codes-only use).
#[derive(Debug, Clone, Default)]
pub struct Taxonomy {
    groups: BTreeMap<String, Group>,
}

/// Column names accepted for each field, across the supported layouts: isco-dag's own
/// (`code,level,title,definition`), the ILO structure CSV (`ISCO 08 Code`, `Title EN`,
/// `Definition`) and ESCO's `ISCOGroups_en.csv` (`code`, `preferredLabel`, `description`).
const CODE_COLS: &[&str] = &["code", "isco_code", "isco 08 code", "isco08 code", "unit"];
const TITLE_COLS: &[&str] = &["title", "preferredlabel", "title en", "label"];
const DEF_COLS: &[&str] = &["definition", "description", "definition en"];

impl Taxonomy {
    /// A taxonomy with no reference: every structurally valid code is accepted, no titles.
    pub fn codes_only() -> Self {
        Self::default()
    }

    /// Whether a reference was loaded.
    pub fn has_reference(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Reads a reference CSV in any supported layout.
    pub fn load(path: &Path) -> Result<Taxonomy, Error> {
        let file_err = |message: String| Error::File {
            path: path.to_path_buf(),
            message,
        };
        let known: Vec<&str> = [CODE_COLS, TITLE_COLS, DEF_COLS].concat();
        let (mut rdr, headers) = open_csv(path, &known, true)?;
        let find = |names: &[&str]| find_column(&headers, names);
        let Some(ci) = find(CODE_COLS) else {
            return Err(file_err(format!(
                "has no ISCO code column (looked for {}; found {}); is it an ISCO-08 reference file?",
                CODE_COLS.join(", "),
                headers.join(", ")
            )));
        };
        let ti = find(TITLE_COLS);
        let di = find(DEF_COLS);
        let mut groups = BTreeMap::new();
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| file_err(format!("row {}: {e}", i + 1)))?;
            let code = rec.get(ci).unwrap_or("").trim().to_string();
            if code.is_empty() || code.len() > 4 || !code.chars().all(|c| c.is_ascii_digit()) {
                return Err(file_err(format!(
                    "row {} column {}: `{code}` is not an ISCO-08 group code (1 to 4 digits); fix or remove the row",
                    i + 1,
                    headers.get(ci).map_or("code", String::as_str)
                )));
            }
            let get =
                |ix: Option<usize>| ix.and_then(|x| rec.get(x)).unwrap_or("").trim().to_string();
            groups.insert(
                code.clone(),
                Group {
                    code,
                    title: get(ti),
                    definition: get(di),
                },
            );
        }
        if !groups.keys().any(|c| c.len() == 4) {
            return Err(file_err(
                "lists no 4-digit unit groups; an ISCO-08 reference needs them".into(),
            ));
        }
        Ok(Taxonomy { groups })
    }

    /// Builds a taxonomy from groups directly (tests, demo data).
    pub fn from_groups(groups: impl IntoIterator<Item = Group>) -> Self {
        Taxonomy {
            groups: groups.into_iter().map(|g| (g.code.clone(), g)).collect(),
        }
    }

    /// [`normalize_code`] against the reference: a lost leading zero is restored when the
    /// padded code is one of its unit groups.
    pub fn normalize_code(&self, raw: &str) -> (String, bool) {
        normalize_code(raw, |padded| {
            self.has_reference() && self.check_unit(padded).is_ok()
        })
    }

    /// Checks a unit-group code. With a reference: it must be listed. Without: 4 digits
    /// whose first digit is a major group (0–9 all exist, so any 4 digits pass).
    pub fn check_unit(&self, code: &str) -> Result<(), String> {
        if code.len() != 4 || !code.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("`{code}` is not a 4-digit ISCO-08 unit group code"));
        }
        if self.has_reference() && !self.groups.contains_key(code) {
            return Err(format!(
                "`{code}` is not an ISCO-08 unit group in the reference file"
            ));
        }
        Ok(())
    }

    /// A group by code.
    pub fn group(&self, code: &str) -> Option<&Group> {
        self.groups.get(code)
    }

    /// Title of a code (empty if unknown).
    pub fn title(&self, code: &str) -> &str {
        self.groups
            .get(code)
            .map(|g| g.title.as_str())
            .unwrap_or("")
    }

    /// All unit groups (4-digit codes).
    pub fn units(&self) -> impl Iterator<Item = &Group> {
        self.groups.values().filter(|g| g.code.len() == 4)
    }

    /// All groups.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Parent code at `digits` (1–3) of a unit code.
    pub fn parent(code: &str, digits: usize) -> &str {
        &code[..digits.min(code.len())]
    }
}

/// Opens a CSV file whose header row names some of `known` columns
/// ([`artifacts::table::open_csv_file`]); `flexible` lets rows have more or fewer fields than
/// the header.
pub(crate) fn open_csv(
    path: &Path,
    known: &[&str],
    flexible: bool,
) -> Result<(artifacts::table::CsvFileReader, Vec<String>), Error> {
    artifacts::table::open_csv_file(
        path,
        known,
        &vec![false; known.len()],
        flexible,
        artifacts::table::TextEncoding::UTF_8,
    )
    .map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The position of the first header among `names` (lower case), ignoring case and
/// surrounding space.
pub(crate) fn find_column(headers: &[String], names: &[&str]) -> Option<usize> {
    headers
        .iter()
        .position(|h| names.contains(&h.trim().to_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_separated_by_semicolons_is_read() {
        let dir = std::env::temp_dir().join(format!("isco-taxonomy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("isco08;.csv");
        std::fs::write(
            &p,
            "\u{feff}code;title;definition\r\n2;Professionals;Many, varied\r\n5120;Cooks;Plan, prepare\r\n",
        )
        .unwrap();
        let t = Taxonomy::load(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(t.groups["5120"].title, "Cooks");
        assert_eq!(t.groups["5120"].definition, "Plan, prepare");
        assert_eq!(t.groups["2"].title, "Professionals");
    }

    #[test]
    fn reads_ilo_and_esco_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let ilo = dir.path().join("ilo.csv");
        std::fs::write(
            &ilo,
            "Level,ISCO 08 Code,Title EN,Definition\n1,2,Professionals,x\n4,2512,Software developers,\"Software, developers\"\n",
        )
        .unwrap();
        let t = Taxonomy::load(&ilo).unwrap();
        assert_eq!(t.title("2512"), "Software developers");
        assert!(t.check_unit("2512").is_ok());
        assert!(
            t.check_unit("2511")
                .unwrap_err()
                .contains("not an ISCO-08 unit group")
        );
        let esco = dir.path().join("esco.csv");
        std::fs::write(
            &esco,
            "conceptType,conceptUri,code,preferredLabel,altLabels,inScheme,description\nISCOGroup,u,0110,Commissioned armed forces officers,,s,d\n",
        )
        .unwrap();
        let t = Taxonomy::load(&esco).unwrap();
        assert_eq!(t.title("0110"), "Commissioned armed forces officers");
    }

    #[test]
    fn bad_reference_names_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "code,title\n2512,ok\n25x2,bad\n").unwrap();
        let e = Taxonomy::load(&p).unwrap_err().to_string();
        assert!(e.contains("row 2 column code"), "{e}");
        assert!(e.contains("r.csv"), "{e}");
    }

    #[test]
    fn codes_only_accepts_any_four_digits() {
        let t = Taxonomy::codes_only();
        assert!(t.check_unit("0110").is_ok());
        assert!(t.check_unit("110").is_err());
        assert!(t.check_unit("abcd").is_err());
    }
}
