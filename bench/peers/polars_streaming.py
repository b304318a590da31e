#!/usr/bin/env python3
"""Polars peer: the seed's preprocessing as one lazy query on Polars' streaming engine.

scan_csv / scan_parquet -> with_columns -> sink_parquet(engine="streaming").
Unlike the seed (and pandas, and sluice), the z-score here uses *global* mean and std
over the whole file: that is what the expression means in Polars, and it costs the
engine a pass over all rows before it can emit the first normalized one. Uses all cores.
"""
import polars as pl

from _common import CATEGORIES, INPUT_TYPES, NUMERIC, parse_args

SCHEMA = {name: {"float64": pl.Float64, "int64": pl.Int64, "string": pl.String}[t]
          for name, t in INPUT_TYPES.items()}


def zscore(name: str) -> pl.Expr:
    c = pl.col(name)
    # Same rule as the seed: leave a column alone when its std is 0.
    return pl.when(c.std() > 0).then((c - c.mean()) / c.std()).otherwise(c).alias(name)


def main() -> None:
    args = parse_args(__doc__)
    if args.format == "csv":
        lf = pl.scan_csv(args.input, schema=SCHEMA)
    else:
        lf = pl.scan_parquet(args.input)
    lf = (
        lf.with_columns(
            feature_interaction=pl.col("feature_1") * pl.col("feature_2"),
            feature_sum=pl.col("feature_1") + pl.col("feature_2") + pl.col("feature_3"),
        )
        .with_columns([(pl.col("category") == c).alias(f"cat_{c}") for c in CATEGORIES])
        .drop("category")
        .with_columns([zscore(n) for n in NUMERIC])
    )
    # Snappy, as pyarrow and DuckDB write by default (Polars' own default is zstd).
    lf.sink_parquet(args.output, compression="snappy", engine="streaming")


if __name__ == "__main__":
    main()
