"""``python -m tests.faults [pytest args]``: run the fault suite and print its summary line.

Exits non-zero when a scenario failed or any task was lost or duplicated (see conftest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    return int(pytest.main([str(here), "-p", "no:cacheprovider", *argv]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
