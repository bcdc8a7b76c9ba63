"""The README's settings table is generated from the code and kept current."""

from __future__ import annotations

import escriba.common.docs as docs
from escriba.common.settings import describe


def test_readme_settings_table_is_current() -> None:
    assert docs.main(["--check"]) == 0, "run `make docs`"


def test_every_setting_is_documented_with_a_unit_or_meaning() -> None:
    docs.load_all_settings()
    rows = describe()
    assert len(rows) > 50
    for variable, _, doc in rows:
        assert variable.startswith("ESCRIBA_")
        assert len(doc) > 10, variable
