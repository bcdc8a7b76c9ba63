"""Every module that declares settings, so ``escriba settings`` and the README list all of them.

Settings register themselves when their module is imported; a process imports only what it runs, so
the full list needs each module named here (a test fails when a declared setting is missing).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

SETTINGS_MODULES = (
    "escriba.common.grpc_server",
    "escriba.common.outbound",
    "escriba.models",
    "escriba.bus.settings",
    "escriba.db.settings",
    "escriba.pipeline.settings",
    "escriba.gateway.settings",
    "escriba.preprocess.settings",
    "escriba.transcription.settings",
    "escriba.correction.settings",
    "escriba.webhooks.settings",
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
