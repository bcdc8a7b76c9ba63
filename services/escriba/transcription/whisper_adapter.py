"""Every use of faster-whisper's internals, in one place.

The batched paths (cross-task and per-request) do what ``BatchedInferencePipeline.transcribe`` does,
split so that a request's windows can share model calls with other requests and so that a failing window
can go back at a higher temperature: :func:`prepare_request` (VAD, mel features, language, prompt),
:class:`WhisperBatchRunner` (encode, generate, align one batch) and :func:`assemble_segments` (word
timing clean-up, timeline, segments). They lean on what faster-whisper does not promise to keep
(``WhisperModel.add_word_timestamps``, ``find_alignment``, ``get_prompt``, ``encode``, ``vad``'s
``collect_chunks`` and ``SpeechTimestampsMap``), which is why ``pyproject.toml`` pins faster-whisper to
the minor version this was checked against, and a parity test compares the text with the pipeline's.

Windows are decoded without timestamp tokens, faster-whisper's most accurate batched mode: with them,
text after a window's last closed segment is lost (SYSTRAN/faster-whisper#1427, #1179). Segments are
then cut from the word alignment (:mod:`escriba.transcription.segmenting`).
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import ctranslate2
import numpy as np
import numpy.typing as npt
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens, pad_or_trim
from faster_whisper.vad import SpeechTimestampsMap, VadOptions, collect_chunks, get_speech_timestamps

from escriba.transcript import Segment, Word
from escriba.transcription.segmenting import TimedWord, split_words

#: Candidates sampled per window at a temperature above 0 (faster-whisper's ``best_of``).
BEST_OF = 5
#: Seed for the sampling at a temperature above 0: the same audio in the same batch gives the same
#: transcript, so a cached transcript and a fresh one agree and a failing test can be re-run.
SAMPLING_SEED = 0
#: Audio left after a window's last aligned word that is decoded again on its own (seconds): longer
#: than the VAD's padding, so a window that merely ends in its pad is left alone.
TAIL_MIN_S = 1.0
#: Log-mel frames per second (Whisper's 10 ms hop).
_FRAMES_PER_S = 100


@dataclass(frozen=True, slots=True)
class DecodeKey:
    """What every window in one model call must share: CTranslate2 applies the prompt (language,
    hotwords, initial prompt), beam width and temperature to the whole batch."""

    language: str
    prompt: tuple[int, ...]
    beam_size: int
    temperature: float
    task: str = "transcribe"
    #: With the adaptive encoder context: the request's context size (frames), so a batch holds
    #: windows of one size and none pays for a longer one's context. 0: not grouped by size.
    context_frames: int = 0

    def at(self, temperature: float) -> DecodeKey:
        return replace(self, temperature=float(temperature))


@dataclass(frozen=True, slots=True)
class Window:
    """Up to 30 s of one request's speech, as the encoder takes it."""

    features: npt.NDArray[np.float32]  # (n_mels, 3000): log-mel, padded like the batched pipeline's
    offset_s: float  # start within the request's speech (silence VAD removed is not counted)
    duration_s: float
    #: Telephone-band speech (nothing above about 4 kHz): the encoder always sees its full 30 s.
    narrowband: bool = False


