"""Logical transactions across RPC calls (DESIGN.md section 1).

``core`` holds the logic without I/O; ``manager`` runs it, sync or async.
"""

from __future__ import annotations

from pgresilience.transactions.core import ExecuteResult
from pgresilience.transactions.manager import (
    AsyncTransaction,
    AsyncTransactionManager,
    Transaction,
    TransactionManager,
)

__all__ = [
    "AsyncTransaction",
    "AsyncTransactionManager",
    "ExecuteResult",
    "Transaction",
    "TransactionManager",
]
