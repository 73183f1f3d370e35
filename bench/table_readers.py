"""Reads every table a pipeline run wrote with pandas, polars and duckdb and checks that no
code lost its leading zero: the Parquet twins at default options, the CSV files with the
one-line reads README.md gives. Needs `pip install pandas pyarrow polars duckdb`.

    python3 bench/table_readers.py DIR [DIR ...]   # e.g. data/processed data/review models
"""

import csv
import pathlib
import sys

import duckdb
import pandas as pd
import polars as pl


def code_columns(names):
    return [n for n in names if n.endswith("code") or n == "group"]


def truth(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: [r[c] for r in rows] for c in code_columns(rows[0].keys() if rows else [])}


def as_text(values):
    return ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]


def main():
    tables = sorted(p for d in sys.argv[1:] for p in pathlib.Path(d).rglob("*.csv"))
    readers = {
        "pandas parquet (defaults)": lambda p: pd.read_parquet(p.with_suffix(".parquet")),
        "polars parquet (defaults)": lambda p: pl.read_parquet(p.with_suffix(".parquet")).to_pandas(),
        "duckdb parquet (defaults)": lambda p: duckdb.read_parquet(str(p.with_suffix(".parquet"))).df(),
        "pandas csv, dtype=str": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
        "polars csv, infer_schema=False": lambda p: pl.read_csv(p, infer_schema=False).to_pandas(),
        "duckdb csv, all_varchar=true": lambda p: duckdb.read_csv(str(p), all_varchar=True).df(),
        "pandas csv (defaults: codes become numbers)": lambda p: pd.read_csv(p),
    }
    codes = 0
    for name, read in readers.items():
        bad = 0
        for p in tables:
            want = truth(p)
            if not want:
                continue
            got = read(p)
            for c, values in want.items():
                bad += sum(a != b for a, b in zip(as_text(got[c]), values))
                codes += len(values) if name.startswith("pandas parquet") else 0
        print(f"{name:48} {len(tables)} tables: {bad} codes changed")
    print(f"codes checked per reader: {codes}")


if __name__ == "__main__":
    main()