@dataclass(frozen=True, slots=True)
class WindowOutput:
    """One window decoded once: its text tokens, the scores the fallback policy reads, and the word
    alignment faster-whisper's ``find_alignment`` gives."""

    tokens: list[int]
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    alignment: list[dict[str, Any]]
    frames: int  # the window's length in encoder frames, as the alignment was computed with

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) * _FRAMES_PER_S / max(self.frames, _FRAMES_PER_S)


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One request made ready for decoding, and what its transcript reports."""

    key: DecodeKey
    windows: list[Window]
    tokenizer: Tokenizer
    #: VAD speech chunks (samples) that map speech time back to the recording's; None: fixed windows.
    speech_chunks: list[dict[str, int]] | None
    language_probability: float
    duration_s: float
    speech_duration_s: float

    @property
    def language(self) -> str:
        return self.key.language


#: Encoder context sizes step by this many frames (5 s), so batches of similar clips share a shape.
CONTEXT_STEP_FRAMES = 500
FULL_CONTEXT_FRAMES = 3000


#: Above this many dB of power above 4.3 kHz relative to 0.3-3.5 kHz a window is wideband. On the
#: corpus, 8 kHz recordings measure -44 to -50 dB and every wideband one -9 to -36 dB.
NARROWBAND_HIGH_TO_MID_DB = -40.0


def high_to_mid_db(features: npt.NDArray[np.float32], centres_hz: npt.NDArray[np.float64]) -> float:
    """Mean power above 4.3 kHz over mean power in 0.3-3.5 kHz, in dB, from a window's normalized
    log-mel features (faster-whisper's ``(log10(power) + 4) / 4``, floored 80 dB under the peak)."""
    power = np.power(10.0, 4.0 * features.astype(np.float64) - 4.0)
    high = power[centres_hz > 4300.0].mean()
    mid = power[(centres_hz > 300.0) & (centres_hz < 3500.0)].mean()
    return float(10.0 * np.log10(max(high, 1e-30) / max(mid, 1e-30)))


def mel_centres_hz(extractor: FeatureExtractor) -> npt.NDArray[np.float64]:
    """Each mel band's centre frequency (where its filter peaks)."""
    filters = np.asarray(extractor.mel_filters)
    frequencies = np.linspace(0.0, extractor.sampling_rate / 2, filters.shape[1])
    return np.asarray(frequencies[np.argmax(filters, axis=1)], dtype=np.float64)


def encoder_frames(windows: Sequence[Window], margin_s: float | None) -> int:
    """How many of the windows' 3000 feature frames the encoder sees: all of them, or (adaptive) the
    longest window's speech plus ``margin_s``, rounded up to a step. Whisper was trained on 30 s, so a
    short context is only used where `make eval` found the transcript unchanged (see the setting):
    not for narrowband windows, which lost words with a short context."""
    if margin_s is None or not windows or any(w.narrowband for w in windows):
        return FULL_CONTEXT_FRAMES
    needed = max(w.duration_s for w in windows) + margin_s
    steps = math.ceil(needed * _FRAMES_PER_S / CONTEXT_STEP_FRAMES)
    return min(FULL_CONTEXT_FRAMES, max(1, steps) * CONTEXT_STEP_FRAMES)


class WhisperBatchRunner:
    """The model call of one batch: encode, generate and align, as ``BatchedInferencePipeline.forward``
    does with word timestamps, at the key's temperature (sampling ``BEST_OF`` candidates above 0, as the
    sequential path's fallback does). Windows are always aligned, whatever the request shows: the word
    times are how segments are cut and how a window the decoder stopped short of is found."""

    def __init__(self, model: WhisperModel, *, context_margin_s: float | None = None) -> None:
        """``context_margin_s``: encode only the longest window of a batch plus this margin, rounded
        up to :data:`CONTEXT_STEP_FRAMES` (``None``: every window's full 30 s, as faster-whisper)."""
        self._model = model
        self._context_margin_s = context_margin_s
        self.adaptive_context = context_margin_s is not None
        self.context_margin_s = context_margin_s
        self._lock = threading.Lock()
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}
        self._suppressed: dict[tuple[str, str], list[int]] = {}

    def tokenizer(self, language: str, task: str = "transcribe") -> Tokenizer:
        """The tokenizer whose start sequence asks for ``task`` in ``language`` (an English-only
        model has no task token: its tokenizer ignores ``task``)."""
        key = (language, task)
        with self._lock:
            if key not in self._tokenizers:
                model = self._model
                self._tokenizers[key] = Tokenizer(
                    model.hf_tokenizer, model.model.is_multilingual, task=task, language=language
                )
                self._suppressed[key] = get_suppressed_tokens(self._tokenizers[key], [-1])
            return self._tokenizers[key]

    def __call__(self, key: DecodeKey, windows: Sequence[Window]) -> list[WindowOutput]:
        model = self._model
        tokenizer = self.tokenizer(key.language, key.task)
        context = encoder_frames(windows, self._context_margin_s)
        encoder_output = model.encode(np.stack([w.features[:, :context] for w in windows]))
        if key.temperature > 0:
            ctranslate2.set_random_seed(SAMPLING_SEED)
            search: dict[str, Any] = {
                "beam_size": 1,
                "num_hypotheses": BEST_OF,
                "sampling_topk": 0,
                "sampling_temperature": key.temperature,
            }
        else:
            search = {"beam_size": key.beam_size, "patience": 1.0}
        results = model.model.generate(
            encoder_output,
            [list(key.prompt) for _ in windows],
            length_penalty=1.0,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=self._suppressed[(key.language, key.task)],
            return_scores=True,
            return_no_speech_prob=True,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            **search,
        )
        decoded: list[tuple[list[int], str, float, float]] = []
        frames: list[int] = []
        for window, result in zip(windows, results, strict=True):
            sequence = result.sequences_ids[0]
            tokens = [t for t in sequence if t < tokenizer.eot]
            avg_logprob = float(result.scores[0] * len(sequence) / (len(sequence) + 1))
            decoded.append((tokens, tokenizer.decode(tokens), avg_logprob, float(result.no_speech_prob)))
            # Within what was encoded: the alignment reads that many encoder frames.
            frames.append(min(context, int(math.ceil(window.duration_s) * model.frames_per_second)))
        alignments = model.find_alignment(tokenizer, [d[0] for d in decoded], encoder_output, frames)
        return [
            WindowOutput(
                tokens=tokens,
                text=text,
                avg_logprob=avg_logprob,
                no_speech_prob=no_speech,
                compression_ratio=get_compression_ratio(text.strip()),
                temperature=key.temperature,
                alignment=alignment,
                frames=size,
            )
            for (tokens, text, avg_logprob, no_speech), alignment, size in zip(
                decoded, alignments, frames, strict=True
            )
        ]


