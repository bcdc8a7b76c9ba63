"""Audio by reference: the preprocess stage downloads ``audio_url`` itself, under the upload's limits.

http(s) URLs go through the outbound address policy (:mod:`escriba.common.outbound`: no private,
loopback or link-local address unless allowed, every redirect hop checked), with a connect and a
total time limit; the body is counted while it streams, so an oversized one is refused when it
crosses the limit (or at once, when its Content-Length says so). ``s3://bucket/key`` is read with the
S3 SDK from the endpoint and credentials the deployment configures. Whose fault a failure is decides
how it ends: a 404, a refused address or a body over the limit fail the task at once; a 5xx, a
timeout or a dropped connection are retried with the stage's backoff. The body goes to a file as it
arrives (hashed on the way), never whole into memory: it may be a gigabyte.
"""

from __future__ import annotations

import asyncio
import hashlib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp

from escriba.common.errors import InvalidInputError, TransientError
from escriba.common.outbound import OutboundSettings, blocked_cause, client_session, open_following
from escriba.common.security import read_secret
from escriba.common.upload import UploadTooLargeError
from escriba.preprocess.settings import FetchSettings

READ_CHUNK_BYTES = 256 * 1024


class AudioUrlError(InvalidInputError):
    """The URL names nothing that can be read (404, 403, no such bucket or key)."""

    reason = "audio_url_unavailable"


class AudioUrlRetryableError(TransientError):
    """The server failed for now (5xx, a timeout, a dropped connection): retry later."""

    reason = "audio_url_unreachable"


@dataclass(frozen=True, slots=True)
class Fetched:
    path: Path
    sha256: str
    filename: str


class AudioFetcher:
    """Downloads for one preprocess worker (one HTTP session, one S3 client, made on first use)."""

    def __init__(self, settings: FetchSettings, outbound: OutboundSettings) -> None:
        self._settings = settings
        self._outbound = outbound
        self._session: aiohttp.ClientSession | None = None
        self._s3: Any = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, dest: Path, *, max_bytes: int) -> Fetched:
        """Download ``url`` into the file ``dest`` (created or replaced)."""
        parts = urllib.parse.urlsplit(url)
        filename = parts.path.rstrip("/").rsplit("/", 1)[-1]
        # Opened and closed in the loop's thread (both quick): an await in ``finally`` could be cut short
        # by a cancelled job and leave the file open.
        sink = _HashingFile(dest.open("wb"))
        try:
            if parts.scheme == "s3":
                await asyncio.to_thread(self._s3_get, parts.netloc, parts.path.lstrip("/"), max_bytes, sink)
            else:
                await self._http_get(url, max_bytes, sink)
        finally:
            sink.file.close()
        return Fetched(dest, sink.digest.hexdigest(), urllib.parse.unquote(filename))

    # http(s) ----------------------------------------------------------------------------------------

    async def _http_get(self, url: str, max_bytes: int, sink: _HashingFile) -> None:
        if self._session is None:
            self._session = client_session(self._outbound, total_timeout_s=self._settings.total_timeout_s)
        try:
            response = await open_following(self._session, "GET", url, settings=self._outbound)
            async with response:
                if response.status >= 500 or response.status in (408, 429):
                    raise AudioUrlRetryableError(f"the audio URL answered HTTP {response.status}")
                if response.status >= 300:
                    raise AudioUrlError(f"the audio URL answered HTTP {response.status}")
                if response.content_length is not None and response.content_length > max_bytes:
                    raise UploadTooLargeError(
                        f"the audio URL's body is {response.content_length} bytes;"
                        f" the limit is {max_bytes} bytes"
                    )
                async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
                    await asyncio.to_thread(sink.write, chunk)
                    if sink.size > max_bytes:
                        raise UploadTooLargeError(
                            f"the audio URL's body exceeds the limit of {max_bytes} bytes"
                        )
        except TimeoutError as exc:
            raise AudioUrlRetryableError(
                f"the audio URL did not finish within {self._settings.total_timeout_s:g} s"
                " (ESCRIBA_FETCH_TIMEOUT_S)"
            ) from exc
        except aiohttp.ClientError as exc:
            blocked = blocked_cause(exc)
            if blocked is not None:
                raise blocked from exc
            raise AudioUrlRetryableError(
                f"the audio URL could not be read: {type(exc).__name__}: {exc}"
            ) from exc

    # s3 ---------------------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            settings = self._settings
            credentials: dict[str, str] = {}
            if settings.s3_access_key_id:
                secret = (
                    read_secret("ESCRIBA_S3_SECRET_ACCESS_KEY_FILE", settings.s3_secret_access_key_file)
                    .decode()
                    .strip()
                )
                credentials = {
                    "aws_access_key_id": settings.s3_access_key_id,
                    "aws_secret_access_key": secret,
                }
            self._s3 = boto3.session.Session().client(
                "s3",
                endpoint_url=settings.s3_endpoint_url or None,
                region_name=settings.s3_region or None,
                config=Config(
                    connect_timeout=self._outbound.connect_timeout_s,
                    read_timeout=settings.total_timeout_s,
                    retries={"max_attempts": 2},
                ),
                **credentials,
            )
        return self._s3

    def _s3_get(self, bucket: str, key: str, max_bytes: int, sink: _HashingFile) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"s3://{bucket}/{key}"
        try:
            reply = self._client().get_object(Bucket=bucket, Key=key)
            size = int(reply.get("ContentLength") or 0)
            if size > max_bytes:
                reply["Body"].close()
                raise UploadTooLargeError(f"{where} is {size} bytes; the limit is {max_bytes} bytes")
            for chunk in reply["Body"].iter_chunks(READ_CHUNK_BYTES):
                sink.write(chunk)
                if sink.size > max_bytes:
                    raise UploadTooLargeError(f"{where} exceeds the limit of {max_bytes} bytes")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status >= 500 or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
                raise AudioUrlRetryableError(f"{where}: S3 answered {code or status}") from exc
            raise AudioUrlError(f"{where}: S3 answered {code or status}") from exc
        except BotoCoreError as exc:
            raise AudioUrlRetryableError(f"{where}: {exc}") from exc


class _HashingFile:
    """A download's file, with the sha256 and size of what was written."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)
