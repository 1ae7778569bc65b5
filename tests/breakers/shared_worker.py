"""A separate process using a shared circuit (run by the shared-state tests).

python shared_worker.py probe <dsn> <circuit>  -> prints "ready", waits for
    a line on stdin, asks for the half-open probe, prints "granted" or "refused"
python shared_worker.py trip <dsn> <circuit>   -> trips the circuit, prints "tripped"
python shared_worker.py herd <dsn> <circuit> <threads>  -> prints "ready", waits
    for a line and for the circuit to open here, then <threads> threads call
    the breaker every millisecond until each got through once; prints one
    JSON line: calls admitted, probe questions asked, rejection latencies
python shared_worker.py fail-probe <dsn> <circuit>  -> prints "ready", waits for
    a line and for the circuit to open here, calls until admitted; the
    admitted trial prints "trial", waits for a line and fails; prints
    "failed" once that is published
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time

from pgresilience.breakers import CircuitBreaker, CircuitOpenError, CircuitState
from pgresilience.breakers.shared import SharedCircuitStore


def wait_open(breaker: CircuitBreaker) -> None:
    """Until this process has heard that the circuit is open (NOTIFY)."""
    deadline = time.monotonic() + 20
    while breaker.core.state is not CircuitState.OPEN and time.monotonic() < deadline:
        time.sleep(0.005)


def herd(store: SharedCircuitStore, breaker: CircuitBreaker, threads: int) -> None:
    rejections: list[float] = []
    admitted: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def caller() -> None:
        barrier.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                breaker.execute(lambda: "ok")
            except CircuitOpenError:
                took = time.perf_counter() - began
                with lock:
                    rejections.append(took)
                time.sleep(0.001)
                continue
            with lock:
                admitted.append(1)
            return

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    store.flush(10)
    print(
        json.dumps(
            {
                "admitted": len(admitted),
                "questions": store.probe_questions,
                "rejections": len(rejections),
                "reject_median_us": statistics.median(rejections) * 1e6 if rejections else 0,
                "reject_max_ms": max(rejections) * 1e3 if rejections else 0,
            }
        ),
        flush=True,
    )


def fail_probe(store: SharedCircuitStore, breaker: CircuitBreaker) -> None:
    def trial() -> None:
        print("trial", flush=True)
        sys.stdin.readline()
        raise ConnectionError("still down")

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            breaker.execute(trial)
        except CircuitOpenError:
            time.sleep(0.01)
            continue
        except ConnectionError:
            break
    store.flush(10)
    print("failed", flush=True)


def main(mode: str, dsn: str, name: str, *rest: str) -> None:
    with SharedCircuitStore(dsn, probe_lease=30.0, refresh_interval=0.2) as store:
        # herd and fail-probe re-open for a second; trip's circuit stays open.
        timeout = 1.0 if mode in ("herd", "fail-probe") else 60.0
        breaker = store.attach(CircuitBreaker(name, failure_threshold=1, timeout=timeout))
        if not store.wait_connected(10) or not store.flush(10):
            print("no database", flush=True)
            return
        if mode == "probe":
            print("ready", flush=True)
            sys.stdin.readline()
            answer = store.request_probe(breaker)
            granted = answer is None or answer.result(10)
            print("granted" if granted else "refused", flush=True)
        elif mode == "trip":
            try:
                breaker.execute(lambda: 1 / 0)
            except ZeroDivisionError:
                pass
            store.flush(10)
            print("tripped", flush=True)
        elif mode == "herd":
            print("ready", flush=True)
            sys.stdin.readline()
            wait_open(breaker)
            herd(store, breaker, int(rest[0]))
        elif mode == "fail-probe":
            print("ready", flush=True)
            sys.stdin.readline()
            wait_open(breaker)
            fail_probe(store, breaker)


if __name__ == "__main__":
    main(*sys.argv[1:])
