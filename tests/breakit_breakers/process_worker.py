"""One "worker process" of test_processes.py: a shared breaker in its own
store. Prints ``ready``, then, once it sees the circuit open, ``open``; then
32 threads call until the circuit is closed again, and it prints its state
and the probe questions it asked, as JSON. Every wait is bounded.

    python process_worker.py DSN NAME
"""

from __future__ import annotations

import json
import sys
import threading
import time

from pgresilience.breakers import CircuitBreaker, CircuitOpenError, CircuitState
from pgresilience.breakers.shared import SharedCircuitStore


def main(dsn: str, name: str) -> int:
    store = SharedCircuitStore(dsn)
    breaker = CircuitBreaker(name, failure_threshold=1, timeout=1.0)
    store.attach(breaker)
    try:
        if not store.wait_connected(10) or not store.flush(10):
            print("no database", flush=True)
            return 1
        print("ready", flush=True)
        deadline = time.monotonic() + 20
        while breaker.state is not CircuitState.OPEN:
            if time.monotonic() > deadline:
                print("never saw it open", flush=True)
                return 1
            time.sleep(0.01)
        print("open", flush=True)
        barrier = threading.Barrier(32)

        def trial() -> str:
            time.sleep(0.2)  # a trial that takes a while: others come meanwhile
            return "ok"

        def caller() -> None:
            barrier.wait()
            end = time.monotonic() + 20
            while time.monotonic() < end and breaker.state is not CircuitState.CLOSED:
                try:
                    breaker.execute(trial)
                except CircuitOpenError:
                    time.sleep(0.005)

        threads = [threading.Thread(target=caller) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        report = {"state": breaker.state.value, "questions": store.probe_questions}
        print(json.dumps(report), flush=True)
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
