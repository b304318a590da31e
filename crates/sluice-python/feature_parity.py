#!/usr/bin/env python3
"""Lists dependencies whose features differ between `cargo test` (the workspace's default
members, with dev-dependencies) and maturin's build of sluice-python.

Any difference makes Cargo compile that dependency, and everything above it (often Arrow
and DataFusion), a second time for `pip install .`. Fix one by naming the missing
features in crates/sluice-python/Cargo.toml (see its "Feature parity" block).

    python crates/sluice-python/feature_parity.py      # exit 1 if they differ
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKSPACE_TESTS = ["-p", "sluice", "-p", "sluice-sql", "-p", "sluice-cli", "-p", "sluice-stream"]


def features(packages, edges):
    out = subprocess.run(
        ["cargo", "tree", *packages, "-f", "{p}|{f}", "--prefix", "none", "-e", edges],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # A package built for the host (build scripts, proc macros) and for the target may
    # have two feature sets: keep every set seen.
    found = {}
    for line in out.splitlines():
        if "|" in line:
            package, feats = line.replace(" (*)", "").split("|", 1)
            found.setdefault(package.strip(), set()).add(frozenset(filter(None, feats.strip().split(","))))
    return found


def main():
    python = features(["-p", "sluice-python"], "normal,build")
    tests = features(WORKSPACE_TESTS, "normal,build,dev")
    differ = [(p, python[p], tests[p]) for p in sorted(python) if p in tests and python[p] != tests[p]]
    for package, ours, theirs in differ:
        mine = sorted(sorted(f) for f in ours - theirs)
        others = sorted(sorted(f) for f in theirs - ours)
        print(f"{package}: sluice-python builds it with {mine}, cargo test with {others}")
    if differ:
        return 1
    print("feature parity: every shared dependency resolves alike")
    return 0


if __name__ == "__main__":
    sys.exit(main())
