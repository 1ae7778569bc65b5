"""The `pgresilience` command: install, uninstall, status, watch, demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import psycopg

from pgresilience.errors import PgResilienceError

__all__ = ["main"]


def _dsn(args: argparse.Namespace) -> str:
    dsn = args.dsn or os.environ.get("DATABASE_URL")
    if not dsn:
        raise SystemExit("pgresilience: no database given: use --dsn DSN or set DATABASE_URL")
    return str(dsn)


def _install(args: argparse.Namespace) -> None:
    from pgresilience.installer import install

    expose = None if args.expose == "none" else args.expose
    report = install(_dsn(args), expose=expose, schedule_reaper=args.schedule_reaper)
    for line in report.lines():
        print(line)


def _uninstall(args: argparse.Namespace) -> None:
    from pgresilience.installer import uninstall

    for line in uninstall(_dsn(args)):
        print(line)


def _status(args: argparse.Namespace) -> None:
    from pgresilience.status import status_lines

    with psycopg.connect(_dsn(args), autocommit=True) as conn:
        for line in status_lines(conn):
            print(line)


def _watch(args: argparse.Namespace) -> None:
    from pgresilience.schema.watch import watch

    watch(_dsn(args), lambda line: print(line, flush=True))


def _plan(args: argparse.Namespace) -> None:
    from pgresilience.schema import plan

    raise SystemExit(plan.run(args, _dsn(args)))


def _demo(args: argparse.Namespace) -> None:
    from pgresilience.demo import run_demo

    run_demo(args.dsn, lambda line: print(line, flush=True))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgresilience", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, help_text in (
        ("install", _install, "install or upgrade pgresilience in a database"),
        ("uninstall", _uninstall, "remove everything install created"),
        ("status", _status, "show what is installed and running"),
        ("watch", _watch, "print schema changes live"),
        ("plan", _plan, "run a migration, print its rated changes, roll back (CI gate)"),
        ("demo", _demo, "run every feature on an embedded PostgreSQL (or --dsn)"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--dsn", help="conninfo or URL (default: $DATABASE_URL)")
        sub.set_defaults(handler=handler)
        if name == "plan":
            from pgresilience.schema.plan import add_arguments

            add_arguments(sub)
        if name == "install":
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except (PgResilienceError, psycopg.Error) as exc:
        print(f"pgresilience: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
