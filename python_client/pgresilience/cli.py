"""The `pgresilience` command: install, uninstall, status, watch, demo.

Errors are one line on stderr with a distinct exit code (``EXIT_CODES``); add
``--debug`` for the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgresilience import __version__
from pgresilience.errors import PgResilienceError, conninfo_problem

__all__ = ["EXIT_CODES", "CliError", "main"]

#: exit code -> what it means (docs/cli.md is generated from this table)
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "any other error (a database error, a failed step): the message says which",
    2: "usage: unknown command or option, no database given, a conninfo or URL that does not "
    "parse, a migration file `plan` cannot read",
    3: "connection: the server refused or could not be reached, authentication failed, "
    "unknown database or role",
    4: "permission: the role lacks a privilege the command needs (the message names it)",
    5: "not installed: `status` found no pgresilience in the database",
    6: "refused: `uninstall` while logical transactions are active or failed (see `--force`)",
}
EXIT_USAGE, EXIT_CONNECTION, EXIT_PERMISSION, EXIT_NOT_INSTALLED, EXIT_REFUSED = 2, 3, 4, 5, 6

#: seconds a connection attempt may take, unless the DSN (connect_timeout) or
#: $PGCONNECT_TIMEOUT says otherwise: a host that accepts the connection and
#: never answers (a hung server or pooler) must not hold the command for
#: psycopg's default of 130 s.
CONNECT_TIMEOUT = 10


class CliError(Exception):
    """A failure the command reports in one line, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _dsn(args: argparse.Namespace) -> str:
    # An empty --dsn (a script's unset variable) is no database, never a reason
    # to fall back on $DATABASE_URL: that may be another, more precious one.
    dsn = args.dsn if args.dsn is not None else os.environ.get("DATABASE_URL")
    if not dsn:
        raise CliError("no database given: use --dsn DSN or set DATABASE_URL", EXIT_USAGE)
    problem = conninfo_problem(dsn)  # parsed here: a typo is a usage error, not a database's
    if problem is not None:
        raise CliError(problem, EXIT_USAGE)
    params = conninfo_to_dict(dsn)
    if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
        return make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT)
    return str(dsn)


def _install(args: argparse.Namespace) -> int:
    from pgresilience.installer import install, print_sql

    expose = None if args.expose == "none" else args.expose
    options = {"plpython": not args.no_plpython, "event_triggers": not args.no_event_triggers}
    if args.print_sql:
        if args.dsn or args.schedule_reaper:
            raise CliError(
                "--print-sql connects to no database: drop --dsn/--schedule-reaper", EXIT_USAGE
            )
        sys.stdout.write(print_sql(expose=expose, **options))
        return 0
    report = install(_dsn(args), expose=expose, schedule_reaper=args.schedule_reaper, **options)
    for line in report.lines():
        print(line)
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    from pgresilience.installer import ActiveTransactions, uninstall

    try:
        lines = uninstall(_dsn(args), force=args.force)
    except ActiveTransactions as exc:
        raise CliError(
            f"{exc}; finish them (a failed one: retry its rollback with force as an admin), "
            "or run again with --force",
            EXIT_REFUSED,
        ) from exc
    for line in lines:
        print(line)
    return 0


def _status(args: argparse.Namespace) -> int:
    from pgresilience.installer import installed_revision
    from pgresilience.status import status_lines

    with psycopg.connect(_dsn(args), autocommit=True, prepare_threshold=None) as conn:
        for line in status_lines(conn):
            print(line)
        return 0 if installed_revision(conn) is not None else EXIT_NOT_INSTALLED


def _watch(args: argparse.Namespace) -> int:
    from pgresilience.schema.watch import watch

    watch(_dsn(args), lambda line: print(line, flush=True))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from pgresilience.schema import plan

    # plan's own exit 1 means "a change at or above --fail-on": a file that
    # cannot be read must not look like that to CI.
    readable = args.file.exists() if args.alembic else args.file.is_file()
    if not readable:
        raise CliError(f"no such migration file: {args.file}", EXIT_USAGE)
    try:
        return plan.run(args, _dsn(args))
    except UnicodeDecodeError as exc:
        raise CliError(f"{args.file} is not UTF-8 text ({exc})", EXIT_USAGE) from exc


def _demo(args: argparse.Namespace) -> int:
    from pgresilience.demo import run_demo

    # Only an explicit --dsn: $DATABASE_URL may be a database that matters.
    run_demo(_dsn(args) if args.dsn else None, lambda line: print(line, flush=True))
    return 0


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[[argparse.Namespace], int]
    help: str
    description: str


COMMANDS = (
    Command(
        "install",
        _install,
        "install or upgrade pgresilience in a database",
        "Install pgresilience into the database, or upgrade it in place: schema "
        "resilience, its tables and functions, roles resilience_user/resilience_admin, "
        "PL/Python and event triggers where the role may create them, and rpc() wrappers "
        "in the exposed schema. One database transaction: all or nothing. Idempotent. "
        "With --print-sql, writes the same install as one SQL script instead (for "
        "supabase/migrations/ or psql --single-transaction).",
    ),
    Command(
        "uninstall",
        _uninstall,
        "remove everything install created",
        "Remove schema resilience, the exposed wrappers, the event triggers and, when no "
        "other database uses them, the roles. Refuses while logical transactions are "
        "active, whose half-done writes would stay, or failed, whose images are the only "
        "record of rows their rollback never restored; --force rolls the active ones back "
        "first and drops the failed ones' images.",
    ),
    Command(
        "status",
        _status,
        "show what is installed and running",
        "Show the installed revision, the objects, PL/Python, event triggers, roles, "
        "active logical transactions, schema versions and shared circuits. Exits 5 when "
        "pgresilience is not installed in the database.",
    ),
    Command(
        "watch",
        _watch,
        "print schema changes live",
        "Print every schema version as its migration commits, with its changes and their "
        "severities, until interrupted.",
    ),
    Command(
        "plan",
        _plan,
        "run a migration, print its rated changes, roll back (CI gate)",
        "Run a migration for real in one transaction (a SQL file, or `alembic upgrade "
        "head` with --alembic), print the changes it makes with their severities, and roll "
        "back. Its own exit codes: 0 below --fail-on, 1 at or above it, 2 when the migration "
        "itself fails.",
    ),
    Command(
        "demo",
        _demo,
        "run every feature on a throwaway PostgreSQL (or --dsn)",
        "Run every feature step by step. Without --dsn, on an embedded temporary "
        "PostgreSQL removed at the end ($DATABASE_URL is ignored). With --dsn, in that "
        "database, removing afterwards everything the demo created (and pgresilience "
        "itself when it was not installed before).",
    ),
)


