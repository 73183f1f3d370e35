//! Sharded prediction: `isco-dag predict --shard i/n` codes the input's rows whose position
//! (0-based, among the data rows) is `i` modulo `n`; `isco-dag predict merge` joins the n
//! outputs into exactly the file one process writes.
//!
//! The share is stable: it depends only on a row's position, so the same input always
//! splits the same way, whatever the machine, and every row is coded by one shard. A
//! row's prediction does not depend on the other rows coded with it, so the merged
//! output is byte-for-byte the single-process output: a CSV merge copies each shard's
//! record bytes as written, in input order (no reformatting); a Parquet merge gathers the
//! rows in input order and writes them as one process would.
//!
//! Each shard leaves `<output>.shard.json` beside its output (shard index and count, the
//! input's blake3 hash, its rows), so a merge refuses a missing, repeated or foreign shard
//! instead of writing an incomplete file.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use arrow::array::{Array, ArrayRef};
use artifacts::table::{Column, Table, TableFormat};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One of `count` shares of an input (`index` in `0..count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// How many shards share the input.
    pub count: usize,
}

impl Shard {
    /// Whether the data row at `position` (0-based) belongs to this shard.
    pub fn takes(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad =
            || format!("`{s}` is not a shard; write INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a shard's output says of itself (`<output>.shard.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardNote {
    /// Which shard.
    pub shard: Shard,
    /// The input's blake3 hash.
    pub input_hash: String,
    /// Rows this shard coded.
    pub rows: usize,
}

/// The note's path beside a shard's output.
pub fn note_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".shard.json");
    PathBuf::from(s)
}

/// Writes the note beside a shard's output.
pub fn write_note(output: &Path, shard: Shard, input: &Path, rows: usize) -> Result<(), Error> {
    let (hash, _) = artifacts::hash_file(input)?;
    let note = ShardNote {
        shard,
        input_hash: hash.to_string(),
        rows,
    };
    let path = note_path(output);
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&note).expect("note serialises"),
    )
    .map_err(|source| Error::Write { path, source })
}

fn input_err(path: &Path, message: String) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        message,
    }
}

/// Checks the shards' notes: one of each index, one count, one input.
fn check_notes(parts: &[PathBuf]) -> Result<(), Error> {
    let mut seen: BTreeMap<usize, &Path> = BTreeMap::new();
    let mut first: Option<(ShardNote, &Path)> = None;
    for p in parts {
        let np = note_path(p);
        let text = std::fs::read(&np).map_err(|e| {
            input_err(
                p,
                format!(
                    "its shard note `{}` cannot be read ({e}); merge only the outputs of `isco-dag predict --shard`",
                    np.display()
                ),
            )
        })?;
        let note: ShardNote = serde_json::from_slice(&text)
            .map_err(|e| input_err(&np, format!("not a shard note: {e}")))?;
        if let Some((f, fp)) = &first
            && (f.shard.count != note.shard.count || f.input_hash != note.input_hash)
        {
            return Err(input_err(
                p,
                format!(
                    "shard {} was made from another split or input than `{}` (shard {}); merge shards of one `--shard i/n` run over one input",
                    note.shard,
                    fp.display(),
                    f.shard
                ),
            ));
        }
        if let Some(other) = seen.insert(note.shard.index, p) {
            return Err(input_err(
                p,
                format!(
                    "shard {} is given twice (also as `{}`)",
                    note.shard,
                    other.display()
                ),
            ));
        }
        if first.is_none() {
            first = Some((note, p));
        }
    }
    if let Some((f, _)) = first {
        let missing: Vec<String> = (0..f.shard.count)
            .filter(|i| !seen.contains_key(i))
            .map(|i| format!("{i}/{}", f.shard.count))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Usage(format!(
                "shard(s) {} are missing; run `isco-dag predict --shard` for them, then merge all {}",
                missing.join(", "),
                f.shard.count
            )));
        }
    }
    Ok(())
}

/// Whether a header cell names the row-number column `predict` writes first: `row`, or
/// `predicted_row` when the input has a `row` column of its own (kept further on).
fn is_row_column(name: &[u8]) -> bool {
    name == b"row" || name == b"predicted_row"
}

/// One CSV shard: its header line and, per record, its `row` value and raw bytes.
struct CsvPart {
    header: Vec<u8>,
    records: Vec<(i64, std::ops::Range<usize>)>,
    bytes: Vec<u8>,
}

