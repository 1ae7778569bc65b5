"""Files generated from one source, and the check that they are up to date.

    python scripts/generate.py          # rewrite them
    python scripts/generate.py --check  # exit 1 when one differs (make lint)

* docs/errors.md from ``pgresilience.errors.SQLSTATES``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pgresilience.errors import errors_markdown

ROOT = Path(__file__).resolve().parents[1]

GENERATED: dict[str, Callable[[], str]] = {
    "docs/errors.md": errors_markdown,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
