"""Fuzz the audio entry points: whatever the bytes, only Escriba's own errors come out.

Preprocessor.run (decode, resample, mixdown, loudness, encode) and decode_pcm (the canonical reader the
one-off TranscriptionService call uses on caller bytes) see uploads nobody checked. Any exception outside
:class:`EscribaError` would surface as an INTERNAL status or a retried, then "internal", task instead of
a reason the uploader can act on. Inputs: random bytes, real files of every format with bytes flipped,
cut, inserted or repeated, and WAV headers with extreme fields (rates up to 2^32-1 Hz, 0 or 65535
channels, odd sample widths and format codes).

Bounded and deterministic by default (``derandomize``); ``FUZZ_EXAMPLES=5000`` explores further and
``FUZZ_RANDOM=1`` draws other examples on each run.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from escriba.audio.pcm import decode_pcm
from escriba.common.errors import EscribaError
from escriba.preprocess.engine import Preprocessor
from escriba.preprocess.settings import PreprocessSettings
from tests.support import media

F = TypeVar("F", bound=Callable[..., Any])
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "250"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ENGINE = Preprocessor(PreprocessSettings(max_duration_s=30.0, max_input_bytes=2 * 1024 * 1024))

pytestmark = pytest.mark.timeout(600)


@cache
def seeds() -> dict[str, bytes]:
    """One short clip of real speech in every format the decoder reads (made once per session)."""
    samples, rate = media.speech()
    clip = samples[:, :rate]
    made = {name: encode(clip, rate) for name, encode in media.FORMATS.items()}
    made["8-channel wav"] = media.to_wav(media.one_sided(clip.mean(axis=0), 8, 3), rate)
    return made


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(seeds())))
    data = bytearray(seeds()[name])
    for _ in range(draw(st.integers(1, 8))):
        operation = draw(st.sampled_from(["flip", "overwrite", "cut", "insert", "repeat", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "overwrite":
            data[at : at + 4] = draw(st.binary(min_size=4, max_size=4))
        elif operation == "cut":
            del data[at : at + draw(st.integers(1, 4096))]
        elif operation == "insert":
            data[at:at] = draw(st.binary(max_size=64))
        elif operation == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 512))]
        else:
            del data[at:]
    return bytes(data)


def wav(
    format_code: int,
    channels: int,
    rate: int,
    byte_rate: int,
    align: int,
    bits: int,
    declared: int,
    body: bytes,
) -> bytes:
    fmt = struct.pack("<HHIIHH", format_code, channels, rate, byte_rate, align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(body))
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", declared)
        + body
    )


@st.composite
def wav_headers(draw: st.DrawFn) -> bytes:
    # Extremes are drawn often on purpose: independent uniform draws would almost never combine a valid
    # layout with an absurd rate.
    return wav(
        draw(st.sampled_from([1, 3, 6, 7, 0xFFFE]) | st.integers(0, 0xFFFF)),
        draw(st.sampled_from([1, 2, 8, 0, 64, 0xFFFF]) | st.integers(0, 0xFFFF)),
        draw(
            st.sampled_from([0, 1, 7, 8000, 384_000, 10**9, 2**31 - 1, 2**31, 2**32 - 1])
            | st.integers(0, 2**32 - 1)
        ),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.sampled_from([0, 1, 2, 4, 16]) | st.integers(0, 0xFFFF)),
        draw(st.sampled_from([0, 8, 16, 24, 32, 64]) | st.integers(0, 0xFFFF)),
        draw(st.sampled_from([0, 2**32 - 1]) | st.integers(0, 2**32 - 1)),
        draw(st.binary(max_size=4096)),
    )


UPLOADS = st.one_of(mutated(), wav_headers(), st.binary(max_size=4096))


def flac_with_undecodable_tag() -> bytes:
    samples, rate = media.speech()
    flac = media.to_flac(samples[:1, :rate], rate)
    at = flac.index(b"encoder=") + len(b"encoder=")
    return flac[:at] + b"\x80" + flac[at + 1 :]


#: What the fuzz found once, kept as fixed examples: a WAV claiming 2^31 Hz (MemoryError from the
#: resampler), a FLAC whose tag is not UTF-8 (UnicodeDecodeError), a WAV chunk running past the end
#: (RuntimeError from the standard library's parser).
FOUND = (
    wav(1, 1, 2**31 - 1, 0, 2, 16, 8000, bytes(8000)),
    flac_with_undecodable_tag(),
    wav(1, 1, 16000, 32000, 2, 16, 10**6, b"xx").replace(b"data", b"junk"),
    b"",
)


def with_examples(test: F) -> F:
    for data in FOUND:
        test = example(data)(test)
    return test


def only_escriba_errors(call: object, *args: object, **kwargs: object) -> None:
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except EscribaError as exc:
        assert exc.reason and exc.message, exc
    except Exception as exc:  # pragma: no cover - this is what the fuzz is looking for
        pytest.fail(f"{type(exc).__name__} escaped: {exc!r}")


@FUZZ
@with_examples
@given(UPLOADS)
def test_preprocess_raises_only_escriba_errors(data: bytes) -> None:
    only_escriba_errors(ENGINE.run, data, filename="fuzz")


@FUZZ
@with_examples
@given(UPLOADS | st.builds(lambda b: b"fLaC" + b, st.binary(max_size=2048)))
def test_canonical_reader_raises_only_escriba_errors(data: bytes) -> None:
    only_escriba_errors(decode_pcm, data, max_duration_s=30.0)
