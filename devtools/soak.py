"""`make soak`: many misbehaving clients against one worker, then a look at what is left.

200 concurrent clients for 60 s against 4 slots: 30 % of them leave at a random moment,
10 % cancel their job by id, the rest read to the end. First on the fake engine, then on the
real bundled model. Afterwards every slot must be free, the queue empty, no 5xx other than
503 overload, every accepted request must have ended with a terminal event, and resident
memory may not have grown by more than 5 % after warm-up. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass, field

import httpx
import trio

from llm_worker_rbee.testing.process import FakeWorkerProcess, WorkerProcess


@dataclass
class Tally:
    sent: int = 0
    accepted: int = 0
    terminal: int = 0  # accepted requests that saw `end` (or left/cancelled on purpose)
    left: int = 0
    cancelled: int = 0
    overload_503: int = 0
    other_5xx: int = 0
    missing_end: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    # Request sent to 503 headers received, seconds: an overload answer must be quick.
    overload_latency: list[float] = field(default_factory=list)

    def overload_ms(self, quantile: float) -> float:
        if not self.overload_latency:
            return 0.0
        ordered = sorted(self.overload_latency)
        return 1000 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def client(http: httpx.AsyncClient, rng: random.Random, tally: Tally, n: int) -> None:
    roll = rng.random()
    job = f"soak-{n}"
    body = {
        "prompt": f"soak {n % 17}",
        "max_tokens": rng.randint(4, 48),
        "job_id": job,
        "stream": True,
    }
    tally.sent += 1
    leave_after = rng.randint(1, 6) if roll < 0.3 else None
    cancel_after = rng.randint(1, 6) if 0.3 <= roll < 0.4 else None
    sent_at = time.perf_counter()
    try:
        async with http.stream("POST", "/v1/inference", json=body) as response:
            tally.statuses[response.status_code] = tally.statuses.get(response.status_code, 0) + 1
            if response.status_code == 503:
                tally.overload_latency.append(time.perf_counter() - sent_at)
                tally.overload_503 += 1
                # A polite client waits as told (jittered), rather than hammering.
                retry = float(response.headers.get("retry-after", "1"))
                await trio.sleep(min(retry, 1.0) * rng.random())
                return
            if response.status_code >= 500:
                tally.other_5xx += 1
                return
            if response.status_code != 200:
                return
            tally.accepted += 1
            events = 0
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    events += 1
                    if line == "event: end":
                        tally.terminal += 1
                        return
                if leave_after is not None and events >= leave_after:
                    tally.left += 1
                    tally.terminal += 1
                    return
                if cancel_after is not None and events == cancel_after:
                    cancel_after = None
                    await http.delete(f"/v1/inference/{job}")
                    tally.cancelled += 1
            tally.missing_end += 1
    except httpx.HTTPError:
        tally.other_5xx += 1


async def drive(url: str, seconds: float, concurrency: int, seed: int) -> Tally:
    tally = Tally()
    rng = random.Random(seed)
    deadline = trio.current_time() + seconds
    limits = httpx.Limits(max_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def worker_loop(index: int) -> None:
            n = index
            while trio.current_time() < deadline:
                await client(http, rng, tally, n)
                n += concurrency

        async with trio.open_nursery() as nursery:
            for index in range(concurrency):
                nursery.start_soon(worker_loop, index)
    return tally


def settle(url: str) -> dict[str, object]:
    with httpx.Client(base_url=url, timeout=10) as http:
        for _ in range(100):
            slots = http.get("/v1/slots").json()
            if not any(s["busy"] for s in slots["slots"]) and not slots["queue"]:
                break
            time.sleep(0.05)
        return {"slots": slots, "health": http.get("/health").status_code}


def soak(name: str, worker: WorkerProcess, seconds: float, concurrency: int) -> bool:
    assert worker.proc is not None
    print(f"== {name}: {concurrency} clients for {seconds:.0f} s", flush=True)
    # Warm-up as long as the run: the worker's bounded memories (the last 10,000 job ids,
    # allocator arenas) fill up here, so what grows afterwards would be a leak.
    trio.run(drive, worker.url, seconds, concurrency, 1)
    before = rss_kib(worker.proc.pid)
    tally = trio.run(drive, worker.url, seconds, concurrency, 2)
    after = rss_kib(worker.proc.pid)
    state = settle(worker.url)
    slots = state["slots"]
    assert isinstance(slots, dict)
    leaked = sum(s["busy"] for s in slots["slots"])
    growth = (after - before) / before * 100 if before else 0.0
    print(f"   sent {tally.sent}, accepted {tally.accepted}, 503 overload {tally.overload_503}")
    print(f"   left {tally.left}, cancelled {tally.cancelled}, statuses {tally.statuses}")
    print(
        f"   503 overload answered in p50 {tally.overload_ms(0.5):.1f} ms, "
        f"p99 {tally.overload_ms(0.99):.1f} ms (client-side, on the same cores)"
    )
    print(
        f"   accepted without a terminal event: {tally.missing_end}, other 5xx: {tally.other_5xx}"
    )
    print(f"   after: leaked slots {leaked}, queue {len(slots['queue'])}, health {state['health']}")
    print(f"   RSS {before} KiB -> {after} KiB after warm-up ({growth:+.1f} %)")
    ok = (
        leaked == 0
        and not slots["queue"]
        and tally.other_5xx == 0
        and tally.missing_end == 0
        and growth < 5.0
    )
    print(f"   {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


async def probe_overload(url: str, slots: int, queue: int, probes: int = 100) -> list[float]:
    """Fills every slot and the queue with long generations, then times `probes` requests
    sent one at a time: each must get 503 at once (no engine work, no waiting)."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def hold(n: int) -> None:
            body = {"prompt": "hold", "max_tokens": 1000, "job_id": f"hold-{n}", "stream": True}
            async with http.stream("POST", "/v1/inference", json=body) as response:
                async for _ in response.aiter_bytes():
                    pass

        async with trio.open_nursery() as nursery:
            for n in range(slots + queue):
                nursery.start_soon(hold, n)
            for _ in range(3000):  # up to 30 s for the holders to get in line
                if len((await http.get("/v1/slots")).json()["queue"]) >= queue:
                    break
                await trio.sleep(0.01)
            body = {"prompt": "one more", "max_tokens": 4}
            for _ in range(probes):
                sent_at = time.perf_counter()
                response = await http.post("/v1/inference", json=body)
                latencies.append(time.perf_counter() - sent_at)
                assert response.status_code == 503, response.status_code
            for n in range(slots + queue):
                await http.delete(f"/v1/inference/hold-{n}")
    return sorted(latencies)


