"""The embedded PostgreSQL used by the demo and the tests."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import psycopg
import pytest

from pgresilience.embedded import EmbeddedPostgres


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_starts_a_server_and_leaves_nothing_behind() -> None:
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        data_dir = pg.data_dir
        pid = postmaster_pid(data_dir)
        assert Path(f"/proc/{pid}").exists()
    assert not Path(f"/proc/{pid}").exists()
    assert not data_dir.parent.exists()


def test_cleans_up_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with EmbeddedPostgres() as pg:
            data_dir = pg.data_dir
            pid = postmaster_pid(data_dir)
            raise RuntimeError("boom")
    assert not Path(f"/proc/{pid}").exists()
    assert not data_dir.parent.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful as root")
def test_as_root_the_server_runs_as_an_unprivileged_user() -> None:
    with EmbeddedPostgres() as pg:
        pid = postmaster_pid(pg.data_dir)
        uid = Path(f"/proc/{pid}").stat().st_uid
    assert uid == pwd.getpwnam("postgres").pw_uid


def test_constructor_does_no_io() -> None:
    pg = EmbeddedPostgres()
    with pytest.raises(RuntimeError, match="not started"):
        pg.dsn()
    pg.stop()  # stopping a server never started is harmless


def test_crash_then_restart_keeps_committed_data() -> None:
    with EmbeddedPostgres() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("create table kept (id int)")
            conn.execute("insert into kept values (1)")
        pg.crash()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.dsn(), connect_timeout=2)
        pg.restart()
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            assert conn.execute("select id from kept").fetchall() == [(1,)]


def test_preloads_the_libraries_it_is_given() -> None:
    # plpython3: the library the schema tracking docs measured preloaded.
    if not (EmbeddedPostgres().bin_dir.parent / "lib" / "plpython3.so").exists():
        pytest.skip("no plpython3 library")
    with EmbeddedPostgres(preload=("plpython3",)) as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            row = conn.execute("show shared_preload_libraries").fetchone()
    assert row is not None and "plpython3" in row[0].split(",")


@pytest.mark.parametrize("name", ["", "a b", "a,b", "x\n-c fsync=on"])
def test_refuses_library_names_it_cannot_pass_on(name: str) -> None:
    with pytest.raises(ValueError):
        EmbeddedPostgres(preload=(name,))
