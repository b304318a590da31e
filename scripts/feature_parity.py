#!/usr/bin/env python3
"""Lists dependencies whose features differ between `cargo test` (the workspace's default
members, with dev-dependencies) and the two builds of one crate alone that come before or
after it: the README's first command (`cargo run -p sluice-cli -- demo`) and maturin's
build of sluice-python (`pip install .`).

Any difference makes Cargo compile that dependency, and everything above it (often Arrow
and DataFusion), a second time. Fix one by naming the missing features in that crate's
Cargo.toml (see their "Feature parity" blocks).

    python scripts/feature_parity.py      # exit 1 if they differ
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKSPACE_TESTS = ["-p", "sluice", "-p", "sluice-sql", "-p", "sluice-job", "-p", "sluice-cli", "-p", "sluice-stream"]
# Features that differ on purpose: the crash points are in the binary the tests run and in
# no other build (sluice-cli's dev-dependency); what they cost is rebuilding the workspace
# crates above `sluice`, never Arrow or DataFusion.
TEST_ONLY = {"sluice": {"failpoints"}}


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
    tests = features(WORKSPACE_TESTS, "normal,build,dev")
    differ = False
    for crate in ("sluice-cli", "sluice-python"):
        alone = features(["-p", crate], "normal,build")
        def strip(package, sets):
            only = TEST_ONLY.get(package.split(" ")[0], set())
            return {frozenset(f - only) for f in sets}

        for package in sorted(p for p in alone if p in tests and strip(p, alone[p]) != strip(p, tests[p])):
            mine = sorted(sorted(f) for f in alone[package] - tests[package])
            others = sorted(sorted(f) for f in tests[package] - alone[package])
            print(f"{package}: `-p {crate}` builds it with {mine}, cargo test with {others}")
            differ = True
    if differ:
        return 1
    print("feature parity: every shared dependency resolves alike")
    return 0


if __name__ == "__main__":
    sys.exit(main())
