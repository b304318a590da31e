"""What every peer script shares: the command line and the seed's column names.

Stdlib only, so importing it costs a peer nothing (its RSS and start-up time are part of
what is measured).
"""
import argparse

NUMERIC = ["feature_1", "feature_2", "feature_3", "feature_interaction", "feature_sum"]
CATEGORIES = ["A", "B", "C"]
# Input column types, given explicitly so no peer spends time (or guesses) on inference.
INPUT_TYPES = {
    "feature_1": "float64",
    "feature_2": "float64",
    "feature_3": "float64",
    "category": "string",
    "target": "int64",
}
CHUNK_ROWS = 100_000


def parse_args(description: str, need_output: bool = True) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--input", required=True, help="input .csv or .parquet")
    ap.add_argument("--output", required=need_output, help="output .parquet")
    a = ap.parse_args()
    a.format = input_format(a.input)
    return a


def input_format(path: str) -> str:
    if path.endswith(".csv"):
        return "csv"
    if path.endswith(".parquet"):
        return "parquet"
    raise SystemExit(f"{path}: expected a .csv or .parquet file")