def uncovered_tail(window: Window, output: WindowOutput, *, min_s: float = TAIL_MIN_S) -> Window | None:
    """What is left of ``window`` after its last aligned word, as a window of its own, when that is at
    least ``min_s`` long; ``None`` otherwise.

    Without timestamp tokens the decoder may still end a window early (its end-of-text comes after a
    sentence that seems complete), leaving the speech after it with no text, most often at the end of
    a recording. Decoding that rest alone gives the model a window that starts where the text stopped.
    Its features are the window's own frames (same normalization), padded as every window is.
    """
    words = [w for w in output.alignment if w.get("word")]
    if not words or not output.text.strip():
        return None
    # The alignment stretches the last word over whatever audio follows it; cap it at twice the
    # median word length, as faster-whisper's own word clean-up does at sentence ends.
    durations = [float(w["end"]) - float(w["start"]) for w in words if w["end"] > w["start"]]
    longest = 2 * min(0.7, float(np.median(durations))) if durations else 0.0
    last = words[-1]
    last_end = min(float(last["end"]), float(last["start"]) + longest)
    rest = window.duration_s - last_end
    if rest < min_s:
        return None
    first = int(last_end * _FRAMES_PER_S)
    end = min(window.features.shape[-1], math.ceil(window.duration_s * _FRAMES_PER_S))
    return Window(
        pad_or_trim(window.features[:, first:end]), window.offset_s + last_end, rest, window.narrowband
    )


