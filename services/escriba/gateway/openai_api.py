"""The OpenAI-compatible HTTP API: ``/v1/audio/transcriptions``, ``/v1/audio/translations``,
``/v1/models`` and a health path, for every tool that already speaks OpenAI's audio API.

A transport like the gRPC servicer: it reads the multipart request (aiohttp's streaming reader, the
file spooled to disk past a few MB and bounded by the upload limit while it arrives), asks the same
authenticator who is calling, creates the task through :class:`escriba.gateway.intake.TaskIntake`
(so it is listed, survives restarts and uses the caches), waits for it and renders the answer in the
response format asked for. Errors come back in OpenAI's error JSON with the matching HTTP status.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any, TypeVar

from aiohttp import BodyPartReader, web

from escriba.common.errors import EscribaError, InvalidInputError, LimitExceededError
from escriba.common.grpc_status import status_code_for
from escriba.common.security import SecuritySettings, bearer_token
from escriba.common.startup import StartupError, listening
from escriba.common.upload import DRAIN_LIMIT_BYTES, DRAIN_TIMEOUT_S, UploadTooLargeError
from escriba.db.models import TaskRecord
from escriba.db.states import TaskStatus
from escriba.gateway.auth import Authenticator
from escriba.gateway.failures import http_status_for_reason
from escriba.gateway.intake import TaskIntake
from escriba.gateway.settings import GatewaySettings, HttpSettings
from escriba.gateway.uploads import validate_spec
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.tasks import TaskFlow
from escriba.subtitles import to_srt, to_vtt
from escriba.transcript import Segment
from escriba.v1 import tasks_pb2

T = TypeVar("T")

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
#: What OpenAI's clients send as the model name; it means "this install's default model".
OPENAI_MODEL_ALIAS = "whisper-1"
#: Longest form field other than the file (a prompt is at most 1000 characters in any script).
MAX_FIELD_BYTES = 16 * 1024
SPOOL_IN_MEMORY_BYTES = 4 * 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024
TASK_ID_HEADER = "X-Escriba-Task-Id"
#: Longest a stopping gateway waits for HTTP requests in flight (their tasks go on without them).
SHUTDOWN_S = 5.0

_HTTP_FOR_GRPC = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class ApiError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status, headers=headers)

    @classmethod
    def from_escriba(cls, exc: EscribaError) -> ApiError:
        if exc.reason in ("input_too_large", "audio_too_long"):
            status = 413
        elif isinstance(exc, LimitExceededError):
            status = 429
        else:
            status = _HTTP_FOR_GRPC.get(status_code_for(exc).name, 500)
        code = "invalid_api_key" if status == 401 else exc.reason
        return cls(status, exc.message, code=code)


class SpooledUpload:
    """The multipart file, already received whole (to disk past a few MB), as the intake reads it."""

    def __init__(self, file: IO[bytes], size: int, sha256: str) -> None:
        self._file, self._size, self._sha256 = file, size, sha256

    @property
    def size(self) -> int:
        return self._size

    @property
    def sha256(self) -> str:
        return self._sha256

    async def chunks(self) -> AsyncIterator[bytes]:
        self._file.seek(0)
        while chunk := self._file.read(READ_CHUNK_BYTES):
            yield chunk

    async def drain(self) -> None:
        return None


class OpenAIApi:
    """The aiohttp application and its listener, started and stopped with the gateway."""

    def __init__(
        self,
        runtime: PipelineRuntime,
        settings: GatewaySettings,
        http: HttpSettings,
        auth: Authenticator,
        *,
        security: SecuritySettings | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._runtime, self._settings, self._http, self._auth = runtime, settings, http, auth
        self._security = security
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port = 0

    # Lifecycle -------------------------------------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_FIELD_BYTES)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/translations", self._translations)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        app.router.add_get("/healthz", self._health)
        return app

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(
            self.application(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._ssl_context())
        try:
            with listening("ESCRIBA_HTTP_PORT", "the OpenAI-compatible HTTP API", host, port):
                await site.start()
        except BaseException:
            await self.stop()
            raise
        self.port = int(self._runner.addresses[0][1])
        log.info("OpenAI-compatible HTTP API listening", extra={"port": self.port})
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The gateway's own certificate, when it has one: the HTTP port is as private as gRPC's."""
        security = self._security
        if security is None or not security.tls_cert_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(security.tls_cert_file, security.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(
                "ESCRIBA_TLS_CERT_FILE",
                f"cannot use {security.tls_cert_file} with ESCRIBA_TLS_KEY_FILE {security.tls_key_file}:"
                f" {getattr(exc, 'strerror', None) or exc}",
            ) from exc
        return context

    # Middleware ------------------------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except ApiError as exc:
            if exc.status != 408:  # a body that stopped arriving is not waited for again
                await _drain(request, self._http.body_idle_s)
            return exc.response()
        except EscribaError as exc:
            await _drain(request, self._http.body_idle_s)
            if exc.__class__.__name__ and status_code_for(exc).name == "INTERNAL":
                log.exception("internal error")
            return ApiError.from_escriba(exc).response()
        except web.HTTPException as exc:
            return ApiError(exc.status, exc.reason or "request refused", code="http_error").response()

    # Routes ----------------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        if not self._ready():
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ok"})

    def _model_entries(self) -> list[dict[str, Any]]:
        return [
            {"id": name, "object": "model", "created": 0, "owned_by": "escriba"}
            for name in (*self._runtime.pipeline.models.names, OPENAI_MODEL_ALIAS)
        ]

    async def _models(self, request: web.Request) -> web.Response:
        self._owner(request)
        return web.json_response({"object": "list", "data": self._model_entries()})

    async def _model(self, request: web.Request) -> web.Response:
        self._owner(request)
        wanted = request.match_info["model"]
        for entry in self._model_entries():
            if entry["id"] == wanted:
                return web.json_response(entry)
        raise ApiError(
            404, f"the model {wanted!r} does not exist here", code="model_not_found", param="model"
        )

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._audio(request, task="transcribe")

    async def _translations(self, request: web.Request) -> web.StreamResponse:
        return await self._audio(request, task="translate")

    # The audio endpoints ---------------------------------------------------------------------------

    def _owner(self, request: web.Request) -> str:
        return self._auth.owner_of(
            bearer_token([("authorization", request.headers.get("Authorization", ""))])
        )

    async def _audio(self, request: web.Request, *, task: str) -> web.StreamResponse:
        owner = self._owner(request)
        if not request.content_type.startswith("multipart/form-data"):
            raise ApiError(
                400, "send the audio as multipart/form-data with a `file` field", code="invalid_request"
            )
        fields, upload, filename = await self._read_form(request)
        try:
            spec, response_format = self._spec(fields, filename, task, request)
            record = await TaskIntake(self._runtime, self._settings).create(owner, spec, upload)
        finally:
            upload_file = getattr(upload, "_file", None)
            if upload_file is not None:
                upload_file.close()
        headers = {TASK_ID_HEADER: record.id}
        final = await TaskFlow(self._runtime.pipeline).wait(
            record, timeout_s=self._settings.transcribe_timeout_s, poll_s=self._settings.watch_poll_s
        )
        if final.status is not TaskStatus.COMPLETED:
            return _unfinished(final).response(headers)
        return _render(
            final,
            response_format,
            task=task,
            words="word" in fields.get("granularities", []),
            headers=headers,
        )

    async def _read_form(self, request: web.Request) -> tuple[dict[str, Any], SpooledUpload, str]:
        """The form's fields and its file, whatever their order; the file bounded by the upload limit."""
        reader = await request.multipart()
        fields: dict[str, Any] = {"granularities": []}
        upload: SpooledUpload | None = None
        filename = ""
        while True:
            part = await self._idle(reader.next())
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "nested multipart bodies are not accepted", code="invalid_request")
            name = part.name or ""
            if name == "file":
                if upload is not None:
                    raise ApiError(400, "send one `file`", code="invalid_request", param="file")
                filename = part.filename or ""
                upload = await self._spool(part)
                continue
            value = (await self._idle(_read_field(part, name))).strip()
            if name in ("timestamp_granularities[]", "timestamp_granularities"):
                fields["granularities"].append(value)
            elif name in ("model", "language", "prompt", "temperature", "response_format"):
                fields[name] = value
            # Other fields (stream, chunking_strategy, include[]...) are OpenAI options Escriba does
            # not offer; ignoring them keeps clients that always send them working.
        if upload is None:
            raise ApiError(400, "the request has no `file` field", code="invalid_request", param="file")
        return fields, upload, filename

    async def _idle(self, step: Awaitable[T]) -> T:
        """One read of the body, bounded: a body that stops arriving is answered 408, not waited for."""
        idle_s = self._http.body_idle_s
        try:
            async with asyncio.timeout(idle_s):
                return await step
        except TimeoutError:
            raise ApiError(
                408, f"the request body sent nothing for {idle_s:g} s", code="request_timeout"
            ) from None

    async def _spool(self, part: BodyPartReader) -> SpooledUpload:
        limit = self._settings.max_upload_bytes
        file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
        digest = hashlib.sha256()
        size = 0
        try:
            while chunk := await self._idle(part.read_chunk(READ_CHUNK_BYTES)):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLargeError(f"upload exceeds the limit of {limit} bytes")
                digest.update(chunk)
                file.write(chunk)
        except BaseException:
            file.close()
            raise
        return SpooledUpload(file, size, digest.hexdigest())

    def _spec(
        self, fields: dict[str, Any], filename: str, task: str, request: web.Request
    ) -> tuple[tasks_pb2.TaskSpec, str]:
        response_format = fields.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"response_format must be one of {', '.join(RESPONSE_FORMATS)}; got {response_format!r}",
                code="invalid_value",
                param="response_format",
            )
        for granularity in fields["granularities"]:
            if granularity not in GRANULARITIES:
                raise ApiError(
                    400,
                    f"timestamp_granularities[] takes word or segment; got {granularity!r}",
                    code="invalid_value",
                    param="timestamp_granularities[]",
                )
        model = fields.get("model", "")
        catalogue = self._runtime.pipeline.models
        if model not in ("", OPENAI_MODEL_ALIAS) and catalogue.find(model) is None:
            served = ", ".join((*catalogue.names, OPENAI_MODEL_ALIAS))
            raise ApiError(
                400,
                f"the model {model!r} is not served here; models: {served}",
                code="model_not_found",
                param="model",
            )
        spec = tasks_pb2.TaskSpec(filename=filename)
        options = spec.transcription
        if model not in ("", OPENAI_MODEL_ALIAS):
            options.model = model
        if task == "translate":
            options.task = "translate"
        else:
            options.language = fields.get("language", "")
        options.initial_prompt = fields.get("prompt", "")
        if fields.get("temperature"):
            try:
                options.temperature = float(fields["temperature"])
            except ValueError:
                raise ApiError(
                    400, "temperature must be a number", code="invalid_value", param="temperature"
                ) from None
        options.word_timestamps = "word" in fields["granularities"]
        if response_format in ("srt", "vtt"):
            spec.output_formats.append(
                tasks_pb2.OUTPUT_FORMAT_SRT if response_format == "srt" else tasks_pb2.OUTPUT_FORMAT_VTT
            )
        key = request.headers.get("Idempotency-Key", "")
        if key:
            spec.idempotency_key = key
        try:
            return validate_spec(spec), response_format
        except InvalidInputError as exc:
            raise ApiError(400, exc.message, code=exc.reason) from exc


