//! Reading raw input tables (CSV or Parquet) row by row without losing any, and the cleaned
//! record table that flows between stages. A CSV file is read in the encoding `[data]` names
//! ([`TextEncoding`]); in UTF-8, the default, a row with bytes that are not UTF-8 is kept with
//! that problem rather than decoded by a guess.

use std::path::Path;

use artifacts::table::{Column, Table, TextEncoding};

use crate::error::Error;

/// A raw input row: the requested columns' values, or why the row is unusable.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// 0-based position among the data rows of the file.
    pub row: usize,
    /// 1-based line where the row starts in a CSV file; `None` in a Parquet file, whose rows
    /// are not lines.
    pub line: Option<u64>,
    /// Values of the requested columns, in the requested order (`None`: column absent).
    pub values: Vec<Option<String>>,
    /// Set when the row cannot be read.
    pub problem: Option<RowProblem>,
    /// The raw row as text, for the quarantine file; empty when every column of the row is
    /// in `values` ([`read_rows_keeping_all`]).
    pub raw: String,
}

pub use artifacts::table::RowProblem;

impl RawRow {
    /// Where the row is, for a person: `row 3 (line 5)` in a CSV file, `row 3` in Parquet.
    pub fn place(&self) -> String {
        place(self.row as i64, self.line.map(|l| l as i64))
    }
}

/// A quarantine table's `line` column: each row's line in its CSV file, empty (null) for a
/// row read from Parquet.
pub fn line_column(lines: impl Iterator<Item = Option<i64>>) -> Column {
    let (values, present): (Vec<i64>, Vec<bool>) =
        lines.map(|l| (l.unwrap_or(0), l.is_some())).unzip();
    Column::Nullable(Box::new(Column::Int(values)), present)
}

/// `row 3 (line 5)`, or `row 3` when the row has no line (it was read from Parquet).
pub fn place(row: i64, line: Option<i64>) -> String {
    match line {
        Some(line) => format!("row {row} (line {line})"),
        None => format!("row {row}"),
    }
}

/// Whether `path` names a Parquet file (by its extension, `.parquet` or `.pq`).
pub(crate) fn is_parquet(path: &Path) -> bool {
    artifacts::table::TableFormat::of(path) == Some(artifacts::table::TableFormat::Parquet)
}

/// Checks, before anything slow (loading a model) happens, that `path` is a file a table can
/// be read from — it exists and, unless it is Parquet, it is text rather than a spreadsheet
/// workbook or another binary file — and that its header, read in `encoding`, has the
/// `required` ones of the `wanted` columns.
pub fn check_input_file(
    path: &Path,
    wanted: &[&str],
    required: &[bool],
    encoding: TextEncoding,
) -> Result<(), Error> {
    if !path.is_file() {
        return Err(Error::Input {
            path: path.to_path_buf(),
            message: if path.is_dir() {
                "is a folder; give the CSV or Parquet file of records to code".into()
            } else {
                "does not exist; check the path (it is relative to the folder the command runs in)"
                    .into()
            },
        });
    }
    if !is_parquet(path) {
        check_text_file(path, encoding)?;
    }
    let header = header_of(path, wanted, required, encoding)?;
    let (_, idx) = header_positions(path, &header, wanted, required, false)?;
    if is_parquet(path) {
        check_parquet_text_columns(path, &idx)?;
    }
    Ok(())
}

/// For each of a Parquet file's `n` rows, the first of its columns at `idx` that holds bytes
/// (a binary column, as some older writers store text) which are not UTF-8 text. Read as
/// text such a value would be null, and the row would pass for one without a title.
fn parquet_rows_not_utf8(
    path: &Path,
    idx: &[Option<usize>],
    n: usize,
) -> Result<Vec<Option<String>>, Error> {
    let mut bad = vec![None; n];
    let columns = artifacts::table::parquet_columns(path)?;
    let binary: Vec<usize> = idx
        .iter()
        .flatten()
        .copied()
        .filter(|&c| artifacts::table::holds_bytes(&columns[c].1))
        .collect();
    if binary.is_empty() {
        return Ok(bad);
    }
    let raw = Table::read_parquet_as_arrow(path)?;
    for c in binary {
        for r in artifacts::table::rows_not_utf8(&raw.columns[c].1.to_arrow_array()) {
            bad[r].get_or_insert_with(|| columns[c].0.trim().to_string());
        }
    }
    Ok(bad)
}

