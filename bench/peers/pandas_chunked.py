#!/usr/bin/env python3
"""pandas peer: the seed's `data_preprocessing` applied to chunks of 100k rows.

This is what the seed does by hand: statistics (mean, std) are per chunk, exactly like
the seed's function run on each chunk. One process, one core (pandas does not
parallelise). Output is appended chunk by chunk with pyarrow's ParquetWriter, so memory
stays at about one chunk.
"""
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from _arrow_stream import parquet_batches
from _common import CATEGORIES, CHUNK_ROWS, NUMERIC, parse_args

# A fixed category set, so a chunk that lacks a category still gets its cat_* column and
# every chunk has the same schema.
CATEGORY = pd.CategoricalDtype(CATEGORIES)


def data_preprocessing(chunk: pd.DataFrame) -> pd.DataFrame:
    """The seed's function, minus its `time.sleep(0.01)` (which would only measure sleep)."""
    processed = chunk.copy()
    processed["feature_interaction"] = processed["feature_1"] * processed["feature_2"]
    processed["feature_sum"] = processed["feature_1"] + processed["feature_2"] + processed["feature_3"]
    processed = pd.get_dummies(processed, columns=["category"], prefix="cat")
    for col in NUMERIC:
        mean_val = processed[col].mean()
        std_val = processed[col].std()
        if std_val > 0:
            processed[col] = (processed[col] - mean_val) / std_val
    return processed


def chunks(path: str, fmt: str):
    if fmt == "csv":
        dtypes = {"feature_1": "float64", "feature_2": "float64", "feature_3": "float64",
                  "category": CATEGORY, "target": "int64"}
        yield from pd.read_csv(path, chunksize=CHUNK_ROWS, dtype=dtypes)
    else:
        for batch in parquet_batches(path, CHUNK_ROWS):
            yield batch.to_pandas().astype({"category": CATEGORY})


def main() -> None:
    args = parse_args(__doc__)
    writer = None
    try:
        for chunk in chunks(args.input, args.format):
            table = pa.Table.from_pandas(data_preprocessing(chunk), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(args.output, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


if __name__ == "__main__":
    main()