fn read_csv_part(path: &Path) -> Result<CsvPart, Error> {
    let bytes = std::fs::read(path).map_err(|e| input_err(path, format!("cannot be read: {e}")))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes.as_slice());
    let mut rec = csv::ByteRecord::new();
    let mut starts: Vec<(usize, Option<i64>)> = Vec::new();
    let mut line = 0u64;
    loop {
        let pos = rdr.position().byte() as usize;
        line += 1;
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let row = if starts.is_empty() {
                    if !rec.get(0).is_some_and(is_row_column) {
                        return Err(input_err(
                            path,
                            "its first column is not `row`; merge only the outputs of `isco-dag predict --shard`".into(),
                        ));
                    }
                    None
                } else {
                    let cell = rec.get(0).unwrap_or_default();
                    Some(
                        std::str::from_utf8(cell)
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                            .ok_or_else(|| {
                                input_err(
                                    path,
                                    format!(
                                        "line {line}, column row: `{}` is not a row number",
                                        String::from_utf8_lossy(cell)
                                    ),
                                )
                            })?,
                    )
                };
                starts.push((pos, row));
            }
            Err(e) => return Err(input_err(path, format!("line {line}: {e}"))),
        }
    }
    let end = bytes.len();
    let Some(&(_, None)) = starts.first() else {
        return Err(input_err(path, "is empty; it has no header".into()));
    };
    let header_end = starts.get(1).map_or(end, |s| s.0);
    let mut records = Vec::with_capacity(starts.len() - 1);
    for (k, (pos, row)) in starts.iter().enumerate().skip(1) {
        let stop = starts.get(k + 1).map_or(end, |s| s.0);
        records.push((row.expect("data record"), *pos..stop));
    }
    Ok(CsvPart {
        header: bytes[..header_end].to_vec(),
        records,
        bytes,
    })
}

/// Joins shard outputs into `output` (CSV or Parquet, by extension; all parts alike), rows
/// in input order. Returns the number of rows written.
pub fn merge(parts: &[PathBuf], output: &Path) -> Result<usize, Error> {
    if parts.is_empty() {
        return Err(Error::Usage(
            "no shard outputs given; list the files `isco-dag predict --shard` wrote".into(),
        ));
    }
    check_notes(parts)?;
    let is_parquet = |p: &Path| TableFormat::of(p) == Some(TableFormat::Parquet);
    let parquet = is_parquet(output);
    for p in parts {
        if is_parquet(p) != parquet {
            return Err(input_err(
                p,
                format!(
                    "is not a {} file like the output `{}`; merge CSV shards into CSV and Parquet shards into Parquet",
                    if parquet { "Parquet" } else { "CSV" },
                    output.display()
                ),
            ));
        }
    }
    if parquet {
        merge_parquet(parts, output)
    } else {
        merge_csv(parts, output)
    }
}

fn merge_csv(parts: &[PathBuf], output: &Path) -> Result<usize, Error> {
    let read: Vec<CsvPart> = parts
        .iter()
        .map(|p| read_csv_part(p))
        .collect::<Result<_, _>>()?;
    for (p, part) in parts.iter().zip(&read).skip(1) {
        if part.header != read[0].header {
            return Err(input_err(
                p,
                format!(
                    "its columns differ from `{}`'s; merge shards of one run",
                    parts[0].display()
                ),
            ));
        }
    }
    let order = row_order(
        parts,
        read.iter()
            .map(|part| part.records.iter().map(|(row, _)| *row).collect())
            .collect(),
    )?;
    write_atomically(output, |w| {
        w.write_all(&read[0].header)?;
        for &(_, k, j) in &order {
            w.write_all(&read[k].bytes[read[k].records[j].1.clone()])?;
        }
        Ok(())
    })?;
    Ok(order.len())
}