/// Refuses a Parquet file whose columns at `idx` (the ones read as text) hold several
/// values a row — a list, struct or map — rather than coding the text of such a value.
fn check_parquet_text_columns(path: &Path, idx: &[Option<usize>]) -> Result<(), Error> {
    let columns = artifacts::table::parquet_columns(path)?;
    for &i in idx.iter().flatten() {
        let (name, t) = &columns[i];
        if let Some(why) = artifacts::table::not_text(t) {
            return Err(Error::Input {
                path: path.to_path_buf(),
                message: format!("column `{}` {why}", name.trim()),
            });
        }
    }
    Ok(())
}

/// Refuses a spreadsheet workbook or any other binary file before it is read as CSV, where
/// it would only show as a header of garbled column names, and a UTF-16 file unless
/// `encoding` says it is one.
fn check_text_file(path: &Path, encoding: TextEncoding) -> Result<(), Error> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let err = |message: String| Error::Input {
        path: path.to_path_buf(),
        message,
    };
    if artifacts::table::WORKBOOK_EXTENSIONS.contains(&ext.as_str()) {
        return Err(err(format!(
            "is a spreadsheet workbook (.{ext}), not a CSV file; save its sheet as CSV (UTF-8) or Parquet and give that file"
        )));
    }
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(8192).read_to_end(&mut head))
        .map_err(|e| err(format!("cannot be read: {e}")))?;
    if head.starts_with(b"PAR1") {
        return Err(err(
            "is a Parquet file; name it `.parquet` so it is read as one".into(),
        ));
    }
    // UTF-16 text has a NUL in every other byte, binary files many; a stray NUL in a UTF-8
    // file is left to the row it is in.
    let nuls = head.iter().filter(|&&b| b == 0).count();
    let utf16_bom = head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]);
    let save_as =
        "give a CSV file saved as UTF-8 (a spreadsheet's \"CSV UTF-8\" export) or a Parquet file";
    if !encoding.is_utf16() && utf16_bom {
        return Err(err(format!(
            "is UTF-16 text, not {encoding}: set `encoding = \"utf-16le\"` in [data] (for one call, `-S data.encoding=utf-16le`), or {save_as}"
        )));
    }
    if !encoding.is_utf16() && nuls * 20 > head.len() {
        return Err(err(format!("is not {encoding} text: {save_as}")));
    }
    Ok(())
}

/// Where each `wanted` column is in `header` (and, with `keep_rest`, the other columns' names
/// and places after them), or the error for a header that lacks a required column or
/// names one twice.
fn header_positions(
    path: &Path,
    header: &[String],
    wanted: &[&str],
    required: &[bool],
    keep_rest: bool,
) -> Result<(Vec<String>, Vec<Option<usize>>), Error> {
    let input_err = |message: String| Error::Input {
        path: path.to_path_buf(),
        message,
    };
    let mut idx = Vec::new();
    for (i, w) in wanted.iter().enumerate() {
        let mut same = header
            .iter()
            .enumerate()
            .filter(|(_, h)| h.trim() == *w)
            .map(|(i, _)| i + 1);
        let pos = same.next().map(|c| c - 1);
        if let (Some(first), Some(second)) = (pos, same.next()) {
            return Err(input_err(format!(
                "has two columns named `{w}` (columns {} and {second}); rename or remove one so it is clear which to read",
                first + 1
            )));
        }
        if pos.is_none() && required[i] {
            if header.iter().all(|h| h.trim().is_empty()) {
                return Err(input_err(format!(
                    "has no header row; its first line must name the columns ({})",
                    wanted.join(", ")
                )));
            }
            return Err(Error::MissingColumn {
                path: path.to_path_buf(),
                column: w.to_string(),
                columns: header.iter().map(|h| h.trim().to_string()).collect(),
                like: artifacts::table::column_like(header, w).map(|h| h.trim().to_string()),
                hint: String::new(),
            });
        }
        idx.push(pos);
    }
    let mut rest = Vec::new();
    if keep_rest {
        for (i, h) in header.iter().enumerate() {
            if !idx.contains(&Some(i)) {
                if header[..i].iter().any(|o| o.trim() == h.trim()) {
                    return Err(input_err(format!(
                        "has two columns named `{}`; rename or remove one",
                        h.trim()
                    )));
                }
                rest.push(h.trim().to_string());
                idx.push(Some(i));
            }
        }
    }
    Ok((rest, idx))
}

