"""The severity table of docs/schema_tracking.md, rendered from the diff
module's rules (``schema_diff.RULES``, the one source of severities).

Regenerate the docs after changing a rule::

    python -m pgresilience.schema.severity_doc [docs/schema_tracking.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

from pgresilience.schema import diff

__all__ = ["render_table", "with_table"]

START, END = "<!-- severity-table:start -->", "<!-- severity-table:end -->"


def render_table() -> str:
    """The markdown table, one row per rule, in rule order."""
    lines = ["| change type | situation | severity | rule source |", "|---|---|---|---|"]
    for rule in diff.module().SEVERITY_RULES:
        lines.append(f"| `{rule.type}` | {rule.situation} | **{rule.severity}** | {rule.source} |")
    return "\n".join(lines)


def with_table(text: str) -> str:
    """``text`` with the part between the severity-table markers replaced."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest or not tail and END not in rest:
        raise ValueError("severity-table markers not found")
    return f"{head}{START}\n{render_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "docs/schema_tracking.md")
    path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()