fn merge_parquet(parts: &[PathBuf], output: &Path) -> Result<usize, Error> {
    // Every column is read as the Arrow array it is, so the input's own columns keep their
    // types and nulls through the merge.
    let tables: Vec<Table> = parts
        .iter()
        .map(|p| Table::read_parquet_as_arrow(p).map_err(Error::from))
        .collect::<Result<_, _>>()?;
    let names = |t: &Table| t.columns.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    for (p, t) in parts.iter().zip(&tables).skip(1) {
        if names(t) != names(&tables[0]) {
            return Err(input_err(
                p,
                format!(
                    "its columns differ from `{}`'s; merge shards of one run",
                    parts[0].display()
                ),
            ));
        }
    }
    let arrays: Vec<Vec<ArrayRef>> = tables
        .iter()
        .map(|t| t.columns.iter().map(|(_, c)| c.to_arrow_array()).collect())
        .collect();
    for (p, part) in parts.iter().zip(&arrays) {
        for (c, a) in part.iter().enumerate() {
            if a.data_type() != arrays[0][c].data_type() {
                return Err(input_err(
                    p,
                    format!(
                        "column `{}` is {} here but {} in `{}`; merge shards of one run",
                        tables[0].columns[c].0,
                        a.data_type(),
                        arrays[0][c].data_type(),
                        parts[0].display()
                    ),
                ));
            }
        }
    }
    let rows = parts
        .iter()
        .zip(&tables)
        .map(|(p, t)| {
            let not_rows = || {
                input_err(
                    p,
                    "does not start with an integer `row` column; merge the files `isco-dag predict --shard` wrote"
                        .into(),
                )
            };
            let col = match t.columns.first() {
                Some((name, col)) if is_row_column(name.as_bytes()) => col.to_arrow_array(),
                _ => return Err(not_rows()),
            };
            let ints = arrow::compute::cast(&col, &arrow::datatypes::DataType::Int64)
                .map_err(|_| not_rows())?;
            let ints = ints
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .ok_or_else(not_rows)?;
            Ok(ints.values().to_vec())
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let order = row_order(parts, rows)?;
    let picks: Vec<(usize, usize)> = order.iter().map(|&(_, k, j)| (k, j)).collect();
    let columns = (0..tables[0].columns.len())
        .map(|c| {
            let of_parts: Vec<&dyn Array> = arrays.iter().map(|a| a[c].as_ref()).collect();
            let col = arrow::compute::interleave(&of_parts, &picks)
                .map_err(|e| input_err(&parts[0], format!("cannot be merged: {e}")))?;
            Ok((tables[0].columns[c].0.clone(), Column::Arrow(col)))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Table { columns }.write_as(output, TableFormat::Parquet)?;
    Ok(order.len())
}

/// `(row, part, index in part)` of every row of the parts, in row order; a row in two parts
/// is an error naming both.
fn row_order(parts: &[PathBuf], rows: Vec<Vec<i64>>) -> Result<Vec<(i64, usize, usize)>, Error> {
    let mut order: Vec<(i64, usize, usize)> = Vec::new();
    for (k, rows) in rows.iter().enumerate() {
        order.extend(rows.iter().enumerate().map(|(j, r)| (*r, k, j)));
    }
    order.sort_unstable();
    if let Some(w) = order.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(input_err(
            &parts[w[1].1],
            format!(
                "row {} is also in `{}`; merge shards of one `--shard i/n` run",
                w[0].0,
                parts[w[0].1].display()
            ),
        ));
    }
    Ok(order)
}

/// Writes `path` through `write` into a file beside it that is renamed into place, so an
/// interrupted merge never leaves a file that looks complete; a failed one leaves nothing.
/// The merged rows go out as they are picked, never gathered into a second copy.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".merging");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp).and_then(|f| {
        let mut w = std::io::BufWriter::new(f);
        write(&mut w)?;
        w.into_inner().map(drop).map_err(|e| e.into_error())
    });
    if let Err(source) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_that_fails_while_writing_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("merged.csv");
        let e = write_atomically(&out, |w| {
            w.write_all(b"row,job_title\n0,chef\n")?;
            Err(std::io::Error::other("the disk is full"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("merged.csv"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomically(&out, |w| w.write_all(b"row\n0\n")).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"row\n0\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn shards_are_parsed_and_split_rows_by_position() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 3 });
        let taken: Vec<usize> = (0..9).filter(|&i| s.takes(i)).collect();
        assert_eq!(taken, vec![1, 4, 7]);
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Every row goes to exactly one shard.
        for i in 0..100 {
            assert_eq!(
                (0..7)
                    .filter(|&k| Shard { index: k, count: 7 }.takes(i))
                    .count(),
                1
            );
        }
    }

    fn part(dir: &Path, name: &str, text: &str, shard: Shard, input: &Path) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        write_note(&p, shard, input, text.lines().count() - 1).unwrap();
        p
    }

    #[test]
    fn csv_shards_merge_by_row_keeping_each_records_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, "x").unwrap();
        let a = part(
            dir.path(),
            "a.csv",
            "row,t\n2,\"a,b\"\n4,\"multi\nline\"\n",
            Shard { index: 0, count: 2 },
            &input,
        );
        let b = part(
            dir.path(),
            "b.csv",
            "row,t\n3,c\n5,d\n",
            Shard { index: 1, count: 2 },
            &input,
        );
        let out = dir.path().join("out.csv");
        assert_eq!(merge(&[b.clone(), a.clone()], &out).unwrap(), 4);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "row,t\n2,\"a,b\"\n3,c\n4,\"multi\nline\"\n5,d\n"
        );
        // A missing shard, a repeated one, a foreign one are refused.
        let e = merge(std::slice::from_ref(&a), &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1/2 are missing"), "{e}");
        let e = merge(&[a.clone(), a.clone()], &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice"), "{e}");
        let other = dir.path().join("other.csv");
        std::fs::write(&other, "y").unwrap();
        let c = part(
            dir.path(),
            "c.csv",
            "row,t\n3,c\n",
            Shard { index: 1, count: 2 },
            &other,
        );
        let e = merge(&[a, c], &out).unwrap_err().to_string();
        assert!(e.contains("another split or input"), "{e}");
    }
}
