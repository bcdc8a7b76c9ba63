"""Job payloads: large ones travel deflated; a payload that would inflate past the bound, or is cut
short, is a malformed job (a permanent failure of its task), never a worker's memory."""

from __future__ import annotations

import zlib

import pytest

from escriba.pipeline import codec
from escriba.v1 import jobs_pb2

pytestmark = pytest.mark.timeout(30)


def test_a_large_job_round_trips_deflated() -> None:
    job = jobs_pb2.PreprocessJob(task_id="t", filename="x" * (codec.COMPRESS_ABOVE_BYTES * 2))
    body, headers = codec.encode(job)
    assert headers == {codec.ENCODING_HEADER: "zlib"} and len(body) < codec.COMPRESS_ABOVE_BYTES
    assert codec.decode(jobs_pb2.PreprocessJob, body, headers) == job


def test_a_zlib_bomb_is_refused_at_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_EXPANDED_BYTES", 1024 * 1024)
    bomb = zlib.compress(b"\0" * (64 * 1024 * 1024), 9)  # 64 KB that claims 64 MB
    assert len(bomb) < 100_000
    with pytest.raises(codec.MalformedJobError, match="expands past 1048576 bytes"):
        codec.decode(jobs_pb2.PreprocessJob, bomb, {codec.ENCODING_HEADER: "zlib"})


def test_a_truncated_payload_is_malformed() -> None:
    body, headers = codec.encode(jobs_pb2.PreprocessJob(filename="y" * 200_000))
    with pytest.raises(codec.MalformedJobError, match="truncated"):
        codec.decode(jobs_pb2.PreprocessJob, body[: len(body) // 2], headers)
