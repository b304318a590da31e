#!/usr/bin/env python3
"""DuckDB peer: the seed's preprocessing as one `COPY (SELECT ...) TO 'out.parquet'`.

--variant window (the default, and the plain way to write it): AVG / STDDEV_SAMP
  OVER () - global statistics over the whole file, which DuckDB computes by buffering
  every row in the window operator (it may spill to disk).
--variant join: the statistics come from one aggregate that is cross-joined back to the
  rows, so DuckDB reads the file twice instead of buffering it. Same result.
Either way statistics are global, not per chunk as in the seed. Uses all cores.
"""
import argparse
import sys

import duckdb

from _common import CATEGORIES, INPUT_TYPES, NUMERIC, input_format

SQL_TYPES = {"float64": "DOUBLE", "int64": "BIGINT", "string": "VARCHAR"}


def lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def source(path: str) -> str:
    if input_format(path) == "csv":
        cols = ", ".join(f"{lit(n)}: {lit(SQL_TYPES[t])}" for n, t in INPUT_TYPES.items())
        return f"read_csv({lit(path)}, header = true, columns = {{{cols}}})"
    return f"read_parquet({lit(path)})"


def query(path: str, variant: str) -> str:
    derived = (
        "WITH src AS NOT MATERIALIZED (SELECT *, feature_1 * feature_2 AS feature_interaction, "
        f"feature_1 + feature_2 + feature_3 AS feature_sum FROM {source(path)})"
    )
    cats = [f"category = {lit(c)} AS cat_{c}" for c in CATEGORIES]
    if variant == "window":
        # Same rule as the seed: leave a column alone when its std is 0.
        z = [
            f"CASE WHEN STDDEV_SAMP({c}) OVER () > 0 "
            f"THEN ({c} - AVG({c}) OVER ()) / STDDEV_SAMP({c}) OVER () ELSE {c} END AS {c}"
            for c in NUMERIC
        ]
        frm = "src"
    else:
        stats = ", ".join(f"AVG({c}) AS m_{c}, STDDEV_SAMP({c}) AS s_{c}" for c in NUMERIC)
        derived += f", stats AS (SELECT {stats} FROM src)"
        z = [f"CASE WHEN s_{c} > 0 THEN ({c} - m_{c}) / s_{c} ELSE {c} END AS {c}" for c in NUMERIC]
        frm = "src CROSS JOIN stats"
    # Column order as pandas' get_dummies leaves it, so every peer writes the same schema.
    select = z[:3] + ["target"] + z[3:] + cats
    return f"{derived} SELECT {', '.join(select)} FROM {frm}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--variant", choices=["window", "join"], default="window")
    ap.add_argument("--print-sql", action="store_true", help="print the statement and exit")
    a = ap.parse_args()
    sql = f"COPY ({query(a.input, a.variant)}) TO {lit(a.output)} (FORMAT parquet, COMPRESSION snappy)"
    if a.print_sql:
        print(sql)
        return
    con = duckdb.connect()
    # Spill (if any) beside the output, not into the working directory.
    con.execute(f"SET temp_directory = {lit(a.output + '.tmp')}")
    con.execute(sql)


if __name__ == "__main__":
    sys.exit(main())
