"""Keep the README's settings table generated from the code (``make docs``; a unit test checks it).

A development tool, not part of the installed services: it writes the repository's README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from escriba.common.settings import describe
from escriba.settings_catalog import load_all_settings, settings_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"


def render(readme: str) -> str:
    load_all_settings()
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{settings_markdown(describe())}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the README table is stale")
    args = parser.parse_args(argv)
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if current != wanted:
            print("README.md settings table is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