def overload_probe(slots: int, queue: int) -> bool:
    # Replies long enough to hold every slot for the whole probe.
    args = ["--slots", str(slots), "--max-queue", str(queue), "--reply-tokens", "1000"]
    worker = FakeWorkerProcess([*args, "--step-latency", "0.01"]).start()
    try:
        latencies = trio.run(probe_overload, worker.url, slots, queue)
    finally:
        worker.stop()
    p50, p99 = (1000 * latencies[int(q * (len(latencies) - 1))] for q in (0.5, 0.99))
    print(f"== overload probe: {len(latencies)} requests against {slots} busy slots and a")
    print(f"   full queue of {queue}, one at a time: 503 in p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    ok = p99 < 10.0
    print(f"   {'PASS' if ok else 'FAIL'} (503 within 10 ms, request sent to response read)")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.soak")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args(argv)
    results = []
    fake = FakeWorkerProcess(["--slots", "4", "--step-latency", "0.01"]).start()
    try:
        results.append(soak("fake engine", fake, args.seconds, args.clients))
    finally:
        fake.stop()
    results.append(overload_probe(slots=4, queue=8))
    if not args.skip_real:
        real = WorkerProcess(["--slots", "4", "--ctx-size", "2048"]).start()
        try:
            results.append(soak("real model", real, args.seconds, args.clients))
        finally:
            real.stop()
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
