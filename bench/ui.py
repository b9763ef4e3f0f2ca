"""What the status page costs the worker (docs/PERFORMANCE.md, "The status page").

`python -m bench.ui` starts this worker on the bundled model (8 slots, every core) and keeps
8 streams running (128 tokens each, end of text ignored, one after another per stream). Then:

- **latency**: `GET /ui` (the page) and `GET /v1/status?since=N` (its once-a-second poll,
  asking for the samples after the last it has, as the page does), one request at a time,
  100 ms apart, while the streams run: p50, p95 and the slowest;
- **cost**: the streams' tokens/s in windows of `--window-s` seconds under three conditions
  taken in turn: the page `closed` (the browser on about:blank), `polled` (a client asking
  what the page asks, once a second: the worker's side of the page alone) and `open` (the
  page in headless Chromium on this machine, whose rendering also takes CPU from the
  worker). The rounds go through the six orders of the three (ABC, BCA, CAB, CBA, ACB, BAC),
  so every condition comes first, second and third equally often and drift favours none.
  Tokens/s is read from `/heartbeat`'s `tokens_generated_total` at each window's edges,
  after a settling pause, and beside it the CPU the worker's event-loop thread used per
  second (`/proc`): the page's cost to the worker itself, which the other processes on a
  busy machine move far less than they move tokens/s.

`--split-cores` gives the worker (and its llama.cpp threads, set to one) the first core
alone and the browser, the streams' clients and the poller the others, as when the page is
open on an operator's own machine: `open` then measures the page's cost to the worker, not
the browser's rendering competing with llama.cpp for the same cores.

`--screenshot PATH` makes the README's picture instead: 4 slots, 3 streams, a request that
runs past its deadline (an error to list), a playground run, and a minute of history.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import httpx
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from bench.machine import BusyMeter, cpu_model, main_thread_cpu_s
from llm_worker_rbee.testing.browser import headless_chromium
from llm_worker_rbee.testing.process import WorkerProcess

STREAM_TOKENS = 128
CONDITIONS = ("closed", "polled", "open")
# Every order of the three, each condition in each place twice (a Williams design).
ORDERS = ((0, 1, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0), (0, 2, 1), (1, 0, 2))
PROMPT = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


class Load:
    """`streams` clients, each sending one streamed completion after another until stopped."""

    def __init__(self, url: str, streams: int, prefix: str = "load") -> None:
        self._url = url
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._stream, args=(f"{prefix}-{i}",), daemon=True)
            for i in range(streams)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _stream(self, name: str) -> None:
        body = {
            "prompt": f"({name}) {PROMPT}",
            "max_tokens": STREAM_TOKENS,
            "ignore_eos": True,
            "stream": True,
            "temperature": 0.8,
        }
        with httpx.Client(base_url=self._url, timeout=300) as client:
            count = 0
            while not self._stop.is_set():
                count += 1
                headers = {"X-Request-Id": f"{name}-{count}"}
                try:
                    with client.stream("POST", "/v1/completions", json=body, headers=headers) as r:
                        for _ in r.iter_raw():
                            pass
                except httpx.HTTPError:
                    return  # the worker is gone: the bench is over


class Poller:
    """What the page asks the worker for, without a browser: GET /v1/status?since=N a second
    after the last answer."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._on = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def switch(self, on: bool) -> None:
        if on:
            self._on.set()
        else:
            self._on.clear()

    def _run(self) -> None:
        since = 0
        with httpx.Client(base_url=self._url, timeout=60) as client:
            while True:
                self._on.wait()
                samples = client.get(f"/v1/status?since={since}").json()["history"]["samples"]
                if samples:
                    since = samples[-1]["n"]
                time.sleep(1.0)


@dataclass
class Latency:
    path: str
    p50_ms: float
    p95_ms: float
    max_ms: float
    count: int


def latency(url: str, path: Callable[[], str], count: int, spacing_s: float) -> list[float]:
    """Seconds for each of `count` GETs, one at a time, the whole body read."""
    took = []
    with httpx.Client(base_url=url, timeout=60) as client:
        client.get(path())  # the connection is open before the first timed request
        for _ in range(count):
            started = time.perf_counter()
            response = client.get(path())
            response.raise_for_status()
            took.append(time.perf_counter() - started)
            time.sleep(spacing_s)
    return took


