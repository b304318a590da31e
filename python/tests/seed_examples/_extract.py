"""Extracts the seed document's examples into this folder, changed only as listed in
CHANGES (the import, and the 30-second run of the real-time example). The test suite
checks that the files here still match the seed (when the seed document is found), so
"the seed's examples, only the import changed" stays true.

    python python/tests/seed_examples/_extract.py [path/to/streaming_pipeline.md]
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# (file name, index of the ```python block in the seed document)
EXAMPLES = [
    ("seed_basic.py", 3),
    ("seed_memory.py", 4),
    ("seed_dask.py", 5),
    ("seed_realtime.py", 6),
    ("seed_backpressure.py", 7),
    ("seed_best_practice_1_memory.py", 8),
    ("seed_best_practice_2_chunk_size.py", 9),
    ("seed_best_practice_3_errors.py", 10),
    ("seed_best_practice_4_cleanup.py", 11),
]

# The only changes made to the seed's code.
CHANGES = [
    ("from modules.engine.streaming_pipeline import", "from sluice import"),
    ("        time.sleep(30)\n", "        time.sleep(3)  # sluice tests: the seed runs for 30 s\n"),
]

HEADER = "# From the seed document (streaming_pipeline.md), block {index}; changed only by\n# python/tests/seed_examples/_extract.py CHANGES (the import, shorter sleeps).\n"


def seed_document(argv=None):
    """The seed document: the argument, $SLUICE_SEED_DOC, shared/seed/ next to or above
    the repository, or the copy the repository carries (docs/seed/)."""
    candidates = list(argv or []) + [os.environ.get("SLUICE_SEED_DOC", "")]
    repo = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
    for up in (repo, os.path.dirname(repo)):
        candidates.append(os.path.join(up, "shared", "seed", "streaming_pipeline.md"))
    candidates.append(os.path.join(repo, "docs", "seed", "streaming_pipeline.md"))
    for path in candidates:
        if path and os.path.exists(path):
            return path
    return None


def blocks(doc_path):
    with open(doc_path, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def transformed(block, index):
    for old, new in CHANGES:
        block = block.replace(old, new)
    return HEADER.format(index=index) + block


def main(argv):
    doc = seed_document(argv)
    if doc is None:
        sys.exit("seed document not found; pass its path")
    found = blocks(doc)
    for name, index in EXAMPLES:
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            f.write(transformed(found[index], index))
        print("wrote", name)


if __name__ == "__main__":
    main(sys.argv[1:])