/// The column names of a CSV (in `encoding`) or Parquet file's header, read without reading
/// its rows.
pub(crate) fn header_of(
    path: &Path,
    wanted: &[&str],
    required: &[bool],
    encoding: TextEncoding,
) -> Result<Vec<String>, Error> {
    if is_parquet(path) {
        return Ok(artifacts::table::parquet_column_names(path)?);
    }
    csv_reader(path, wanted, required, encoding).map(|(_, header)| header)
}

/// A CSV reader of `path` with the separator its header row uses, past that row, and the
/// column names it holds ([`artifacts::table::open_csv_file`]).
fn csv_reader(
    path: &Path,
    wanted: &[&str],
    required: &[bool],
    encoding: TextEncoding,
) -> Result<(artifacts::table::CsvFileReader, Vec<String>), Error> {
    artifacts::table::open_csv_file(path, wanted, required, true, encoding).map_err(|e| {
        Error::Input {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })
}

/// Reads `wanted` columns of a CSV or Parquet file. `required[i]` says whether column i must
/// exist in the header (a missing required column is an error for the whole file; missing
/// optional ones give `None`). A CSV file is read as text in `encoding`. Rows that cannot be
/// decoded (wrong field count, invalid UTF-8) are returned with a `problem`, never dropped.
pub fn read_rows(
    path: &Path,
    wanted: &[&str],
    required: &[bool],
    encoding: TextEncoding,
) -> Result<Vec<RawRow>, Error> {
    read_rows_inner(path, wanted, required, encoding, false, &|_| true).map(|(_, rows)| rows)
}

/// Like [`read_rows`], but every other column of the file is read too: the returned names
/// are those columns in file order, and each row's `values` holds the `wanted` columns
/// followed by them, so a caller can hand every input column back (IDs and all).
///
/// Only the rows whose 0-based data row `keep` takes are returned (a shard's share): the
/// others are still parsed, so an error that spoils the whole file is found by every
/// shard, but they are never held, so a shard's memory follows its share of the file.
pub fn read_rows_keeping_all(
    path: &Path,
    wanted: &[&str],
    required: &[bool],
    encoding: TextEncoding,
    keep: &dyn Fn(usize) -> bool,
) -> Result<(Vec<String>, Vec<RawRow>), Error> {
    read_rows_inner(path, wanted, required, encoding, true, keep)
}

fn read_rows_inner(
    path: &Path,
    wanted: &[&str],
    required: &[bool],
    encoding: TextEncoding,
    keep_rest: bool,
    keep: &dyn Fn(usize) -> bool,
) -> Result<(Vec<String>, Vec<RawRow>), Error> {
    let input_err = |message: String| Error::Input {
        path: path.to_path_buf(),
        message,
    };
    let check_header =
        |header: &[String]| header_positions(path, header, wanted, required, keep_rest);
    if is_parquet(path) {
        let (rest, idx) = check_header(&artifacts::table::parquet_column_names(path)?)?;
        check_parquet_text_columns(path, &idx[..wanted.len()])?;
        let t = Table::read_parquet_rows_as_text(path, keep)?;
        let n = artifacts::table::parquet_num_rows(path)?;
        let not_utf8 = parquet_rows_not_utf8(path, &idx[..wanted.len()], n)?;
        return Ok((
            rest,
            (0..n)
                .filter(|&r| keep(r))
                .enumerate()
                .map(|(held, r)| {
                    let values: Vec<Option<String>> = idx
                        .iter()
                        .map(|ix| ix.map(|c| t.columns[c].1.cell(held)))
                        .collect();
                    RawRow {
                        row: r,
                        line: None,
                        raw: if keep_rest {
                            String::new()
                        } else {
                            values
                                .iter()
                                .map(|v| v.clone().unwrap_or_default())
                                .collect::<Vec<_>>()
                                .join(",")
                        },
                        values,
                        problem: not_utf8[r].clone().map(|column| RowProblem::NotUtf8 {
                            column,
                            in_csv: false,
                        }),
                    }
                })
                .collect(),
        ));
    }
    check_text_file(path, encoding)?;
    let (mut rdr, header) = csv_reader(path, wanted, required, encoding)?;
    let (rest, idx) = check_header(&header)?;
    let mut rows = Vec::new();
    let mut rec = csv::ByteRecord::new();
    let mut row = 0usize;
    let mut quotes = artifacts::table::OpenQuoteCheck::default();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let line = rec.position().map(|p| p.line()).unwrap_or(0);
                // A quote left open swallows the following lines into one field until the
                // next quote. Reading on would lose those rows inside one unusable record.
                let start = (line, rec.position().map_or(0, |p| p.byte()));
                let next_line = rdr.position().line();
                if let Some(why) = quotes.record(row, start, next_line, rec.len(), header.len()) {
                    return Err(input_err(format!("row {row}: {why}")));
                }
                if !keep(row) {
                    row += 1;
                    continue;
                }
                let raw = if keep_rest {
                    String::new()
                } else {
                    rec.iter()
                        .map(|f| String::from_utf8_lossy(f).to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let mut problem = None;
                let ran_to_the_end = rec.len() < header.len()
                    && rec.iter().next_back().is_some_and(|f| f.ends_with(b"\n"));
                if ran_to_the_end {
                    problem = Some(RowProblem::QuoteNotClosed);
                } else if rec.len() != header.len() {
                    problem = Some(RowProblem::FieldCount {
                        found: rec.len(),
                        expected: header.len(),
                    });
                }
                let mut values = Vec::with_capacity(idx.len());
                for (i, ix) in idx.iter().enumerate() {
                    let v = match ix {
                        None => None,
                        Some(c) => match rec.get(*c) {
                            None => None,
                            Some(bytes) => match std::str::from_utf8(bytes) {
                                Ok(s) => Some(s.to_string()),
                                Err(_) => {
                                    if problem.is_none() {
                                        problem = Some(RowProblem::NotUtf8 {
                                            column: wanted.get(i).map_or_else(
                                                || header[*c].clone(),
                                                |w| w.to_string(),
                                            ),
                                            in_csv: true,
                                        });
                                    }
                                    Some(String::from_utf8_lossy(bytes).to_string())
                                }
                            },
                        },
                    };
                    values.push(v);
                }
                rows.push(RawRow {
                    row,
                    line: Some(line),
                    values,
                    problem,
                    raw,
                });
                row += 1;
            }
            Err(e) => {
                // An unrecoverable CSV error (e.g. an unterminated quote at end of file).
                return Err(input_err(format!(
                    "row {row} (after line {}): {e}; fix the CSV quoting",
                    rdr.position().line()
                )));
            }
        }
    }
    let again = || {
        let delimiter = artifacts::table::csv_file_delimiter(path, wanted, required, encoding)?;
        Ok((std::io::BufReader::new(encoding.open(path)?), delimiter))
    };
    match quotes.finish(again) {
        Ok(None) => {}
        Ok(Some((row, why))) => return Err(input_err(format!("row {row}: {why}"))),
        Err(e) => return Err(input_err(format!("cannot be read again: {e}"))),
    }
    Ok((rest, rows))
}

