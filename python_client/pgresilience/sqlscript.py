"""SQL files as statements, and the release's function definitions.

Upgrades must drop the functions a release no longer defines, or defines with
another signature, before ``CREATE OR REPLACE`` re-creates them (DESIGN.md,
"Upgrades"). PostgreSQL itself says what a definition's signature is: each
``create ... function resilience.NAME`` statement of the release is run once
more as ``pg_temp.NAME`` with body checks off (a *probe*), and the
``drop_stale_functions`` query compares the probes with the installed
functions. The same probes serve ``install`` and ``install --print-sql``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["function_probe", "statements"]

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_DEFINITION = re.compile(
    # One whitespace character per repetition: `\s+` inside `*` backtracks
    # exponentially on a long run of blank lines that is not a definition.
    r"^((?:\s|--[^\n]*\n|/\*.*?\*/)*create\s+(?:or\s+replace\s+)?(?:function|procedure)\s+)"
    r"resilience\.",
    re.IGNORECASE | re.DOTALL,
)


def statements(text: str) -> Iterator[str]:
    """The statements of a SQL file, each with its leading comments and
    without its ``;`` (quotes, dollar quotes and comments understood)."""
    start = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == "'" or c == '"':
            backslash = c == "'" and i > 0 and text[i - 1] in "eE"
            i += 1
            while i < n:
                if backslash and text[i] == "\\":
                    i += 2
                    continue
                if text[i] == c:
                    if text.startswith(c, i + 1):  # doubled quote
                        i += 2
                        continue
                    break
                i += 1
            i += 1
        elif c == "$" and (m := _DOLLAR.match(text, i)) and not _in_word(text, i):
            end = text.find(m.group(0), m.end())
            i = n if end < 0 else end + len(m.group(0))
        elif c == ";":
            if text[start:i].strip():
                yield text[start:i]
            start = i = i + 1
        else:
            i += 1
    if _meaningful(text[start:]):
        yield text[start:]


def _in_word(text: str, i: int) -> bool:
    # "$1" positional parameters and identifiers like a$b are not dollar quotes.
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def _meaningful(text: str) -> bool:
    stripped = re.sub(r"--[^\n]*|/\*.*?\*/", "", text, flags=re.DOTALL)
    return bool(stripped.strip())


def function_probe(statement: str) -> str | None:
    """The statement defining the same function in ``pg_temp``, or None when
    it defines no function of schema ``resilience``."""
    match = _DEFINITION.match(statement)
    if match is None:
        return None
    return match.group(1) + "pg_temp." + statement[match.end() :]
