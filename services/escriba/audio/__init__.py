"""Audio domain code: decode anything to 16 kHz mono, normalize loudness, read and write canonical PCM.

Pure domain: PyAV, numpy and scipy only, no transport. The preprocess engine composes these steps;
transcription and the pipeline use :mod:`escriba.audio.pcm` to read the canonical audio back.
"""

from escriba.audio.decode import DecodedAudio, SourceInfo, decode_audio
from escriba.audio.loudness import Normalized, integrated_loudness, limit_peaks, normalize_loudness
from escriba.audio.pcm import SAMPLE_RATE_HZ, Encoding, decode_pcm, encode_pcm

__all__ = [
    "SAMPLE_RATE_HZ",
    "DecodedAudio",
    "Encoding",
    "Normalized",
    "SourceInfo",
    "decode_audio",
    "decode_pcm",
    "encode_pcm",
    "integrated_loudness",
    "limit_peaks",
    "normalize_loudness",
]
