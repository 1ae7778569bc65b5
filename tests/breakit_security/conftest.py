"""Fixtures for tests/breakit_security: the PostgREST-like sessions and the
RLS application schema of tests/security, one definition."""

from __future__ import annotations

from security.conftest import app as app
from security.conftest import connect_as as connect_as
from security.conftest import raises_sqlstate as raises_sqlstate
from security.conftest import session as session
from security.conftest import table_rows as table_rows
from security.conftest import user_a as user_a
from security.conftest import user_b as user_b
