"""Settings of the preprocess stage (decode, resample, measure loudness), from ``ESCRIBA_PREPROCESS_*``."""

from __future__ import annotations

from dataclasses import dataclass

from escriba.audio.pcm import ENCODINGS
from escriba.common.settings import at_least, between, load, setting, settings_class

GIB = 1024**3


@settings_class
@dataclass(frozen=True)
class PreprocessSettings:
    decoder_threads: int = setting(
        "ESCRIBA_PREPROCESS_DECODER_THREADS",
        0,
        "FFmpeg decoder threads per file (count; 0 lets FFmpeg choose)",
        check=between(0, 64),
    )
    normalize_loudness: bool = setting(
        "ESCRIBA_PREPROCESS_NORMALIZE_LOUDNESS",
        False,
        "Loudness-normalize the canonical audio (gain plus peak limiter). Off: the model hears the "
        "signal as recorded, which Whisper's log-mel front end needs; gain and limiting cost accuracy. "
        "A PreprocessService call that sets target_lufs always gets a normalized copy",
    )
    target_lufs: float = setting(
        "ESCRIBA_PREPROCESS_TARGET_LUFS",
        -16.0,
        "Integrated loudness a normalized copy is brought to (LUFS, ITU-R BS.1770)",
        check=between(-70.0, 0.0),
    )
    peak_ceiling_dbfs: float = setting(
        "ESCRIBA_PREPROCESS_PEAK_CEILING_DBFS",
        -1.5,
        "Highest sample peak after normalization (dBFS); louder peaks are limited",
        check=between(-20.0, 0.0),
    )
    max_duration_s: float = setting(
        "ESCRIBA_PREPROCESS_MAX_DURATION_S",
        4 * 3600.0,
        "Longest accepted audio (seconds of decoded audio; decoding stops as soon as it is passed)",
        check=between(1.0, 7 * 24 * 3600.0),
    )
    max_input_bytes: int = setting(
        "ESCRIBA_PREPROCESS_MAX_INPUT_BYTES",
        GIB,
        "Largest accepted upload (bytes; checked before decoding)",
        check=at_least(1),
    )
    max_concurrency: int = setting(
        "ESCRIBA_PREPROCESS_MAX_CONCURRENCY",
        2,
        "files decoded and normalized at once per process (count; each uses about one core)",
        check=between(1, 64),
    )
    max_worker_deaths: int = setting(
        "ESCRIBA_PREPROCESS_MAX_WORKER_DEATHS",
        2,
        "times one job may kill its worker (no ack, nak or term: killed for memory, or lost) before its"
        " task fails with reason worker_died instead of taking down another pod (count; 0: only"
        " ESCRIBA_NATS_MAX_DELIVER bounds it)",
        check=between(0, 100),
    )
    output_encoding: str = setting(
        "ESCRIBA_PREPROCESS_OUTPUT_ENCODING",
        "flac",
        "Encoding of the canonical 16 kHz mono 16-bit audio (flac or wav)",
        choices=ENCODINGS,
    )

    @classmethod
    def from_env(cls) -> PreprocessSettings:
        return load(cls)


@settings_class
@dataclass(frozen=True)
class FetchSettings:
    """Audio by URL (``TaskSpec.audio_url``): how long a download may take, and how to reach S3."""

    total_timeout_s: float = setting(
        "ESCRIBA_FETCH_TIMEOUT_S",
        600.0,
        "longest the preprocess stage spends downloading one audio URL, start to end (seconds)",
        check=at_least(1),
    )
    s3_endpoint_url: str = setting(
        "ESCRIBA_S3_ENDPOINT_URL",
        "",
        "S3 endpoint for s3:// audio URLs (MinIO, Ceph, another S3-compatible store); empty: AWS",
    )
    s3_region: str = setting("ESCRIBA_S3_REGION", "", "S3 region (empty: the SDK's default chain)")
    s3_access_key_id: str = setting(
        "ESCRIBA_S3_ACCESS_KEY_ID",
        "",
        "S3 access key id; with ESCRIBA_S3_SECRET_ACCESS_KEY_FILE (both empty: the SDK's default chain,"
        " e.g. an IAM role for the service account)",
    )
    s3_secret_access_key_file: str = setting(
        "ESCRIBA_S3_SECRET_ACCESS_KEY_FILE",
        "",
        "file holding the S3 secret access key (a mounted Secret)",
    )

    @classmethod
    def from_env(cls) -> FetchSettings:
        return load(cls)
