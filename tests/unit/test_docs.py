"""The README's settings table is generated from the code and kept current."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from escriba.common.settings import describe
from escriba.settings_catalog import load_all_settings

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "readme_settings.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_settings", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_settings_table_is_current() -> None:
    assert _script().main(["--check"]) == 0, "run `make docs`"


def test_every_setting_is_documented_with_a_unit_or_meaning() -> None:
    load_all_settings()
    rows = describe()
    assert len(rows) > 50
    for variable, _, doc in rows:
        assert variable.startswith("ESCRIBA_")
        assert len(doc) > 10, variable
