"""Install, upgrade and uninstall pgresilience in a database.

Everything happens in one database transaction (all or nothing), serialized by
an advisory lock so that two installers never interleave. The order is
described in docs/architecture.md.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from pgresilience._resources import data_path
from pgresilience.advice import FollowUp, follow_ups
from pgresilience.errors import PgResilienceError
from pgresilience.queries import query
from pgresilience.sqlscript import function_probe, statements

__all__ = ["ActiveTransactions", "InstallReport", "install", "uninstall", "installed_revision"]

NO_EVENT_TRIGGERS = (
    "event triggers not created ({reason}): DDL tracking falls back to "
    "calling resilience.schema_refresh()"
)


class ActiveTransactions(PgResilienceError):
    """``uninstall`` refused: logical transactions are active, and removing the
    package would leave their half-done writes in place; or failed ones hold
    the only record (their images) of rows their rollback could not restore."""


@dataclass
class InstallReport:
    """What an install did, in words, plus the facts callers test on."""

    revision: str | None = None
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    plpython: bool = False
    event_triggers: bool = False
    exposed: list[str] = field(default_factory=list)
    #: commands still to run, and by whom (also in ``warnings``)
    follow_ups: list[FollowUp] = field(default_factory=list)

    def lines(self) -> list[str]:
        return self.actions + [f"warning: {w}" for w in self.warnings]


# Alembic's `context` and `op` are module globals: two installs at once in
# one process (threads; into two databases, as the per-database advisory
# lock lets them) ran each other's migrations on the wrong connection and
# hung. Only the Alembic step is serialized.
_ALEMBIC = threading.Lock()


@contextmanager
def _connect(dsn: str) -> Iterator[tuple[Connection, psycopg.Connection[Any]]]:
    """A SQLAlchemy connection for Alembic and the psycopg connection under it,
    sharing one database transaction that is committed on success."""
    engine = create_engine(
        "postgresql+psycopg://",
        # No server-side prepared statements: a pooler in transaction mode
        # would hand them to other clients.
        creator=lambda: psycopg.connect(dsn, prepare_threshold=None),
        poolclass=NullPool,
    )
    try:
        with engine.connect() as sa_conn:
            raw = sa_conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            yield sa_conn, raw
            sa_conn.commit()
    except DBAPIError as exc:
        # One kind of error whichever step failed: psycopg's, with its
        # SQLSTATE (Alembic's steps raise it wrapped by SQLAlchemy).
        if isinstance(exc.orig, psycopg.Error):
            raise exc.orig from exc
        raise
    finally:
        engine.dispose()


def _alembic_config(sa_conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(data_path("alembic")))
    config.attributes["connection"] = sa_conn
    return config


def _current_revision(sa_conn: Connection) -> str | None:
    context = MigrationContext.configure(
        sa_conn, opts={"version_table_schema": "resilience", "version_table": "alembic_version"}
    )
    return context.get_current_revision()


def installed_revision(conn: psycopg.Connection[Any]) -> str | None:
    """The Alembic revision installed in this database, or None."""
    installed = conn.execute(query("is_installed")).fetchone()
    if not (installed and installed[0]):
        return None
    row = conn.execute(query("installed_revision")).fetchone()
    return str(row[0]) if row else None


def _sql_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.sql")) if folder.is_dir() else []


def _apply(raw: psycopg.Connection[Any], path: Path) -> None:
    # Bytes, no parameters: psycopg sends the file as-is (several statements).
    raw.execute(path.read_bytes())


def _collect_notices(raw: psycopg.Connection[Any], report: InstallReport) -> None:
    """Our SQL speaks through WARNINGs (something the user should act on) and
    NOTICEs prefixed ``pgresilience:`` (something done)."""

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        message = diag.message_primary
        if not message:
            return
        if diag.severity_nonlocalized == "WARNING":
            report.warnings.append(message.removeprefix("pgresilience: "))
        elif diag.severity_nonlocalized == "NOTICE" and message.startswith("pgresilience: "):
            report.actions.append(message.removeprefix("pgresilience: "))

    raw.add_notice_handler(on_notice)


def release_probes(*, plpython: bool) -> list[str]:
    """The release's function definitions as ``pg_temp`` probes (sqlscript.py):
    every ``sql/`` file, ``sql/superuser/``, and ``sql/plpython/`` when the
    language exists (a probe needs it)."""
    folders = [data_path("sql"), data_path("sql") / "superuser"]
    if plpython:
        folders.append(data_path("sql") / "plpython")
    probes = []
    for folder in folders:
        for path in _sql_files(folder):
            for statement in statements(path.read_text(encoding="utf-8")):
                probe = function_probe(statement)
                if probe is not None:
                    probes.append(probe)
    return probes


def _drop_stale_functions(raw: psycopg.Connection[Any]) -> None:
    """DESIGN.md "Upgrades": before the release's files run, drop the
    functions the installed release defined that this one no longer defines,
    or defines with another signature (probes stay until ``_record_release``)."""
    row = raw.execute(query("language_usable"), ("plpython3u",)).fetchone()
    raw.execute(query("probes_begin"))
    for probe in release_probes(plpython=bool(row and row[0])):
        raw.execute(probe.encode())
    raw.execute(query("probes_end"))
    raw.execute(query("drop_stale_functions"))


def _record_release(raw: psycopg.Connection[Any]) -> None:
    raw.execute(query("record_release_functions"))
    raw.execute(query("drop_probes"))


def _install_plpython(raw: psycopg.Connection[Any], report: InstallReport) -> None:
    # All in one savepoint: the extension may exist while this role may not
    # create functions in an untrusted language.
    try:
        with raw.transaction():
            existed = raw.execute(query("extension_exists"), ("plpython3u",)).fetchone()
            raw.execute(query("create_plpython"))
            if existed is None:
                raw.execute(query("record_created_extension"), ("plpython3u",))
            for module in sorted(data_path("plpython").glob("*.py")):
                source = module.read_text(encoding="utf-8")
                digest = hashlib.sha256(source.encode()).hexdigest()
                raw.execute(query("store_plpython_module"), (module.stem, source, digest))
            for path in _sql_files(data_path("sql") / "plpython"):
                _apply(raw, path)
    except psycopg.Error as exc:
        report.warnings.append(
            f"PL/Python (plpython3u) unavailable ({exc.diag.message_primary}): schema diffs "
            "are computed by the Python client instead"
        )
        return
    report.plpython = True
    report.actions.append("installed PL/Python functions (schema diff runs in the database)")


def _install_event_triggers(raw: psycopg.Connection[Any], report: InstallReport) -> None:
    files = _sql_files(data_path("sql") / "superuser")
    if not files:
        return
    try:
        with raw.transaction():
            for path in files:
                _apply(raw, path)
    except psycopg.errors.InsufficientPrivilege as exc:
        report.warnings.append(NO_EVENT_TRIGGERS.format(reason=exc.diag.message_primary))
        return
    report.event_triggers = True
    report.actions.append("created event triggers (every committed migration is tracked)")


def _schedule_reaper(raw: psycopg.Connection[Any], interval: str, report: InstallReport) -> None:
    row = raw.execute(query("schedule_reaper"), (interval,)).fetchone()
    if row and row[0]:
        report.actions.append(f"scheduled resilience.tx_reap() with pg_cron every {interval!s}")
    else:
        report.warnings.append(
            "pg_cron is not installed in this database: reaper not scheduled "
            "(tx_begin still reaps lazily; the Python Janitor can run it too)"
        )


def install(
    dsn: str,
    *,
    expose: str | None = "public",
    schedule_reaper: str | None = None,
    plpython: bool = True,
    event_triggers: bool = True,
) -> InstallReport:
    """Install or upgrade pgresilience; idempotent.

    ``expose``: schema for the rpc() wrappers, or None. ``schedule_reaper``: a
    pg_cron schedule at which to run ``tx_reap()``: cron syntax
    (``"* * * * *"``), or ``"10 seconds"`` on pg_cron >= 1.5. ``plpython`` and
    ``event_triggers``: try them (False: do not, as on hosted platforms that
    refuse them anyway). A failure raises the ``psycopg.Error`` of the step
    that failed (its ``sqlstate``), and leaves the database as it was.
    """
    report = InstallReport()
    with _connect(dsn) as (sa_conn, raw):
        _collect_notices(raw, report)
        raw.execute(query("install_lock"))
        before = _current_revision(sa_conn)
        with _ALEMBIC:
            command.upgrade(_alembic_config(sa_conn), "head")
        report.revision = _current_revision(sa_conn)
        if before == report.revision:
            report.actions.append(f"schema resilience already at revision {before}")
        else:
            report.actions.append(
                f"migrated schema resilience from revision {before or 'none'} to {report.revision}"
            )
        _drop_stale_functions(raw)
        # Files 9x (grants, wrappers) derive from the functions that exist, so
        # they run after PL/Python and the event triggers.
        files = _sql_files(data_path("sql"))
        derived = [p for p in files if p.stem.startswith("9")]
        for path in [p for p in files if p not in derived]:
            _apply(raw, path)
        if plpython:
            _install_plpython(raw, report)
        if event_triggers:
            _install_event_triggers(raw, report)
        for path in derived:
            _apply(raw, path)
        _record_release(raw)
        report.actions.append(
            f"applied {len(files)} SQL files ({', '.join(p.stem for p in files)})"
        )
        removed = raw.execute(query("unexpose"), (expose,)).fetchall()
        if expose:
            rows = raw.execute(query("expose"), (expose,)).fetchall()
            report.exposed = [str(r[0]) for r in rows]
            report.actions.append(f"exposed {len(rows)} wrappers in schema {expose}")
        elif removed:
            report.actions.append(f"removed {len(removed)} exposed wrappers")
        raw.execute(query("baseline"))
        if schedule_reaper:
            _schedule_reaper(raw, schedule_reaper, report)
        report.follow_ups = follow_ups(raw)
        report.warnings += [f.line() for f in report.follow_ups]
    return report


def _some(ids: list[str]) -> str:
    return ", ".join(ids[:3]) + (" ..." if len(ids) > 3 else "")


def uninstall(dsn: str, *, force: bool = False) -> list[str]:
    """Remove exactly what install created; idempotent. Refuses while logical
    transactions are active, or failed ones hold images of rows their rollback
    could not restore (``ActiveTransactions``), unless ``force``, which rolls
    the active ones back first (``force => true``: drift does not stop it) and
    drops the failed ones' images with the package."""
    lines = []
    with _connect(dsn) as (sa_conn, raw):
        raw.execute(query("install_lock"))
        revision = _current_revision(sa_conn)
        if revision is None:
            return ["pgresilience is not installed here: nothing to do"]
        raw.execute(query("refuse_app_dependents"))
        active = [str(r[0]) for r in raw.execute(query("active_transaction_ids")).fetchall()]
        failed = [str(r[0]) for r in raw.execute(query("failed_transaction_ids")).fetchall()]
        if (active or failed) and not force:
            raise ActiveTransactions(
                "; ".join(
                    f"{len(ids)} logical transactions {what} ({_some(ids)})"
                    for ids, what in (
                        (active, "are active"),
                        (failed, "failed: their images hold rows their rollback never restored"),
                    )
                    if ids
                )
            )
        for tx_id in active:
            raw.execute(query("uninstall_rollback"), (tx_id,))
        if active:
            lines.append(f"rolled back {len(active)} active logical transactions first (--force)")
        if failed:
            lines.append(
                f"dropped the images of {len(failed)} failed logical transactions, "
                "whose rows were never restored (--force)"
            )
        counts = raw.execute(query("installed_objects")).fetchone()
        assert counts is not None
        with _ALEMBIC:
            command.downgrade(_alembic_config(sa_conn), "base")
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        conn.execute(query("drop_unused_roles"))
    functions, tables, wrappers, event_triggers = counts
    return lines + [
        f"removed schema resilience (revision {revision}): {tables} tables, {functions} functions",
        f"removed {wrappers} exposed wrappers and {event_triggers} event triggers",
        "roles resilience_user/resilience_admin dropped unless another database still uses them",
    ]


