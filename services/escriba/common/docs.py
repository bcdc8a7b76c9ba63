"""Keep the README's settings table generated from the code (``make docs``; a test checks it)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from escriba.common.settings import describe

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"

SETTINGS_MODULES = (
    "escriba.common.grpc_server",
    "escriba.bus.settings",
    "escriba.db.settings",
    "escriba.pipeline.settings",
    "escriba.gateway.settings",
    "escriba.preprocess.settings",
    "escriba.transcription.settings",
    "escriba.correction.settings",
    "escriba.cli",
    "escriba_operator.settings",
)


def load_all_settings() -> None:
    """Import every module that declares settings, so the registry is complete."""
    for name in SETTINGS_MODULES:
        importlib.import_module(name)


def settings_markdown(rows: Sequence[tuple[str, str, str]]) -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for variable, default, doc in rows:
        shown = f"`{default}`" if default else "(empty)"
        lines.append(f"| `{variable}` | {shown} | {doc.replace('|', '/')} |")
    return "\n".join(lines)


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
