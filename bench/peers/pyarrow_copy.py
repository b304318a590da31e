#!/usr/bin/env python3
"""Ceiling: read the input and write it back as Parquet, no transform.

Any engine doing the seed's preprocessing also has to read and write; this row is the
cost of that alone (pyarrow, parallel parse/decode, one writer)."""
import pyarrow.parquet as pq

from _arrow_stream import SCHEMA, batches
from _common import parse_args


def main() -> None:
    args = parse_args(__doc__)
    with pq.ParquetWriter(args.output, SCHEMA) as writer:
        for batch in batches(args.input, args.format):
            writer.write_batch(batch)


if __name__ == "__main__":
    main()