async def _read_field(part: BodyPartReader, name: str) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(4096):
        data.extend(chunk)
        if len(data) > MAX_FIELD_BYTES:
            raise ApiError(
                400, f"the field {name!r} is over {MAX_FIELD_BYTES} bytes", code="invalid_request", param=name
            )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"the field {name!r} is not UTF-8", code="invalid_request", param=name) from None


async def _drain(request: web.Request, idle_s: float) -> None:
    """Read what the client still sends, bounded in bytes and time: a client that writes its whole body
    before reading (as HTTP clients do) then reads the error instead of a connection reset, and one
    that trickles or stalls is answered anyway."""
    try:
        received = 0
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while received < DRAIN_LIMIT_BYTES:
                async with asyncio.timeout(idle_s):
                    chunk = await request.content.readany()
                if not chunk:
                    return
                received += len(chunk)
    except Exception:
        return


def _unfinished(record: TaskRecord) -> ApiError:
    if record.status is TaskStatus.FAILED:
        status = http_status_for_reason(record.error_reason)
        return ApiError(status, record.error or record.error_reason, code=record.error_reason or "failed")
    if record.status is TaskStatus.CANCELLED:
        return ApiError(409, "the task was cancelled before it finished", code="cancelled")
    return ApiError(
        504,
        f"the task {record.id} is still {record.status.value}; read it later with GetTask",
        code="timeout",
    )


