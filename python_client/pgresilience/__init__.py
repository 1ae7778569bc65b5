"""pgresilience: logical transactions across RPC calls, schema version
tracking and circuit breakers, for apps on PostgreSQL / Supabase."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