/// Reads a `row,<value>` CSV (e.g. a truth file) into a map from the 0-based data row of the
/// raw input to the value. A row whose `row` cell is not a number is an error naming the
/// file, row and column.
pub fn read_row_map(
    path: &Path,
    value_column: &str,
) -> Result<std::collections::HashMap<i64, String>, Error> {
    let rows = read_rows(
        path,
        &["row", value_column],
        &[true, true],
        TextEncoding::UTF_8,
    )?;
    let mut m = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        if let Some(problem) = &r.problem {
            return Err(Error::Input {
                path: path.to_path_buf(),
                message: format!("{}: {problem}", r.place()),
            });
        }
        let cell = r.values[0].as_deref().unwrap_or("").trim();
        let row = cell.parse::<i64>().map_err(|_| Error::Input {
            path: path.to_path_buf(),
            message: format!(
                "{} column `row`: `{cell}` is not a row number; fix or remove the row",
                r.place()
            ),
        })?;
        m.insert(
            row,
            r.values[1].clone().unwrap_or_default().trim().to_string(),
        );
    }
    Ok(m)
}

/// Cleaned records: the table `clean` writes and `split`, `train`, … read.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// 0-based row of the record in its raw input file.
    pub row: Vec<i64>,
    /// Job title as given.
    pub job_title: Vec<String>,
    /// Duties as given.
    pub duties_description: Vec<String>,
    /// Normalised model text (`title | duties`).
    pub text: Vec<String>,
    /// 4-digit ISCO-08 code.
    pub isco_code: Vec<String>,
}