def summary(path: str, took: Sequence[float]) -> Latency:
    ordered = sorted(took)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return Latency(
        path,
        round(1000 * statistics.median(ordered), 2),
        round(1000 * p95, 2),
        round(1000 * ordered[-1], 2),
        len(ordered),
    )


def tokens_generated(url: str) -> int:
    return int(httpx.get(f"{url}/heartbeat", timeout=30).json()["tokens_generated_total"])


def window(url: str, pid: int, seconds: float) -> tuple[float, float]:
    """(tokens/s, the event loop's CPU milliseconds per second) over `seconds`."""
    tokens, cpu, started = tokens_generated(url), main_thread_cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    rate = (tokens_generated(url) - tokens) / wall
    return rate, 1000 * (main_thread_cpu_s(pid) - cpu) / wall


@dataclass
class Figures:
    cpu: str
    cores: int
    threads: int
    slots: int
    streams: int
    window_s: float
    latency: list[Latency] = field(default_factory=list)
    # condition -> tokens/s of each of its windows, in round order
    windows: dict[str, list[float]] = field(default_factory=dict)
    # condition -> the worker's event-loop CPU, milliseconds per second, in each window
    loop_cpu: dict[str, list[float]] = field(default_factory=dict)
    other_cpu_share: float = 0.0  # CPU other processes took while it ran, in cores
    split_cores: bool = False  # the worker on a core of its own (--split-cores)


def measure(args: argparse.Namespace) -> Figures:
    threads = 1 if args.split_cores else args.threads or os.cpu_count() or 1
    figures = Figures(cpu_model(), os.cpu_count() or 1, threads, args.slots, args.streams,
                      args.window_s, split_cores=args.split_cores)  # fmt: skip
    meter = BusyMeter().start()
    cores = sorted(os.sched_getaffinity(0))
    if args.split_cores:  # children inherit the affinity they are started with
        os.sched_setaffinity(0, cores[:1])
    worker = WorkerProcess(
        ["--slots", str(args.slots), "--ctx-size", "4096", "--threads", str(threads)]
    ).start()
    if args.split_cores:
        os.sched_setaffinity(0, cores[1:])
    browser = headless_chromium()
    try:
        with Load(worker.url, args.streams):
            time.sleep(args.warm_up_s)
            since = [0]

            def status_path() -> str:
                return f"/v1/status?since={since[0]}"

            def note_since() -> None:
                samples = httpx.get(f"{worker.url}/v1/status").json()["history"]["samples"]
                since[0] = samples[-1]["n"] if samples else 0

            note_since()
            page = latency(worker.url, lambda: "/ui", args.probes, 0.1)
            figures.latency.append(summary("GET /ui", page))
            note_since()
            polls = latency(worker.url, status_path, args.probes, 0.1)
            figures.latency.append(summary("GET /v1/status?since=N", polls))
            poller = Poller(worker.url)
            figures.windows = {condition: [] for condition in CONDITIONS}
            figures.loop_cpu = {condition: [] for condition in CONDITIONS}
            assert worker.proc is not None
            for round_index in range(args.rounds):
                for place in ORDERS[round_index % len(ORDERS)]:
                    condition = CONDITIONS[place]
                    poller.switch(condition == "polled")
                    browser.get(f"{worker.url}/ui" if condition == "open" else "about:blank")
                    time.sleep(args.settle_s)
                    rate, cpu = window(worker.url, worker.proc.pid, args.window_s)
                    figures.windows[condition].append(round(rate, 2))
                    figures.loop_cpu[condition].append(round(cpu, 1))
                    print(f"round {round_index + 1} {condition:>6}: {rate:.2f} tokens/s, "
                          f"event loop {cpu:.1f} ms/s", file=sys.stderr, flush=True)  # fmt: skip
            poller.switch(False)
    finally:
        browser.quit()
        worker.stop()
    others, wall = meter.others()
    figures.other_cpu_share = round(others / wall, 2) if wall else 0.0
    return figures


