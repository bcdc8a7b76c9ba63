"""The pipeline's stages: one name shared by the bus (consumers, subjects), the task table and metrics."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """A pipeline stage; its value is the name of its durable consumer and of its stage results."""

    PREPROCESS = "preprocess"
    TRANSCRIPTION = "transcription"
    CORRECTION = "correction"
