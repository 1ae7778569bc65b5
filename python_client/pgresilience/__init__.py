"""pgresilience: logical transactions across RPC calls, schema version
tracking and circuit breakers, for apps on PostgreSQL / Supabase."""

from __future__ import annotations

__version__ = "0.2.0.dev0"  # unreleased; 0.1.0 was commit dec13be

from pgresilience.breakers import (  # noqa: E402  (after __version__, which submodules read)
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerRegistry,
    CircuitOpenError,
    CircuitState,
    circuit_breaker_registry,
)
from pgresilience.errors import (  # noqa: E402
    ClaimConflict,
    DatabaseError,
    InvalidOperation,
    NotSupported,
    ObjectInUse,
    PermissionDenied,
    PgResilienceError,
    RollbackConflict,
    SavepointNotFound,
    TableChanged,
    TransactionExpired,
    TransactionNotActive,
    TransactionNotFound,
    UnknownObject,
)
from pgresilience.schema import (  # noqa: E402
    AsyncSchemaVersionManager,
    SchemaVersionManager,
)
from pgresilience.transactions import (  # noqa: E402
    AsyncTransactionManager,
    TransactionManager,
)

__all__ = [
    "AsyncSchemaVersionManager",
    "SchemaVersionManager",
    "AsyncTransactionManager",
    "TransactionManager",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerRegistry",
    "CircuitOpenError",
    "CircuitState",
    "ClaimConflict",
    "DatabaseError",
    "InvalidOperation",
    "NotSupported",
    "ObjectInUse",
    "PermissionDenied",
    "PgResilienceError",
    "RollbackConflict",
    "SavepointNotFound",
    "TableChanged",
    "TransactionExpired",
    "TransactionNotActive",
    "TransactionNotFound",
    "UnknownObject",
    "__version__",
    "circuit_breaker_registry",
]