def prepare_request(
    model: WhisperModel,
    runner: WhisperBatchRunner,
    audio: npt.NDArray[np.float32],
    *,
    language: str | None,
    vad: VadOptions | None,
    windows_s: Sequence[dict[str, float]] = (),
    initial_prompt: str | None,
    hotwords: str | None,
    beam_size: int,
    temperature: float,
    task: str = "transcribe",
) -> PreparedRequest:
    """Cut the audio into windows (speech found by VAD, or the given fixed ``windows_s``), compute their
    features, settle the language and build the prompt (no timestamp tokens): the steps of
    ``BatchedInferencePipeline.transcribe`` before its first model call."""
    rate = int(model.feature_extractor.sampling_rate)
    chunk_length = float(model.feature_extractor.chunk_length)
    duration = audio.shape[0] / rate
    speech_chunks: list[dict[str, int]] | None
    if vad is not None:
        speech_chunks = get_speech_timestamps(audio, vad)
        audio_chunks, metadata = collect_chunks(audio, speech_chunks, max_duration=chunk_length)
        clips = speech_chunks
    else:
        speech_chunks = None
        clips = [{k: int(v * rate) for k, v in w.items()} for w in windows_s]
        audio_chunks = [audio[c["start"] : c["end"]] for c in clips]
        metadata = [{"offset": c["start"] / rate, "duration": (c["end"] - c["start"]) / rate} for c in clips]
    speech_duration = sum(c["end"] - c["start"] for c in clips) / rate
    # Window by window, letting go of each stretch of audio once its features exist: on hours of audio
    # a list of every window's samples and another of every window's unpadded features add up.
    windows: list[Window] = []
    lead: list[npt.NDArray[np.float32]] = []  # the first 30 s of features, for language detection
    lead_frames = 0
    audio_chunks.reverse()
    centres = mel_centres_hz(model.feature_extractor) if runner.adaptive_context else None
    for meta in metadata if speech_duration else ():
        features = model.feature_extractor(audio_chunks.pop())[..., :-1]
        if lead_frames < model.feature_extractor.nb_max_frames:
            lead.append(features)
            lead_frames += features.shape[-1]
        narrowband = centres is not None and high_to_mid_db(features, centres) < NARROWBAND_HIGH_TO_MID_DB
        windows.append(
            Window(pad_or_trim(features), float(meta["offset"]), float(meta["duration"]), narrowband)
        )
    if language is None:
        if not model.model.is_multilingual:
            language, probability = "en", 1.0
        else:
            # As the pipeline does: on the first 30 s of features (it concatenates them all and keeps
            # those), with a dummy frame so that no speech still works.
            dummy = np.full((model.model.n_mels, 1), -1.5, dtype="float32")
            language, probability, _ = model.detect_language(
                features=np.concatenate([*lead, dummy], axis=1),
                language_detection_segments=1,
                language_detection_threshold=0.5,
            )
    else:
        if not model.model.is_multilingual:
            language = "en"
        probability = 1.0
    tokenizer = runner.tokenizer(language, task)
    prompt = model.get_prompt(
        tokenizer,
        previous_tokens=tokenizer.encode(initial_prompt) if initial_prompt is not None else [],
        without_timestamps=True,
        hotwords=hotwords,
    )
    key = DecodeKey(language, tuple(prompt), beam_size, float(temperature), task)
    return PreparedRequest(
        key, windows, tokenizer, speech_chunks, float(probability), duration, speech_duration
    )


#: The batched pipeline's own defaults (word punctuation merging), read from it rather than copied.
_PIPELINE_DEFAULTS = inspect.signature(BatchedInferencePipeline.transcribe).parameters


class _AlignedModel:
    """Stands in for the model inside ``WhisperModel.add_word_timestamps``, which needs only
    ``frames_per_second`` and ``find_alignment``: the alignment ran in the batch, while the per-word
    clean-up must run per request, because it carries the request's own last speech timestamp from
    window to window (sharing it across requests would move words)."""

    def __init__(self, frames_per_second: int, alignments: list[list[dict[str, Any]]]) -> None:
        self.frames_per_second = frames_per_second
        self._alignments = alignments

    def find_alignment(self, *_args: Any, **_kwargs: Any) -> list[list[dict[str, Any]]]:
        return self._alignments


class _Timeline:
    """Speech time (VAD removed the silence) back to the recording's time."""

    def __init__(self, speech_chunks: list[dict[str, int]] | None, rate: int) -> None:
        self._map = SpeechTimestampsMap(speech_chunks, rate) if speech_chunks else None

    def word(self, start: float, end: float) -> tuple[float, float]:
        if self._map is None:
            return start, end
        chunk = self._map.get_chunk_index((start + end) / 2)  # both ends in the chunk of its middle
        return self._map.get_original_time(start, chunk), self._map.get_original_time(end, chunk)

    def span(self, start: float, end: float) -> tuple[float, float]:
        if self._map is None:
            return start, end
        return self._map.get_original_time(start), self._map.get_original_time(end, is_end=True)


