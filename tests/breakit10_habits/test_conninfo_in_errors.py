"""An app's DATABASE_URL is often its SQLAlchemy URL
(`postgresql+psycopg://user:password@host/db`), which libpq cannot parse.
libpq's parse error quotes the string whole, password included, and an app
logs what a manager raises: the managers (and the command) must say what is
wrong, name the SQLAlchemy form, and repeat nothing of the conninfo, in the
message or in any exception chained to it."""

from __future__ import annotations

import asyncio
import traceback

import pytest

from pgresilience import (
    AsyncTransactionManager,
    DatabaseError,
    SchemaVersionManager,
    TransactionManager,
    cli,
)

SECRET = "s3cret-Pa55"
BROKEN = [
    f"postgresql+psycopg://app:{SECRET}@127.0.0.1:1/main",
    f"postgresql://app:{SECRET}@[::1",  # an IPv6 host never closed
]


def _shown(exc: BaseException) -> str:
    """All a log would show: the message, its notes and the chained causes."""
    return "".join(traceback.format_exception(exc))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("conninfo", BROKEN)
def test_a_conninfo_that_does_not_parse_is_never_repeated(conninfo: str) -> None:
    with TransactionManager(conninfo) as tm, pytest.raises(DatabaseError) as sync_error:
        tm.begin()

    async def begin() -> None:
        async with AsyncTransactionManager(conninfo) as atm:
            await atm.begin()

    with pytest.raises(DatabaseError) as async_error:
        asyncio.run(begin())
    with SchemaVersionManager(conninfo) as svm, pytest.raises(DatabaseError) as schema_error:
        svm.initialize()
    for error in (sync_error.value, async_error.value, schema_error.value):
        assert str(error).startswith("not a conninfo or URL: "), error
        assert SECRET not in _shown(error)
        if "+psycopg" in conninfo:
            assert "SQLAlchemy URL" in str(error) and "postgresql://" in str(error)


def test_the_command_names_a_sqlalchemy_url(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["status", "--dsn", BROKEN[0]])
    err = capsys.readouterr().err
    assert code == 2  # usage: a conninfo or URL that does not parse
    assert err.startswith("pgresilience status: not a conninfo or URL: "), err
    assert "SQLAlchemy URL" in err and SECRET not in err
