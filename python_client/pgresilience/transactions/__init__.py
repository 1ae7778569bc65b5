"""Logical transactions across RPC calls (DESIGN.md section 1).

``core`` holds the logic without I/O; ``aio`` runs it in asyncio, and
``manager`` (generated from ``aio``) runs it in plain Python.
"""

from __future__ import annotations

from pgresilience.transactions.aio import AsyncTransaction, AsyncTransactionManager
from pgresilience.transactions.core import ExecuteResult
from pgresilience.transactions.manager import Transaction, TransactionManager

__all__ = [
    "AsyncTransaction",
    "AsyncTransactionManager",
    "ExecuteResult",
    "Transaction",
    "TransactionManager",
]