def _formatter(prog: str) -> argparse.HelpFormatter:
    # A fixed width: help (and docs/cli.md) must not depend on the terminal.
    return argparse.HelpFormatter(prog, width=88)


def parser() -> argparse.ArgumentParser:
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    top = argparse.ArgumentParser(
        prog="pgresilience",
        formatter_class=_formatter,
        description="Postgres-native reliability toolkit: logical transactions across RPC "
        "calls, schema version tracking, circuit breakers.",
        epilog="exit codes: "
        + "; ".join(f"{code} {text.split(':')[0]}" for code, text in EXIT_CODES.items()),
    )
    top.add_argument("--version", action="version", version=f"pgresilience {__version__}")
    top.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs = {}
    for command in COMMANDS:
        sub = subs[command.name] = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            formatter_class=_formatter,
        )
        sub.add_argument(
            "--dsn",
            help="conninfo or URL (default: $DATABASE_URL); connecting gives up after "
            f"{CONNECT_TIMEOUT} s unless it sets connect_timeout (or $PGCONNECT_TIMEOUT does)",
        )
        # No default of its own: the subcommand's would override `pgresilience --debug CMD`.
        sub.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks on errors",
        )
        sub.set_defaults(handler=command.handler)
        if command.name == "install":
            sub.add_argument(
                "--expose",
                default="public",
                metavar="SCHEMA|none",
                help="schema for the rpc() wrappers (default: public; none for no wrappers)",
            )
            sub.add_argument(
                "--schedule-reaper",
                metavar="SCHEDULE",
                help="run resilience.tx_reap() from pg_cron on this schedule: cron syntax "
                "('* * * * *'), or '10 seconds' on pg_cron >= 1.5",
            )
            sub.add_argument(
                "--no-plpython",
                action="store_true",
                help="do not install PL/Python (schema diffs are then computed by the client)",
            )
            sub.add_argument(
                "--no-event-triggers",
                action="store_true",
                help="do not create event triggers (DDL tracked by schema_refresh() calls)",
            )
            sub.add_argument(
                "--print-sql",
                action="store_true",
                help="write one SQL script doing this install (or upgrade) to stdout instead, "
                "for supabase/migrations/; no database is contacted",
            )
        if command.name == "plan":
            from pgresilience.schema.plan import add_arguments

            add_arguments(sub)
        if command.name == "uninstall":
            sub.add_argument(
                "--force",
                action="store_true",
                help="roll back active logical transactions first (their writes are undone); "
                "drop failed ones' images",
            )
    return top, subs


def _psycopg_error(exc: BaseException) -> psycopg.Error | None:
    """The psycopg error behind ``exc`` (SQLAlchemy wraps it as ``.orig``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, psycopg.Error):
            return seen
        orig = getattr(seen, "orig", None)
        seen = orig if isinstance(orig, BaseException) else seen.__cause__
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def classify(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line message for an error."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    db_error = _psycopg_error(exc)
    if db_error is not None:
        diag = db_error.diag
        message = _one_line(diag.message_primary or str(db_error) or type(db_error).__name__)
        if isinstance(db_error, psycopg.OperationalError) and db_error.sqlstate is None:
            return EXIT_CONNECTION, f"cannot connect to the database: {message}"
        if db_error.sqlstate in ("28000", "28P01", "3D000"):
            return EXIT_CONNECTION, f"cannot connect to the database: {message}"
        if db_error.sqlstate == "42501":
            hint = f" ({_one_line(diag.message_hint)})" if diag.message_hint else ""
            return EXIT_PERMISSION, f"permission denied: {message}{hint}"
        return 1, f"{message} (SQLSTATE {db_error.sqlstate})"
    if isinstance(exc, PgResilienceError):
        return 1, _one_line(str(exc))
    return 1, _one_line(f"{type(exc).__name__}: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of the output went away (`| head`): nothing is wrong with
        # the command. Stdout goes to /dev/null so that Python's own flush at
        # exit does not fail on the pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        code, message = classify(exc)
        if args.debug:
            traceback.print_exc()
        print(f"pgresilience {args.command}: {message}", file=sys.stderr)
        return code
    return code


def cli_markdown() -> str:
    """docs/cli.md, generated from the parser and ``EXIT_CODES``."""
    top, subs = _parsers()
    lines = [
        "# The `pgresilience` command",
        "",
        "<!-- Generated from pgresilience.cli by scripts/generate.py; do not edit. -->",
        "",
        "```text",
        top.format_help().strip(),
        "```",
        "",
    ]
    for name, sub in subs.items():
        lines += [f"## `pgresilience {name}`", "", "```text", sub.format_help().strip(), "```", ""]
    lines += ["## Exit codes", "", "| code | meaning |", "|---|---|"]
    lines += [f"| {code} | {text} |" for code, text in EXIT_CODES.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
