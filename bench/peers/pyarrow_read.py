#!/usr/bin/env python3
"""Ceiling: how fast pyarrow can merely read the input (stream every batch, no transform,
nothing written). Prints `rows=N` so the harness can check it read everything."""
from _arrow_stream import batches
from _common import parse_args


def main() -> None:
    args = parse_args(__doc__, need_output=False)  # --output is accepted and ignored
    rows = sum(b.num_rows for b in batches(args.input, args.format))
    print(f"rows={rows}")


if __name__ == "__main__":
    main()