def decoded_until_s(prepared: PreparedRequest, windows_done: int, rate: int) -> float:
    """Where on the recording's timeline the first ``windows_done`` windows end."""
    if windows_done <= 0 or not prepared.windows:
        return 0.0
    window = prepared.windows[min(windows_done, len(prepared.windows)) - 1]
    if windows_done >= len(prepared.windows):
        return prepared.duration_s
    return min(
        prepared.duration_s,
        _Timeline(prepared.speech_chunks, rate).span(window.offset_s, window.offset_s + window.duration_s)[1],
    )


def draft_segments(prepared: PreparedRequest, outputs: Sequence[WindowOutput], rate: int) -> list[Segment]:
    """The first ``len(outputs)`` windows as one segment each, on the recording's timeline: what
    progress shows before the request is assembled (its final segments are cut from the words)."""
    timeline = _Timeline(prepared.speech_chunks, rate)
    drafts: list[Segment] = []
    for window, output in zip(prepared.windows, outputs, strict=False):
        text = output.text.strip()
        if not text:
            continue
        start, end = timeline.span(window.offset_s, window.offset_s + window.duration_s)
        drafts.append(Segment(id=len(drafts), start_s=start, end_s=end, text=" " + text))
    return drafts


def assemble_segments(
    model: WhisperModel,
    prepared: PreparedRequest,
    outputs: Sequence[WindowOutput],
    *,
    with_words: bool,
    sentence_segments: bool,
    prepend_punctuations: str = _PIPELINE_DEFAULTS["prepend_punctuations"].default,
    append_punctuations: str = _PIPELINE_DEFAULTS["append_punctuations"].default,
) -> list[Segment]:
    """A request's decoded windows (in order) as segments on the recording's timeline: cut from the
    words at sentence ends and pauses (``sentence_segments``), else one segment per window;
    ``with_words`` keeps the words on them. Windows without text give no segment."""
    rate = int(model.feature_extractor.sampling_rate)
    timeline = _Timeline(prepared.speech_chunks, rate)
    fps = model.frames_per_second
    windows = [
        [
            {
                "tokens": out.tokens,
                "seek": round(w.offset_s * fps),
                "start": w.offset_s,
                "end": w.offset_s + w.duration_s,
            }
        ]
        for w, out in zip(prepared.windows, outputs, strict=True)
    ]
    if windows:
        WhisperModel.add_word_timestamps(
            _AlignedModel(fps, [out.alignment for out in outputs]),
            windows,
            prepared.tokenizer,
            None,
            [out.frames for out in outputs],
            prepend_punctuations,
            append_punctuations,
            0.0,
        )
    segments: list[Segment] = []
    for window, out, (sub,) in zip(prepared.windows, outputs, windows, strict=True):
        if not out.text.strip():
            continue
        scores: dict[str, Any] = {
            "avg_logprob": out.avg_logprob,
            "no_speech_prob": float(out.no_speech_prob),
            "compression_ratio": out.compression_ratio,
            "temperature": out.temperature,
        }
        timed = [
            TimedWord(w["word"], *timeline.word(w["start"], w["end"]), float(w["probability"]))
            for w in sub.get("words", ())
        ]
        if not timed:
            start, end = timeline.span(window.offset_s, window.offset_s + window.duration_s)
            segments.append(Segment(len(segments), start, end, out.text, (), **scores))
            continue
        for group in split_words(timed) if sentence_segments else [timed]:
            words = tuple(Word(w.start_s, w.end_s, w.text, w.probability) for w in group)
            segments.append(
                Segment(
                    len(segments),
                    group[0].start_s,
                    group[-1].end_s,
                    "".join(w.text for w in group) if sentence_segments else out.text,
                    words=words if with_words else (),
                    **scores,
                )
            )
    return segments
