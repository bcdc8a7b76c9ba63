"""The preprocess stage: decode any upload, resample to 16 kHz mono (the signal kept as recorded), hash.

:class:`Preprocessor` is the engine both transports share; the audio work itself is the domain code
in :mod:`escriba.audio`.
"""

from escriba.preprocess.engine import (
    PIPELINE_VERSION,
    PreprocessInfo,
    Preprocessor,
    PreprocessResult,
    sha256_file,
)
from escriba.preprocess.settings import PreprocessSettings

__all__ = [
    "PIPELINE_VERSION",
    "PreprocessInfo",
    "PreprocessResult",
    "PreprocessSettings",
    "Preprocessor",
    "sha256_file",
]
