"""A separate process using a shared circuit (run by test_shared.py).

python shared_worker.py probe <dsn> <circuit>  -> prints "ready", waits for
    a line on stdin, asks for the half-open probe, prints "granted" or "refused"
python shared_worker.py trip <dsn> <circuit>   -> trips the circuit, prints "tripped"
"""

from __future__ import annotations

import sys

from pgresilience.breakers import CircuitBreaker
from pgresilience.breakers.shared import SharedCircuitStore


def main(mode: str, dsn: str, name: str) -> None:
    with SharedCircuitStore(dsn) as store:
        breaker = store.attach(CircuitBreaker(name, failure_threshold=1, timeout=60.0))
        if not store.wait_connected(10) or not store.flush(10):
            print("no database", flush=True)
            return
        if mode == "probe":
            print("ready", flush=True)
            sys.stdin.readline()
            print("granted" if store.request_probe(breaker) is None else "refused", flush=True)
        elif mode == "trip":
            try:
                breaker.execute(lambda: 1 / 0)
            except ZeroDivisionError:
                pass
            store.flush(10)
            print("tripped", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
