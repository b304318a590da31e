"""Timings of the Python API that the tests check only as behaviour (tests assert that calls
overlap, that a stop or Ctrl-C ends the run after the chunks it held, that GIL-bound calls
run on the caller's thread; how fast, and how many, depends on the machine's load).

    python bench/python_timing.py [--rounds 5]

Prints one Markdown table: the median and range over the rounds of
- waiting calls side by side: 8 chunks whose function sleeps 0.2 s, 4 workers (about
  0.6 s expected: the first call runs alone; 1.6 s if they ran one at a time);
- stop latency: from stop_processing() (another thread) to the end of the iterator, with
  a function that sleeps 50 ms a chunk on 2 workers;
- Ctrl-C latency: from the interrupt to KeyboardInterrupt in the loop, same function;
- caller's share: of 100 GIL-bound calls (5 ms of pure Python each) on 1 worker, how many
  ran on the caller's thread (a worker takes a call back only when the caller was away for
  a millisecond or more).
"""

import _thread
import argparse
import statistics
import threading
import time

import numpy as np
import pandas as pd

from sluice import StreamingDataPipeline


def sleepy(seconds):
    def f(chunk):
        time.sleep(seconds)
        return chunk

    return f


def busy(chunk):
    deadline = time.perf_counter() + 0.005
    while time.perf_counter() < deadline:
        pass
    return chunk


def waiting_side_by_side():
    df = pd.DataFrame({"x": np.arange(8_000)})
    p = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, num_workers=4)
    start = time.perf_counter()
    assert sum(map(len, p.process_dataframe_stream(df, sleepy(0.2)))) == 8_000
    return time.perf_counter() - start


def stop_latency():
    df = pd.DataFrame({"x": np.arange(100_000)})
    p = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, num_workers=2)
    stopped_at = []
    for i, _ in enumerate(p.process_dataframe_stream(df, sleepy(0.05))):
        if i == 5:
            t = threading.Thread(target=lambda: (stopped_at.append(time.perf_counter()), p.stop_processing()))
            t.start()
            t.join()
    return time.perf_counter() - stopped_at[0]


def ctrl_c_latency():
    df = pd.DataFrame({"x": np.arange(200_000)})
    p = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, num_workers=2)
    fired = []

    def fire():
        fired.append(time.perf_counter())
        _thread.interrupt_main()

    threading.Timer(0.3, fire).start()
    try:
        for _ in p.process_dataframe_stream(df, sleepy(0.05)):
            pass
    except KeyboardInterrupt:
        return time.perf_counter() - fired[0]
    raise RuntimeError("the run ended before Ctrl-C")


def caller_share():
    caller = threading.get_ident()
    threads = []

    def record(chunk):
        threads.append(threading.get_ident())
        return busy(chunk)

    df = pd.DataFrame({"x": np.arange(100_000)})
    p = StreamingDataPipeline(chunk_size=1_000, adaptive_batching=False, num_workers=1)
    for _ in p.process_dataframe_stream(df, record):
        pass
    return threads.count(caller) / len(threads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cases = [
        ("8 waiting calls of 0.2 s, 4 workers (s)", waiting_side_by_side, "{:.2f}"),
        ("stop_processing() to the iterator's end (ms)", lambda: stop_latency() * 1000, "{:.0f}"),
        ("Ctrl-C to KeyboardInterrupt (ms)", lambda: ctrl_c_latency() * 1000, "{:.0f}"),
        ("GIL-bound calls on the caller's thread (%)", lambda: caller_share() * 100, "{:.0f}"),
    ]
    print(f"| measure ({args.rounds} rounds) | median | min | max |")
    print("|---|---|---|---|")
    for name, run, fmt in cases:
        values = [run() for _ in range(args.rounds)]
        med, lo, hi = (fmt.format(v) for v in (statistics.median(values), min(values), max(values)))
        print(f"| {name} | {med} | {lo} | {hi} |")


if __name__ == "__main__":
    main()
