"""The committed stubs must be what `make proto` generates from proto/."""

from __future__ import annotations

import pytest

import escriba.common.protogen as protogen


@pytest.mark.timeout(120)
def test_generated_stubs_are_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    assert protogen.main(["--check"]) == 0, capsys.readouterr().err


@pytest.mark.timeout(120)
def test_check_detects_a_stale_stub(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = protogen.generate(tmp_path)
    stale = fresh / "common_pb2.py"
    stale.write_text(stale.read_text() + "\n# edited by hand\n")
    monkeypatch.setattr(protogen, "OUT_PACKAGE", fresh)
    assert protogen.main(["--check"]) == 1