def _render(
    record: TaskRecord, response_format: str, *, task: str, words: bool, headers: dict[str, str]
) -> web.Response:
    result = record.result
    assert result is not None
    text = result.corrected_text or result.text
    if response_format == "text":
        return web.Response(text=text + "\n", content_type="text/plain", headers=headers)
    if response_format == "srt":
        body = result.formats.get("srt") or to_srt(result.segments)
        return web.Response(text=body, content_type="application/x-subrip", headers=headers)
    if response_format == "vtt":
        body = result.formats.get("vtt") or to_vtt(result.segments)
        return web.Response(text=body, content_type="text/vtt", headers=headers)
    if response_format == "json":
        return web.json_response({"text": text}, headers=headers)
    verbose: dict[str, Any] = {
        "task": task,
        "language": result.language,
        "duration": record.audio_duration_s or 0.0,
        "text": text,
        "segments": [_segment_json(s) for s in result.segments],
    }
    if words:
        verbose["words"] = [
            {"word": w.word.strip(), "start": w.start_s, "end": w.end_s}
            for s in result.segments
            for w in s.words
        ]
    return web.json_response(verbose, headers=headers, dumps=json.dumps)


def _segment_json(segment: Segment) -> dict[str, Any]:
    return {
        "id": segment.id,
        "seek": 0,
        "start": segment.start_s,
        "end": segment.end_s,
        "text": segment.text,
        "tokens": [],
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }
