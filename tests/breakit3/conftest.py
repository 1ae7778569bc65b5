"""Fixtures of the third review's attacks, shared with the client tests: the
managed table ``accounts`` (ids 1..60, balance 100 each) and a PgBouncer in
transaction mode."""

from __future__ import annotations

from client.conftest import Bouncer, accounts, bouncer

__all__ = ["Bouncer", "accounts", "bouncer"]
