"""A DBA restores the app's schemas (pg_dump -n) into a new database and
installs pgresilience there: the first version is the restored schema, and
schema_refresh() right after reports nothing."""

from __future__ import annotations

import subprocess

import pytest

from breakit11_dba.dba import last_version, psql, refresh
from pgresilience import installer
from pgresilience.embedded import find_bin_dir


@pytest.mark.pg_dump
def test_installing_into_a_restored_app_schema_records_no_phantom_drops(
    dsn: str, bare_dsn: str, tmp_path: object
) -> None:
    """The dump of schema public carries the rpc() wrappers of the earlier
    install (with their comment); the installer takes them back. The baseline
    was taken before it did, so it counted them as the app's, and the first
    schema_refresh() reported 20 `function_dropped` (high)."""
    psql(
        dsn,
        """
        begin;
        create table public.orders (
            id bigint generated always as identity primary key, total numeric);
        create view public.big_orders as select id from public.orders where total > 100;
        commit;
        """,
    )
    bin_dir = find_bin_dir()
    dump = subprocess.run(
        [str(bin_dir / "pg_dump"), "-Fc", "-n", "public", "-d", dsn],
        capture_output=True,
        check=True,
    ).stdout
    restored = subprocess.run(
        [str(bin_dir / "pg_restore"), "-d", bare_dsn], input=dump, capture_output=True, check=False
    )
    errors = [line for line in restored.stderr.decode().splitlines() if "ERROR" in line]
    assert all('schema "public" already exists' in line for line in errors), errors
    installer.install(bare_dsn)
    after = refresh(bare_dsn)
    assert (after["changed"], after["version"]) == (False, 1)
    assert after["hash"] == last_version(dsn)[1]
