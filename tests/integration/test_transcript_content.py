"""What the transcript says, on every decoding path: no sentence of a long recording is lost, and the
model hears the signal as recorded.

The recording is real speech from ``tests/data`` (a 69 s read passage, then eleven clips of other
speakers), about 136 s in five 30 s windows: the batched paths once lost text after a window's last
timestamp token, and the decoder can still stop a window early (the recording's last clip), which
the engine re-decodes. Each sentence of the references must show up in the transcript, fuzzily.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from faster_whisper import BatchedInferencePipeline, decode_audio

from escriba.common.settings import load
from escriba.preprocess import Preprocessor, PreprocessSettings
from escriba.transcription.engine import WhisperEngine
from escriba.transcription.options import TranscriptionOptions
from escriba.transcription.settings import TranscriptionSettings
from tests.support import media
from tests.support.recordings import missing_sentences, multi_window
from tests.support.text import JFK_REFERENCE, wer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BASE_ENV = {"ESCRIBA_TRANSCRIPTION_DEVICE": "cpu", "ESCRIBA_TRANSCRIPTION_CPUS": "2"}


def _engine(**env: str) -> Iterator[WhisperEngine]:
    whisper = WhisperEngine(load(TranscriptionSettings, {**BASE_ENV, **env}))
    whisper.load()
    yield whisper
    whisper.close()


@pytest.fixture(scope="module")
def shared() -> Iterator[WhisperEngine]:
    yield from _engine()


@pytest.fixture(scope="module")
def alone() -> Iterator[WhisperEngine]:
    yield from _engine(ESCRIBA_TRANSCRIPTION_CROSS_TASK_BATCHING="false")


PATHS = {
    "cross-task batched": ("shared", {}),
    "batched per request": ("alone", {}),
    "sequential": ("shared", {"condition_on_previous_text": True}),
    "one segment per window": ("shared", {"segment_timestamps": False, "word_timestamps": False}),
}


@pytest.mark.parametrize("path", PATHS)
def test_every_sentence_of_a_multi_window_recording_is_transcribed(
    path: str, request: pytest.FixtureRequest
) -> None:
    fixture, changes = PATHS[path]
    engine: WhisperEngine = request.getfixturevalue(fixture)
    built = multi_window()
    transcript = engine.transcribe(built.samples, engine.default_options.with_changes(**changes))
    assert not missing_sentences(built.sentences, transcript.text), transcript.text
    segments = transcript.segments
    assert [s.start_s for s in segments] == sorted(s.start_s for s in segments)
    assert segments[-1].end_s > built.duration_s - 3.0  # the last clip, 1.9 s, is there
    if path != "sequential":
        # The decoder ends the last window after "South Africa."; its tail, decoded again, is the clip.
        assert transcript.windows_redecoded >= 1
    if changes.get("segment_timestamps", True):
        # Sentence-sized segments, cut from the words: none spans a whole window.
        assert len(segments) >= len(built.sentences) - 2
        assert max(s.end_s - s.start_s for s in segments) <= 15.0


def test_words_cover_the_segments_that_carry_them(shared: WhisperEngine) -> None:
    transcript = shared.transcribe(multi_window().samples)
    for segment in transcript.segments:
        assert segment.words, segment
        assert segment.start_s == segment.words[0].start_s and segment.end_s == segment.words[-1].end_s
        assert "".join(w.word for w in segment.words).strip() == segment.text


def test_the_batched_paths_say_what_faster_whisper_batched_pipeline_says(
    shared: WhisperEngine, alone: WhisperEngine
) -> None:
    """Parity with plain faster-whisper's most accurate batched mode (no timestamp tokens), on audio where
    no window needs a fallback or a tail: the same windows, the same words."""
    jfk = np.asarray(decode_audio(str(media.JFK)), dtype=np.float32)
    left, rate = media.speech("stereo_diarization.wav")
    left16 = media.resample(left[:1], rate, 16000)[0].astype(np.float32)
    gap = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([jfk, gap, left16, gap] * 3)
    options = shared.default_options
    raw, _ = BatchedInferencePipeline(shared.model).transcribe(
        audio,
        beam_size=options.beam_size,
        vad_parameters={"min_silence_duration_ms": options.vad.min_silence_duration_ms},
        batch_size=8,
    )
    plain = " ".join("".join(s.text for s in raw).split())
    for engine in (shared, alone):
        assert " ".join(engine.transcribe(audio).text.split()) == plain


def test_sampling_at_a_temperature_still_transcribes(shared: WhisperEngine) -> None:
    jfk = np.asarray(decode_audio(str(media.JFK)), dtype=np.float32)
    options = shared.default_options.with_changes(temperature=0.4)
    transcript = shared.transcribe(jfk, options)
    assert wer(JFK_REFERENCE, transcript.text) <= 0.25, transcript.text
    assert {s.temperature for s in transcript.segments} <= {0.4, 0.6, 0.8, 1.0}


def test_a_quiet_recording_with_a_loud_click_reads_as_the_unprocessed_one(shared: WhisperEngine) -> None:
    """Through preprocess, the model hears what plain faster-whisper hears from the file: no gain, no
    limiter pumping around the click."""
    samples, rate = media.speech("jfk.flac")
    quiet = media.with_gain(samples, -32.0)
    click = quiet.shape[-1] // 3
    quiet[..., click : click + 60] = 0.95
    data = media.to_wav(quiet, rate)
    canonical = Preprocessor(load(PreprocessSettings, {})).run(data).samples
    unprocessed = decode_audio(io.BytesIO(data))
    options = TranscriptionOptions()
    through_escriba = shared.transcribe(canonical, options)
    plain = shared.transcribe(unprocessed, options)
    assert through_escriba.text == plain.text
    assert wer(JFK_REFERENCE, through_escriba.text) <= 0.15, through_escriba.text