def report(figures: Figures) -> str:
    lines = [
        f"{figures.cpu}, {figures.cores} cores; worker: {figures.threads} llama.cpp threads, "
        f"{figures.slots} slots, {figures.streams} streams of {STREAM_TOKENS} tokens"
        f"{' (a core of its own, the rest on the others)' if figures.split_cores else ''}; "
        f"other processes used {figures.other_cpu_share} cores meanwhile",
        "",
        "| request (8 streams running) | p50 | p95 | slowest | requests |",
        "|---|---|---|---|---|",
    ]
    for lat in figures.latency:
        lines.append(
            f"| `{lat.path}` | {lat.p50_ms} ms | {lat.p95_ms} ms | {lat.max_ms} ms | {lat.count} |"
        )
    closed = figures.windows.get("closed", [])
    closed_cpu = figures.loop_cpu.get("closed", [])
    lines += [
        "",
        f"| page | tokens/s per {figures.window_s:g} s window | mean | vs closed (paired) "
        "| event loop CPU, ms/s | vs closed |",
        "|---|---|---|---|---|---|",
    ]
    for condition, rates in figures.windows.items():
        if not rates:
            continue
        cpu = figures.loop_cpu.get(condition, [])
        paired = [rate / base for rate, base in zip(rates, closed, strict=True) if base]
        versus = "" if condition == "closed" else f"{statistics.fmean(paired):.4f}x"
        extra = statistics.fmean(cpu) - statistics.fmean(closed_cpu) if cpu else 0.0
        share = f"{extra:+.1f} ms/s ({extra / 10:+.2f} % of a core)"
        cpu_versus = "" if condition == "closed" else share
        lines.append(
            f"| {condition} | {', '.join(f'{rate:.1f}' for rate in rates)} "
            f"| {statistics.fmean(rates):.2f} | {versus} "
            f"| {statistics.fmean(cpu) if cpu else 0:.1f} | {cpu_versus} |"
        )
    return "\n".join(lines)


def screenshot(args: argparse.Namespace) -> None:
    """The README's picture: the page under a few streams, with a playground run."""
    threads = args.threads or os.cpu_count() or 1
    worker = WorkerProcess(
        ["--slots", "4", "--ctx-size", "4096", "--threads", str(threads)]
    ).start()
    browser: WebDriver = headless_chromium(1400, 1000)
    try:
        browser.get(f"{worker.url}/ui")
        with Load(worker.url, 3):
            time.sleep(args.history_s)
            late = {"prompt": PROMPT, "max_tokens": 400, "ignore_eos": True, "timeout": 1.5}
            httpx.post(f"{worker.url}/v1/completions", json=late, timeout=60)
            prompt = browser.find_element(By.ID, "play-prompt")
            prompt.clear()
            prompt.send_keys("The three most important things to know about bees are")
            browser.find_element(By.ID, "play-run").click()
            time.sleep(args.run_s)
            # The whole page, not only the first screenful.
            height = browser.execute_script("return document.body.scrollHeight")
            size = {"width": 1400, "height": int(height), "deviceScaleFactor": 1, "mobile": False}
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", size)
            time.sleep(1.5)  # the next poll draws at the new size
            browser.save_screenshot(args.screenshot)
    finally:
        browser.quit()
        worker.stop()
    print(f"wrote {args.screenshot}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all)")
    parser.add_argument("--warm-up-s", type=float, default=10.0)
    parser.add_argument("--probes", type=int, default=200, help="timed requests per route")
    parser.add_argument("--rounds", type=int, default=6, help="6: each order of the three once")
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--split-cores", action="store_true", help="the worker on core 0 alone")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--screenshot", metavar="PATH", help="make the README's picture")
    parser.add_argument("--history-s", type=float, default=60.0)
    parser.add_argument("--run-s", type=float, default=8.0)
    args = parser.parse_args(argv)
    if args.screenshot:
        screenshot(args)
        return 0
    figures = measure(args)
    print(report(figures))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(asdict(figures), out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
