"""Files generated from one source, and the check that they are up to date.

    python scripts/generate.py          # rewrite them
    python scripts/generate.py --check  # exit 1 when one differs (make lint)

* the sync client from its async source (as psycopg does):
  ``_source_aio.py`` -> ``_source.py``, ``transactions/aio.py`` ->
  ``transactions/manager.py``, ``schema/aio.py`` -> ``schema/manager.py``:
  ``async``/``await`` dropped and
  the async names of ``SYNC_NAMES`` renamed, then ruff fixes imports and format;
* docs/errors.md from ``pgresilience.errors.SQLSTATES``;
* docs/cli.md from the command's parser and its exit codes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pgresilience.cli import cli_markdown
from pgresilience.errors import errors_markdown

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python_client" / "pgresilience"

#: async name -> its sync twin (whole words only)
SYNC_NAMES = {
    "AsyncTransactionManager": "TransactionManager",
    "AsyncTransaction": "Transaction",
    "AsyncSchemaVersionManager": "SchemaVersionManager",
    "AsyncConnectionSource": "ConnectionSource",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncConnection": "Connection",
    "AsyncSource": "SyncSource",
    "AsyncIterator": "Iterator",
    "AbstractAsyncContextManager": "AbstractContextManager",
    "asynccontextmanager": "contextmanager",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "ALock": "Lock",
    "AEvent": "Event",
    "aevent_wait": "event_wait",
    "ainvoke": "invoke",
    "ashield": "shield",
    "aspawn": "spawn",
    "aspawn_in_child": "spawn_in_child",
    "astop": "stop",
    "_source_aio": "_source",
}
_NAMES = re.compile(r"\b(" + "|".join(sorted(SYNC_NAMES, key=len, reverse=True)) + r")\b")
_KEYWORDS = re.compile(r"\bawait\s+|\basync\s+(?=def\b|with\b|for\b)")


def _ruff(*args: str, source: str, filename: str) -> str:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"
    done = subprocess.run(
        [ruff, *args, "--stdin-filename", filename, "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff {args[0]} failed on generated {filename}:\n{done.stderr}")
    return done.stdout


def sync_from_async(source: Path, target: Path) -> str:
    text = source.read_text(encoding="utf-8")
    text = _KEYWORDS.sub("", text)
    text = _NAMES.sub(lambda m: SYNC_NAMES[m.group(1)], text)
    header = (
        f"# Generated from {source.name} by scripts/generate.py: do not edit; edit "
        f"{source.name} and run it.\n"
    )
    filename = str(target.relative_to(ROOT))
    text = _ruff("check", "--fix", "--select", "F401,I", source=header + text, filename=filename)
    return _ruff("format", source=text, filename=filename)


GENERATED: dict[str, Callable[[], str]] = {
    "docs/errors.md": errors_markdown,
    "docs/cli.md": cli_markdown,
}
for _source, _target in [
    (PACKAGE / "_source_aio.py", PACKAGE / "_source.py"),
    (PACKAGE / "transactions" / "aio.py", PACKAGE / "transactions" / "manager.py"),
    (PACKAGE / "schema" / "aio.py", PACKAGE / "schema" / "manager.py"),
]:
    GENERATED[str(_target.relative_to(ROOT))] = partial(sync_from_async, _source, _target)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args()
    stale = []
    for name, make in GENERATED.items():
        path = ROOT / name
        text = make()
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"generated files out of date: {', '.join(stale)}; run python scripts/generate.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