# -- install --print-sql --------------------------------------------------------


def _inline(name: str, *params: Any) -> str:
    """A named query with its parameters as SQL literals (for a script)."""
    text = query(name).as_string(None)
    if params:
        pieces = text.split("%s")
        if len(pieces) != len(params) + 1:
            raise ValueError(f"query {name!r} takes {len(pieces) - 1} parameters")
        text = pieces[0]
        for value, piece in zip(params, pieces[1:], strict=True):
            text += psycopg.sql.Literal(value).as_string(None).strip() + piece
        text = text.replace("%%", "%")
    return text + "\n"


def _revisions() -> list[tuple[str, str | None, str]]:
    """(revision, down_revision, upgrade SQL), oldest first."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(data_path("alembic")))
    scripts = ScriptDirectory.from_config(config)
    chain = list(scripts.walk_revisions("base", "heads"))
    chain.reverse()
    out = []
    for script in chain:
        down = script.down_revision
        assert down is None or isinstance(down, str), "pgresilience revisions form one chain"
        out.append((script.revision, down, script.module.SQL["upgrade"]))
    return out


def print_sql(
    *, expose: str | None = "public", plpython: bool = True, event_triggers: bool = True
) -> str:
    """One SQL script doing what ``install`` does for this target, for
    migration tools that apply SQL files (``supabase/migrations/``): run it in
    one transaction (``psql --single-transaction``; Supabase's CLI does). It
    installs, or upgrades any earlier install, like ``install``: each Alembic
    revision runs when the recorded revision is the one before it."""
    out = [
        f"-- pgresilience {_package_version()}: install or upgrade "
        f"(expose={expose or 'none'}, plpython={'on' if plpython else 'off'}, "
        f"event_triggers={'on' if event_triggers else 'off'}).\n"
        "-- Generated by `pgresilience install --print-sql`; run in one transaction.\n",
        _inline("install_lock"),
        _inline("create_version_table"),
    ]
    for revision, down, upgrade in _revisions():
        step = query("print_sql_revision").format(
            down=psycopg.sql.Literal(down),
            upgrade=psycopg.sql.Literal(upgrade),
            revision=psycopg.sql.Literal(revision),
        )
        out.append(f"-- revision {revision}\n{step.as_string(None)}\n")
    if plpython:
        out += [
            _inline("record_created_extension_if_new", "plpython3u"),
            _inline("create_plpython"),
        ]
    out.append(_inline("probes_begin"))
    out += [probe.rstrip() + ";\n" for probe in release_probes(plpython=plpython)]
    out += [_inline("probes_end"), _inline("drop_stale_functions")]
    files = _sql_files(data_path("sql"))
    derived = [p for p in files if p.stem.startswith("9")]
    out += [_file(path) for path in files if path not in derived]
    if plpython:
        for module in sorted(data_path("plpython").glob("*.py")):
            source = module.read_text(encoding="utf-8")
            digest = hashlib.sha256(source.encode()).hexdigest()
            out.append(_inline("store_plpython_module", module.stem, source, digest))
        out += [_file(path) for path in _sql_files(data_path("sql") / "plpython")]
    if event_triggers:
        out += [_file(path) for path in _sql_files(data_path("sql") / "superuser")]
    out += [_file(path) for path in derived]
    out += [
        _inline("record_release_functions"),
        _inline("drop_probes"),
        _inline("unexpose", expose),
    ]
    if expose:
        out.append(_inline("expose", expose))
    out.append(_inline("baseline"))
    return "\n".join(out)


def _file(path: Path) -> str:
    return f"-- {path.parent.name}/{path.name}\n{path.read_text(encoding='utf-8').rstrip()}\n"


def _package_version() -> str:
    from pgresilience import __version__

    return __version__
