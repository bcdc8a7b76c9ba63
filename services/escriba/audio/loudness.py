"""Loudness normalization by measurement and gain, with a look-ahead peak limiter.

FFmpeg's ``loudnorm`` filter takes about 6 s on a 5-minute file because it runs a dynamic,
true-peak, 192 kHz process. Speech recognition needs only a consistent level, so this module
measures the integrated loudness once (ITU-R BS.1770-4: K-weighting, 400 ms blocks with 75 %
overlap, absolute gate at -70 LUFS, relative gate 10 LU below) and applies one static gain. When
that gain would push peaks over the ceiling, a limiter lowers just the samples around those peaks
instead of the whole gain, so the result still sits on the target (as ``loudnorm`` does) rather than
several LU under it. Everything is vectorised numpy/scipy: tens of milliseconds for 5 minutes.

Both steps also run on a stream of chunks, for recordings of hours: :class:`LoudnessMeter` keeps
only the K-weighted energy of each 100 ms hop (80 bytes a second of audio), and
:func:`limit_window` limits one chunk given a little audio on either side (the limiter only ever
looks :data:`LIMITER_CONTEXT_S` around a sample), so the result is what the whole-array functions
give, up to float rounding.

Peaks are sample peaks of the 16 kHz output (what is stored and transcribed), not oversampled true
peaks. Silence (everything under the absolute gate) has no defined loudness: it gets no gain and
is reported as silent rather than amplified towards infinity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage, signal

ABSOLUTE_GATE_LUFS: Final = -70.0
_RELATIVE_GATE_LU: Final = -10.0
_OFFSET: Final = -0.691  # BS.1770: makes a 1 kHz sine at 0 dBFS read -3.01 LUFS
_BLOCK_HOPS: Final = 4  # a 400 ms block is four 100 ms hops (75 % overlap)
_CHUNK_HOPS: Final = 600  # filter a minute at a time so long files never need a float64 copy

# Limiter shape: the gain reaches its minimum _ATTACK_S before a peak (look-ahead), holds for
# _HOLD_S after it, and ramps over 2 * _ATTACK_S at both ends.
_ATTACK_S: Final = 0.005
_HOLD_S: Final = 0.040
# Half a 16-bit step under the ceiling, so rounding to 16-bit can never land above it.
_QUANTIZATION_MARGIN: Final = 2.0**-16
_MAX_PASSES: Final = 4
_TOLERANCE_LU: Final = 0.1
_MAX_MAKEUP_DB: Final = 6.0


@dataclass(frozen=True, slots=True)
class Normalized:
    samples: npt.NDArray[np.float32]
    input_lufs: float  # -inf for silence
    output_lufs: float
    gain_db: float  # the static gain applied (0 for silence)
    limiter_reduction_db: float  # the deepest gain reduction of the limiter (0 when it did nothing)

    @property
    def silent(self) -> bool:
        return not math.isfinite(self.input_lufs)


def db_to_linear(db: float) -> float:
    return float(10.0 ** (db / 20.0))


@cache
def _k_weighting(rate: int) -> npt.NDArray[np.float64]:
    """BS.1770 K-weighting (shelf then high-pass) as second-order sections for ``rate``.

    The analog prototype is the one libebur128 and FFmpeg's ebur128 use; at 48 kHz it reproduces the
    coefficients tabulated in BS.1770, and it is re-derived (bilinear, pre-warped) for other rates.
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / q + k * k) / a0,
    ]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def _to_lufs(mean_square: float | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with np.errstate(divide="ignore"):
        return np.asarray(_OFFSET + 10.0 * np.log10(mean_square), dtype=np.float64)


def integrated_loudness(samples: npt.NDArray[np.floating], rate: int) -> float:
    """BS.1770-4 integrated loudness of mono ``samples`` in LUFS; ``-inf`` when all of it is gated.

    A clip shorter than one 400 ms block is measured as a single block over its whole length
    (BS.1770 defines no block for it; this keeps very short uploads usable).
    """
    meter = LoudnessMeter(rate)
    meter.add(samples)
    return meter.loudness()


class LoudnessMeter:
    """Integrated loudness of mono audio that arrives in chunks of any size.

    The gates need every block of the recording, so the measurement is two-pass by nature; what it
    keeps between chunks is the filter state, the energy of each complete 100 ms hop and the
    unfinished hop, never the audio (only a clip still shorter than one block is kept, to measure
    it whole).
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._hop = round(rate * 0.1)
        self._sos = _k_weighting(rate)
        self._state = np.zeros((self._sos.shape[0], 2), dtype=np.float64)
        self._partial = np.zeros(0, dtype=np.float64)  # K-weighted samples of the unfinished hop
        self._energy = np.zeros(1024, dtype=np.float64)  # of each complete hop; grows by doubling
        self._hops = 0
        self._head: list[npt.NDArray[np.float64]] | None = []  # the raw audio while under one block
        self.samples = 0

    def add(self, samples: npt.NDArray[np.floating]) -> None:
        x = np.asarray(samples).reshape(-1)
        step = _CHUNK_HOPS * self._hop  # never a float64 copy of more than a minute
        for start in range(0, x.size, step):
            self._add(x[start : start + step].astype(np.float64))

    def _add(self, chunk: npt.NDArray[np.float64]) -> None:
        self.samples += chunk.size
        if self._head is not None:
            self._head.append(chunk)
            if self.samples >= _BLOCK_HOPS * self._hop:
                self._head = None
        weighted, self._state = signal.sosfilt(self._sos, chunk, zi=self._state)
        if self._partial.size:
            weighted = np.concatenate((self._partial, weighted))
        whole = weighted.size - weighted.size % self._hop
        if whole:
            hops = weighted[:whole].reshape(-1, self._hop)
            end = self._hops + hops.shape[0]
            if end > self._energy.size:
                grown = np.zeros(max(end, 2 * self._energy.size), dtype=np.float64)
                grown[: self._hops] = self._energy[: self._hops]
                self._energy = grown
            self._energy[self._hops : end] = np.einsum("ij,ij->i", hops, hops)
            self._hops = end
        self._partial = weighted[whole:].copy()

    def loudness(self) -> float:
        """LUFS of everything added so far; ``-inf`` when all of it is gated (or nothing was added)."""
        if self._head is not None:
            if self.samples == 0:
                return -math.inf
            weighted = signal.sosfilt(self._sos, np.concatenate(self._head))
            loudness = float(_to_lufs(float(np.mean(weighted * weighted))))
            return loudness if loudness > ABSOLUTE_GATE_LUFS else -math.inf
        energy = self._energy[: self._hops]
        blocks = (energy[:-3] + energy[1:-2] + energy[2:-1] + energy[3:]) / (_BLOCK_HOPS * self._hop)
        block_lufs = _to_lufs(blocks)
        above_absolute = block_lufs > ABSOLUTE_GATE_LUFS
        if not above_absolute.any():
            return -math.inf
        relative_gate = float(_to_lufs(float(blocks[above_absolute].mean()))) + _RELATIVE_GATE_LU
        kept = blocks[above_absolute & (block_lufs > relative_gate)]
        return float(_to_lufs(float(kept.mean())))


def limit_peaks(
    samples: npt.NDArray[np.float32], ceiling: float, rate: int
) -> tuple[npt.NDArray[np.float32], float]:
    """Keep ``|samples| <= ceiling`` with a smooth gain envelope; return it and the deepest cut in dB.

    The envelope is built without a per-sample loop: the gain each sample needs (``ceiling / |x|``,
    at most 1), a running minimum over a window reaching ``attack + hold`` back and ``attack``
    ahead, then a moving average over ``±attack``. Every value in that average window is a minimum
    over a range that includes the sample itself, so the smoothed gain never exceeds the gain the
    sample needs: the ceiling holds exactly, with ramps instead of clicks. Only the stretches
    around samples over the ceiling are processed; the gain is exactly 1 everywhere else.
    """
    over = np.flatnonzero(np.abs(samples) > ceiling)
    if over.size == 0:
        return samples, 0.0
    attack = max(1, round(_ATTACK_S * rate))
    hold = round(_HOLD_S * rate)
    size = 2 * attack + hold + 1  # covers [n - attack - hold, n + attack]
    origin = attack + hold - size // 2  # scipy: a positive origin moves the window back in time
    reach = size + attack  # how far from a peak the smoothed gain can differ from 1
    # Stretches of peaks closer than twice the reach share one envelope.
    breaks = np.flatnonzero(np.diff(over) > 2 * reach)
    starts = np.maximum(np.concatenate(([over[0]], over[breaks + 1])) - reach, 0)
    ends = np.minimum(np.concatenate((over[breaks], [over[-1]])) + reach + 1, samples.size)
    limited = samples.copy()
    deepest = 1.0
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        stretch = samples[start:end]
        needed = np.minimum(
            np.float32(1.0), np.float32(ceiling) / np.maximum(np.abs(stretch), np.float32(1e-30))
        )
        envelope = ndimage.minimum_filter1d(needed, size=size, origin=origin, mode="nearest")
        gain = ndimage.uniform_filter1d(envelope, size=2 * attack + 1, mode="nearest")
        # The moving average is exact up to float32 rounding; clip away that last ulp.
        limited[start:end] = np.clip(stretch * gain, -ceiling, ceiling)
        deepest = min(deepest, float(needed.min()))
    return limited, -20.0 * math.log10(deepest)


def limiter_context(rate: int) -> int:
    """Samples of audio :func:`limit_window` needs on each side of a chunk to limit it as the whole
    recording would be: twice the farthest a peak's envelope reaches, so a stretch of peaks cut at a
    window's edge never changes the gain inside the chunk."""
    attack = max(1, round(_ATTACK_S * rate))
    size = 2 * attack + round(_HOLD_S * rate) + 1
    return 2 * (size + attack)


def limit_window(
    window: npt.NDArray[np.float32], ceiling: float, rate: int, *, lead: int, length: int
) -> tuple[npt.NDArray[np.float32], float]:
    """:func:`limit_peaks` of the chunk ``window[lead : lead + length]``, given the audio around it.

    ``lead`` and what follows the chunk are up to :func:`limiter_context` samples of its neighbours
    (less only at the start and end of the recording). The deepest cut counts every peak in the
    window, neighbours' included: a global minimum is the same whichever chunk sees it first.
    """
    limited, reduction = limit_peaks(window, ceiling, rate)
    return limited[lead : lead + length], reduction


@dataclass(frozen=True, slots=True)
class Levels:
    """What a normalization did, without the audio (a streamed one wrote it elsewhere)."""

    input_lufs: float  # -inf for silence
    output_lufs: float
    gain_db: float
    limiter_reduction_db: float


#: One pass of a normalization at a gain (dB; ``None``: silence, no gain): it limits the audio,
#: writes it where the result goes, and returns the output loudness and the deepest limiter cut.
LimitPass = Callable[[float | None], tuple[float, float]]


def search_gain(input_lufs: float, *, target_lufs: float, run_pass: LimitPass) -> Levels:
    """The static gain that brings the audio to ``target_lufs`` after limiting.

    If limiting pulls the loudness under the target, the gain is raised and the limiter re-run (a
    few passes, stepping by the measured loudness-per-dB slope, at most ``_MAX_MAKEUP_DB`` extra),
    as a mastering limiter's make-up gain would. The last pass run is the result.
    """
    if not math.isfinite(input_lufs):
        output_lufs, reduction = run_pass(None)
        return Levels(input_lufs, output_lufs, 0.0, reduction)
    base_gain = target_lufs - input_lufs
    gain_db, slope = base_gain, 1.0
    previous: tuple[float, float] | None = None
    for attempt in range(1, _MAX_PASSES + 1):
        output_lufs, reduction = run_pass(gain_db)
        shortfall = target_lufs - output_lufs
        if reduction == 0.0 or shortfall <= _TOLERANCE_LU or attempt == _MAX_PASSES:
            break
        if gain_db - base_gain >= _MAX_MAKEUP_DB:
            break
        if previous is not None and gain_db != previous[0]:
            # Under limiting, loudness grows slower than the gain: step by the measured slope.
            slope = min(1.0, max(0.2, (output_lufs - previous[1]) / (gain_db - previous[0])))
        previous = (gain_db, output_lufs)
        gain_db = min(gain_db + shortfall / slope, base_gain + _MAX_MAKEUP_DB)
    return Levels(input_lufs, output_lufs, gain_db, reduction)


def peak_ceiling(ceiling_dbfs: float) -> float:
    """The linear sample ceiling of ``ceiling_dbfs``, kept clear of 16-bit rounding."""
    return db_to_linear(ceiling_dbfs) - _QUANTIZATION_MARGIN


def apply_gain(samples: npt.NDArray[np.float32], gain_db: float | None) -> npt.NDArray[np.float32]:
    if gain_db is None:
        return samples
    return (samples * np.float32(db_to_linear(gain_db))).astype(np.float32, copy=False)


def normalize_loudness(
    samples: npt.NDArray[np.float32], rate: int, *, target_lufs: float, ceiling_dbfs: float
) -> Normalized:
    """Gain ``samples`` to ``target_lufs`` with sample peaks at most ``ceiling_dbfs`` (see
    :func:`search_gain`)."""
    ceiling = peak_ceiling(ceiling_dbfs)
    result: list[npt.NDArray[np.float32]] = []

    def run_pass(gain_db: float | None) -> tuple[float, float]:
        limited, reduction = limit_peaks(apply_gain(samples, gain_db), ceiling, rate)
        result[:] = [limited]
        return integrated_loudness(limited, rate), reduction

    levels = search_gain(integrated_loudness(samples, rate), target_lufs=target_lufs, run_pass=run_pass)
    return Normalized(
        result[0], levels.input_lufs, levels.output_lufs, levels.gain_db, levels.limiter_reduction_db
    )
