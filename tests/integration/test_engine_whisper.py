"""The engine on real speech with the real bundled tiny.en model (loaded once for the module)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from faster_whisper import decode_audio

from escriba.common.settings import load
from escriba.transcript import Transcript
from escriba.transcription.engine import SAMPLE_RATE_HZ, WhisperEngine
from escriba.transcription.errors import UnsupportedLanguageError
from escriba.transcription.settings import TranscriptionSettings
from tests.support.text import JFK_REFERENCE, normalize, wer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

Samples = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def engine() -> Iterator[WhisperEngine]:
    settings = load(
        TranscriptionSettings,
        {
            "ESCRIBA_TRANSCRIPTION_DEVICE": "cpu",
            "ESCRIBA_TRANSCRIPTION_CPUS": "2",
            # Three requests really run at once in the concurrency test, sharing one model.
            "ESCRIBA_TRANSCRIPTION_MAX_CONCURRENCY": "3",
        },
    )
    whisper = WhisperEngine(settings)
    whisper.load()
    yield whisper
    whisper.close()


@pytest.fixture(scope="module")
def jfk() -> Samples:
    return np.asarray(decode_audio(str(Path(__file__).parents[1] / "data" / "jfk.flac")), dtype=np.float32)


@pytest.fixture(scope="module")
def hotwords_sample() -> Samples:
    path = Path(__file__).parents[1] / "data" / "hotwords.mp3"
    return np.asarray(decode_audio(str(path)), dtype=np.float32)


def assert_jfk(transcript: Transcript) -> None:
    assert wer(JFK_REFERENCE, transcript.text) <= 0.10, transcript.text


def test_loaded_once_with_resolved_settings(engine: WhisperEngine) -> None:
    assert engine.is_ready
    assert engine.model_name == "tiny.en"
    assert engine.device == "cpu"
    assert engine.compute_type.startswith("int8")
    # Two CPUs: two model workers (calls side by side), each able to use both CPUs when alone.
    assert (engine.num_workers, engine.cpu_threads) == (2, 2)
    assert engine.load_seconds is not None and engine.load_seconds > 0
    assert list(engine.supported_languages) == ["en"]
    first = engine.load_seconds
    engine.load()  # a second call keeps the loaded model
    assert engine.load_seconds == first


def test_jfk_matches_the_reference(engine: WhisperEngine, jfk: Samples) -> None:
    transcript = engine.transcribe(jfk)
    assert_jfk(transcript)
    assert transcript.language == "en"
    assert transcript.language_probability == 1.0
    assert transcript.duration_s == pytest.approx(11.0, abs=0.01)
    assert 5.0 < transcript.speech_duration_s <= transcript.duration_s
    assert transcript.model == "tiny.en"
    assert transcript.batch_size == engine.batch_size_for(11.0)
    assert transcript.inference_ms > 0
    assert transcript.segments
    assert [s.id for s in transcript.segments] == list(range(len(transcript.segments)))
    assert " ".join(s.text for s in transcript.segments) == transcript.text


def test_word_timestamps_are_present_and_ordered(engine: WhisperEngine, jfk: Samples) -> None:
    transcript = engine.transcribe(jfk)
    words = [w for s in transcript.segments for w in s.words]
    assert len(words) >= 20
    for segment in transcript.segments:
        assert segment.words
        assert segment.start_s <= segment.words[0].start_s
        assert segment.words[-1].end_s <= segment.end_s + 0.01
        assert normalize("".join(w.word for w in segment.words)) == normalize(segment.text)
    for word in words:
        assert 0.0 <= word.start_s <= word.end_s <= transcript.duration_s
        assert 0.0 <= word.probability <= 1.0
    starts = [w.start_s for w in words]
    assert starts == sorted(starts)
    # "country" closes the speech, which ends before the recording does.
    assert normalize(words[-1].word) == "country"
    assert words[-1].end_s > 9.0


def test_word_timestamps_can_be_turned_off(engine: WhisperEngine, jfk: Samples) -> None:
    transcript = engine.transcribe(jfk, engine.default_options.with_changes(word_timestamps=False))
    assert_jfk(transcript)
    assert all(not s.words for s in transcript.segments)


def test_one_segment_per_window_without_segment_timestamps(engine: WhisperEngine, jfk: Samples) -> None:
    split = engine.transcribe(jfk)
    whole = engine.transcribe(jfk, engine.default_options.with_changes(segment_timestamps=False))
    assert_jfk(whole)
    assert len(whole.segments) == 1  # 11 s of speech is one VAD window
    assert len(split.segments) > 1  # 10.5 s of one sentence: split at a clause
    assert whole.text == split.text


def test_hotword_brings_out_the_product_name(engine: WhisperEngine, hotwords_sample: Samples) -> None:
    plain = engine.transcribe(hotwords_sample)
    # tiny.en hears "comfy eye" or "comp view i" on its own (which, moves with the CPU threads per
    # worker), so the hotword is what makes the difference.
    assert "ComfyUI" not in plain.text
    hinted = engine.transcribe(hotwords_sample, engine.default_options.with_changes(hotwords="ComfyUI"))
    assert "ComfyUI" in hinted.text


def test_initial_prompt_is_used(engine: WhisperEngine, hotwords_sample: Samples) -> None:
    prompted = engine.transcribe(
        hotwords_sample, engine.default_options.with_changes(initial_prompt="Installing ComfyUI.")
    )
    plain = engine.transcribe(hotwords_sample)
    assert prompted.text != plain.text
    assert "folder" in prompted.text


def test_forced_language(engine: WhisperEngine, jfk: Samples) -> None:
    transcript = engine.transcribe(jfk, engine.default_options.with_changes(language="en-US"))
    assert_jfk(transcript)
    assert transcript.language == "en"
    assert transcript.language_probability == 1.0


def test_language_the_model_lacks_is_refused(engine: WhisperEngine, jfk: Samples) -> None:
    with pytest.raises(UnsupportedLanguageError, match=r"tiny\.en"):
        engine.transcribe(jfk, engine.default_options.with_changes(language="de"))


def test_beam_size_one_still_transcribes(engine: WhisperEngine, jfk: Samples) -> None:
    assert_jfk(engine.transcribe(jfk, engine.default_options.with_changes(beam_size=1)))


def test_silence_gives_an_empty_transcript(engine: WhisperEngine) -> None:
    transcript = engine.transcribe(np.zeros(5 * SAMPLE_RATE_HZ, dtype=np.float32))
    assert transcript.text == ""
    assert transcript.segments == ()
    assert transcript.duration_s == pytest.approx(5.0)
    assert transcript.speech_duration_s == 0.0
    assert transcript.language == "en"


def test_no_samples_give_an_empty_transcript(engine: WhisperEngine) -> None:
    transcript = engine.transcribe(np.zeros(0, dtype=np.float32))
    assert (transcript.text, transcript.segments, transcript.duration_s) == ("", (), 0.0)


def test_without_vad_every_sample_is_decoded(engine: WhisperEngine, jfk: Samples) -> None:
    transcript = engine.transcribe(jfk, engine.default_options.with_vad_changes(enabled=False))
    assert_jfk(transcript)
    assert transcript.speech_duration_s == pytest.approx(transcript.duration_s)


def test_without_vad_long_audio_is_cut_into_windows(engine: WhisperEngine, jfk: Samples) -> None:
    # 44 s: more than one 30 s window, which the batched pipeline cannot do without VAD on its own.
    audio = np.concatenate([jfk] * 4)
    transcript = engine.transcribe(audio, engine.default_options.with_vad_changes(enabled=False))
    assert transcript.duration_s == pytest.approx(44.0, abs=0.01)
    assert transcript.segments[-1].end_s > 30.0
    # A window boundary falls mid-sentence, so allow for a few words lost there.
    assert wer(" ".join([JFK_REFERENCE] * 4), transcript.text) <= 0.25, transcript.text


def test_vad_threshold_changes_what_counts_as_speech(engine: WhisperEngine, jfk: Samples) -> None:
    default = engine.transcribe(jfk)
    strict = engine.transcribe(jfk, engine.default_options.with_vad_changes(threshold=0.95, speech_pad_ms=0))
    assert strict.speech_duration_s < default.speech_duration_s


def test_conditioning_on_previous_text_decodes_sequentially(engine: WhisperEngine, jfk: Samples) -> None:
    transcript = engine.transcribe(jfk, engine.default_options.with_changes(condition_on_previous_text=True))
    assert_jfk(transcript)
    assert transcript.batch_size == 1
    assert all(s.words for s in transcript.segments)


def test_long_speech_is_batched(engine: WhisperEngine, jfk: Samples, hotwords_sample: Samples) -> None:
    gap = np.zeros(SAMPLE_RATE_HZ // 2, dtype=np.float32)
    audio = np.concatenate([jfk, gap, hotwords_sample, gap] * 5)  # about 80 s, several VAD windows
    transcript = engine.transcribe(audio)
    assert transcript.batch_size == engine.batch_size_for(transcript.duration_s)
    # Each of the five repetitions, every time: speech that repeats at speech pace is not a decoder
    # loop, so it is never sampled again at a higher temperature (which dropped whole repetitions).
    assert normalize(transcript.text).count("ask not what your country") == 5, transcript.text
    assert transcript.windows_redecoded == 0
    starts = [s.start_s for s in transcript.segments]
    assert starts == sorted(starts)
    assert transcript.segments[-1].end_s > 60.0


async def test_concurrent_requests_share_the_model(
    engine: WhisperEngine, jfk: Samples, hotwords_sample: Samples
) -> None:
    hinted = engine.default_options.with_changes(hotwords="ComfyUI")
    results = await asyncio.gather(
        engine.transcribe_async(jfk),
        engine.transcribe_async(hotwords_sample, hinted),
        engine.transcribe_async(jfk, engine.default_options.with_changes(language="en", beam_size=2)),
    )
    assert_jfk(results[0])
    assert "ComfyUI" in results[1].text
    assert_jfk(results[2])
    assert engine.pending_requests == 0


async def test_the_event_loop_stays_free_during_inference(engine: WhisperEngine, jfk: Samples) -> None:
    seen_in_flight = 0

    async def watch() -> None:
        nonlocal seen_in_flight
        while True:
            seen_in_flight = max(seen_in_flight, engine.pending_requests)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        transcript = await engine.transcribe_async(np.concatenate([jfk] * 2))
    finally:
        watcher.cancel()
    # Had inference blocked the loop, the watcher could only have run before or after it.
    assert seen_in_flight == 1
    assert wer(" ".join([JFK_REFERENCE] * 2), transcript.text) <= 0.10
    assert engine.pending_requests == 0