impl Records {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.row.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.row.is_empty()
    }

    /// Appends record `i` of `other`.
    pub fn push_from(&mut self, other: &Records, i: usize) {
        self.row.push(other.row[i]);
        self.job_title.push(other.job_title[i].clone());
        self.duties_description
            .push(other.duties_description[i].clone());
        self.text.push(other.text[i].clone());
        self.isco_code.push(other.isco_code[i].clone());
    }

    /// Writes the table as Parquet.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        Table::new()
            .with("row", Column::Int(self.row.clone()))
            .with("job_title", Column::Str(self.job_title.clone()))
            .with(
                "duties_description",
                Column::Str(self.duties_description.clone()),
            )
            .with("text", Column::Str(self.text.clone()))
            .with("isco_code", Column::Str(self.isco_code.clone()))
            .write_parquet(path)?;
        Ok(())
    }

    /// Reads a table written by [`Records::write`].
    pub fn read(path: &Path) -> Result<Records, Error> {
        let t = Table::read_parquet(path)?;
        Ok(Records {
            row: t.int_col("row", path)?.to_vec(),
            job_title: t.str_col("job_title", path)?.to_vec(),
            duties_description: t.str_col("duties_description", path)?.to_vec(),
            text: t.str_col("text", path)?.to_vec(),
            isco_code: t.str_col("isco_code", path)?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UTF8: TextEncoding = TextEncoding::UTF_8;

    #[test]
    fn a_shard_holds_only_its_rows_under_their_own_numbers_but_sees_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("r.csv");
        std::fs::write(
            &csv,
            "id,job_title\n1,chef\n2,cook\n3,café\n4,baker\n5,nurse\n",
        )
        .unwrap();
        let pq = dir.path().join("r.parquet");
        let column = |v: [&str; 5]| Column::Str(v.map(String::from).to_vec());
        Table::new()
            .with("id", column(["1", "2", "3", "4", "5"]))
            .with(
                "job_title",
                column(["chef", "cook", "café", "baker", "nurse"]),
            )
            .write_parquet(&pq)
            .unwrap();
        for path in [&csv, &pq] {
            let odd = |row: usize| row % 2 == 1;
            let (rest, rows) =
                read_rows_keeping_all(path, &["job_title"], &[true], UTF8, &odd).unwrap();
            assert_eq!(rest, ["id"]);
            let held: Vec<_> = rows
                .iter()
                .map(|r| {
                    (
                        r.row,
                        r.values[0].clone().unwrap(),
                        r.values[1].clone().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                held,
                [
                    (1, "cook".into(), "2".into()),
                    (3, "baker".into(), "4".into())
                ],
                "{}",
                path.display()
            );
            if path == &csv {
                assert_eq!(rows[1].line, Some(5));
            }
        }
        // A quote that swallows rows spoils the file for every shard, also one that holds
        // none of the rows it swallows.
        std::fs::write(&csv, "id,job_title\n1,chef\n\"2,cook\n3,baker\n4,nurse\n").unwrap();
        for shard in [0, 1] {
            let e =
                read_rows_keeping_all(&csv, &["job_title"], &[true], UTF8, &|row| row % 2 == shard)
                    .unwrap_err()
                    .to_string();
            assert!(e.contains("swallowing"), "{e}");
        }
    }

    #[test]
    fn bad_rows_are_returned_with_their_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let mut bytes =
            b"job_title,duties_description,isco_code\nchef,cooks,5120\nextra,a,b,c\n".to_vec();
        bytes.extend_from_slice(b"caf\xe9,serves,5131\n");
        std::fs::write(&p, bytes).unwrap();
        let rows = read_rows(
            &p,
            &["job_title", "duties_description", "isco_code"],
            &[true, true, true],
            UTF8,
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].problem.is_none());
        assert_eq!(
            rows[1].problem,
            Some(RowProblem::FieldCount {
                found: 4,
                expected: 3
            })
        );
        assert_eq!(
            rows[2].problem.as_ref().unwrap().column(),
            Some("job_title")
        );
        assert_eq!(rows[2].line, Some(4));
        assert_eq!(rows[2].place(), "row 2 (line 4)");
        // A Parquet file's rows are named by their position alone.
        let pq = dir.path().join("r.parquet");
        Table::new()
            .with("job_title", Column::Str(vec!["chef".into(), "cook".into()]))
            .with("isco_code", Column::Str(vec!["5120".into(), "5120".into()]))
            .write_parquet(&pq)
            .unwrap();
        let rows = read_rows(&pq, &["job_title", "isco_code"], &[true, true], UTF8).unwrap();
        assert_eq!(
            rows.iter().map(|r| (r.line, r.place())).collect::<Vec<_>>(),
            [(None, "row 0".to_string()), (None, "row 1".to_string())]
        );
        assert_eq!(
            line_column([Some(3), None].into_iter()),
            Column::Nullable(Box::new(Column::Int(vec![3, 0])), vec![true, false])
        );
        let e = read_rows(&p, &["title"], &[true], UTF8)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("r.csv") && e.contains("no column `title`"),
            "{e}"
        );
    }

    #[test]
    fn the_separator_is_read_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let cols = ["job_title", "duties_description"];
        let read = |bytes: &[u8], required: &[bool]| {
            std::fs::write(&p, bytes).unwrap();
            read_rows(&p, &cols, required, UTF8).map(|rows| {
                rows.into_iter()
                    .map(|r| (r.values, r.problem))
                    .collect::<Vec<_>>()
            })
        };
        let nurse = || {
            vec![(
                vec![Some("nurse".to_string()), Some("cares, feeds".to_string())],
                None,
            )]
        };
        // A spreadsheet's semicolon export (with its byte-order mark and CRLF), a tab export,
        // and a comma file: the same rows.
        for bytes in [
            &b"\xef\xbb\xbfjob_title;duties_description\r\nnurse;cares, feeds\r\n"[..],
            b"job_title\tduties_description\nnurse\tcares, feeds\n",
            b"job_title,duties_description\nnurse,\"cares, feeds\"\n",
        ] {
            assert_eq!(read(bytes, &[true, false]).unwrap(), nurse());
            // With no column required, the separator naming the most columns wins.
            assert_eq!(read(bytes, &[false, false]).unwrap(), nurse());
        }
        // A comma file whose values hold semicolons stays a comma file.
        let rows = read(
            b"job_title,duties_description\nnurse;midwife,a;b\n",
            &[true, true],
        )
        .unwrap();
        assert_eq!(rows[0].0[0].as_deref(), Some("nurse;midwife"));
        // Columns named otherwise are listed as the file separates them.
        let e = read(b"title;duties\nnurse;cares\n", &[true, false])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has no column `job_title` (columns: title, duties)")
                && !e.contains("looks like it"),
            "{e}"
        );
        // A spreadsheet's heading of the same name is pointed out.
        let e = read(b"Job Title;Duties\nnurse;cares\n", &[true, false])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("name one column `job_title` in the header row (`Job Title` looks like it)"),
            "{e}"
        );
        let e = read(b"", &[true, false]).unwrap_err().to_string();
        assert!(
            e.contains("r.csv: has no header row") && e.contains("(job_title, duties_description)"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_columns_and_swallowing_quotes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "job_title,isco_code,isco_code\nchef,5120,9999\n").unwrap();
        let e = read_rows(&p, &["job_title", "isco_code"], &[true, true], UTF8)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("r.csv") && e.contains("two columns named `isco_code` (columns 2 and 3)"),
            "{e}"
        );
        // Row 1 opens a quote that is never closed: rows 2-4 would vanish into it. So in a
        // file whose lines end in CRLF or in CR alone.
        let mut text = String::from("job_title,isco_code\nchef,5120\n");
        text.push_str("\"cook,5120\n");
        for i in 0..3 {
            text.push_str(&format!("waiter {i},5131\n"));
        }
        // The error reading `text` with its line ends written as `end`.
        let error_of = |text: &str, end: &str| {
            std::fs::write(&p, text.replace('\n', end)).unwrap();
            read_rows(&p, &["job_title", "isco_code"], &[true, true], UTF8)
                .unwrap_err()
                .to_string()
        };
        for end in ["\n", "\r\n", "\r"] {
            let e = error_of(&text, end);
            assert!(
                e.contains("opened on line 3 runs on to line 6"),
                "{end:?}: {e}"
            );
        }
        // A quote opened in a row's last field and never closed leaves that row its two
        // fields while it takes in every line after it, with or without a last line end;
        // a quote closed lines later is a cell over several lines, and no error.
        for end in ["\n", "\r\n", "\r"] {
            for last in ["waiter 2,5131\n", "waiter 2,5131"] {
                let text =
                    format!("job_title,isco_code\nchef,5120\ncook,\"5120\nwaiter 1,5131\n{last}");
                let e = error_of(&text, end);
                assert!(
                    e.contains("row 1: a quoted field opened on line 3 is never closed, so it runs on to the end of the file"),
                    "{end:?} {last:?}: {e}"
                );
            }
            let text = "job_title,isco_code\nchef,5120\ncook,\"51\n20\"\"\"\nwaiter,\"5131\n\"\n";
            std::fs::write(&p, text.replace('\n', end)).unwrap();
            let rows = read_rows(&p, &["job_title", "isco_code"], &[true, true], UTF8).unwrap();
            assert_eq!(rows.len(), 3, "{end:?}");
            assert_eq!(rows[1].values[1].as_deref(), Some("51\n20\""), "{end:?}");
            assert!(rows.iter().all(|r| r.problem.is_none()), "{end:?}");
        }
        // A quote opened in the last row swallows no row: that row alone is unusable, and
        // says why.
        for end in ["\n", "\r\n", "\r"] {
            let text = "job_title,isco_code\nchef,5120\n\"cook,5120\n".replace('\n', end);
            std::fs::write(&p, text).unwrap();
            let rows = read_rows(&p, &["job_title", "isco_code"], &[true, true], UTF8).unwrap();
            assert_eq!(rows.len(), 2, "{end:?}");
            assert_eq!(rows[0].problem, None, "{end:?}");
            assert_eq!(rows[1].problem, Some(RowProblem::QuoteNotClosed), "{end:?}");
        }
        assert!(
            RowProblem::QuoteNotClosed
                .to_string()
                .contains("never closed")
        );
        // A legitimate multi-line field is kept.
        std::fs::write(&p, "job_title,isco_code\n\"chef\nhead\",5120\ncook,5120\n").unwrap();
        let rows = read_rows(&p, &["job_title", "isco_code"], &[true, true], UTF8).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.problem.is_none()));
    }

    #[test]
    fn row_map_names_the_bad_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("truth.csv");
        std::fs::write(&p, "row,label_is_noise\n0,1\n1,0\n").unwrap();
        let m = read_row_map(&p, "label_is_noise").unwrap();
        assert_eq!(m[&0], "1");
        std::fs::write(&p, "row,label_is_noise\n0,1\nx,0\n").unwrap();
        let e = read_row_map(&p, "label_is_noise").unwrap_err().to_string();
        assert!(
            e.contains("truth.csv") && e.contains("row 1 (line 3) column `row`"),
            "{e}"
        );
    }
}
