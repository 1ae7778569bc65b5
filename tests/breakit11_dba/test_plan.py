"""`pgresilience plan FILE` on the files a DBA writes: exit 0 below
--fail-on, 1 at or above it, 2 when the migration cannot run; nothing is
ever committed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from breakit11_dba.dba import last_version, run_cli, schema_dump

FILES = {
    "wrapped-do-block": (
        """-- 0042_orders.sql
BEGIN;
SET lock_timeout = '2s';
CREATE TABLE public.orders (id bigserial PRIMARY KEY, total numeric(12, 2) NOT NULL DEFAULT 0);
DO $$
BEGIN
    EXECUTE format('ALTER TABLE public.orders ADD COLUMN %I text', 'note');
END $$;
COMMIT;
""",
        "low",
    ),
    "drop-column": ("alter table public.accounts drop column legacy;", "critical"),
    "plain-index": (
        "START TRANSACTION;\ncreate index accounts_legacy on public.accounts (legacy);\nEND;\n",
        "medium",
    ),
    "concurrently": (
        "create index concurrently accounts_legacy on public.accounts (legacy);",
        None,
    ),
    "two-transactions": (
        "begin; alter table public.accounts add column a int; commit;\n"
        "begin; alter table public.accounts add column b int; commit;\n",
        None,
    ),
    "fails-midway": (
        "begin;\nalter table public.accounts add column x int;\nselect 1/0;\ncommit;\n",
        None,
    ),
    "no-op": ("select 1;", "none"),
    # RESET ALL cleared what the DDL before it had noted: the plan said "no
    # schema change" (exit 0) for a dropped column.
    "reset-all": (
        "BEGIN;\nSET lock_timeout = '2s';\nalter table public.accounts drop column legacy;\n"
        "RESET ALL;\nCOMMIT;\n",
        "critical",
    ),
}
RANK = ["none", "low", "medium", "high", "critical"]

pytestmark = pytest.mark.pg_dump


@pytest.mark.parametrize("name", list(FILES))
def test_plan_exit_codes_and_nothing_committed(dsn: str, tmp_path: Path, name: str) -> None:
    from breakit11_dba.dba import psql

    psql(dsn, "create table public.accounts (id int primary key, legacy text);")
    text, severity = FILES[name]
    path = tmp_path / f"{name}.sql"
    path.write_text(text)
    before, dump = last_version(dsn), schema_dump(dsn)
    for fail_on in ("medium", "critical"):
        done = run_cli("plan", str(path), "--dsn", dsn, "--json", "--fail-on", fail_on)
        report = json.loads(done.stdout)
        if severity is None:
            assert done.returncode == 2 and report["ok"] is False and report["error"]["sqlstate"]
        else:
            assert (report["max_severity"] or "none") == severity
            expected = 1 if RANK.index(severity) >= RANK.index(fail_on) else 0
            assert done.returncode == report["exit_code"] == expected
    assert last_version(dsn) == before
    assert schema_dump(dsn) == dump
