"""Shared fixtures: the seed's examples (run from python/tests/seed_examples, each changed
only in its import) and a plain-loop reference to check the engine's results against."""

import os
import runpy
import time

import numpy as np
import pandas as pd
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SEED_EXAMPLES = os.path.join(HERE, "seed_examples")


def run_seed(name, init_globals=None, run_name="seed_example"):
    """Runs a seed example file and returns its globals."""
    return runpy.run_path(os.path.join(SEED_EXAMPLES, name), init_globals=init_globals, run_name=run_name)


@pytest.fixture(scope="session")
def seed_basic(tmp_path_factory):
    """The seed's "Basic Streaming Processing" example, run once (in a scratch folder,
    since it writes ``processed_data/``); its globals."""
    folder = tmp_path_factory.mktemp("seed_basic")
    old = os.getcwd()
    os.chdir(folder)
    try:
        g = run_seed("seed_basic.py")
    finally:
        os.chdir(old)
    g["__folder__"] = folder
    return g


def boundaries(chunks):
    """Input row ranges of chunks whose function keeps the row count."""
    out, start = [], 0
    for c in chunks:
        out.append((start, start + len(c)))
        start += len(c)
    return out


def assert_chunks_match_plain_loop(df, chunks, function, ranges=None, drop=()):
    """Every chunk equals ``function`` applied to the same input rows in a plain loop."""
    ranges = ranges or boundaries(chunks)
    assert len(ranges) == len(chunks)
    for (start, end), chunk in zip(ranges, chunks):
        expected = function(df.iloc[start:end])
        got = chunk
        if drop:
            expected = expected.drop(columns=list(drop))
            got = got.drop(columns=list(drop))
        pd.testing.assert_frame_equal(got, expected)


def small_frame(rows=10_000, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "feature_1": rng.standard_normal(rows),
            "feature_2": rng.standard_normal(rows),
            "feature_3": rng.standard_normal(rows),
            "category": rng.choice(["A", "B", "C"], rows),
            "target": rng.integers(0, 2, rows),
        }
    )


def wait_for(condition, what, limit=30.0):
    """Waits until ``condition()`` is true, checking every 10 ms: a wait on something the
    test can observe, with a deadline so a hang fails instead of stalling the suite."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def wait_idle(pipeline):
    """Waits until no run of ``pipeline`` has threads still working."""
    wait_for(lambda: pipeline.get_performance_stats()["active_runs"] == 0, "the run's threads to end")
