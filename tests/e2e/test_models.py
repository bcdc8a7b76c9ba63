"""Two models in one local stack (the bundled tiny.en and the multilingual base): each request routed
to its model's own subject and consumer, language detection, a forced language, translation, and
clear refusals of what a model cannot do, before anything is stored."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import openai
import pytest
import pytest_asyncio

from escriba.client import EscribaClient, make_spec
from escriba.local.nats import EmbeddedNats
from escriba.local.stack import LocalStack
from escriba.v1 import tasks_pb2
from tests.support.media import JFK
from tests.support.stack import run_task, stack_config
from tests.support.text import JFK_REFERENCE, wer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

JAPANESE = Path(__file__).resolve().parents[1] / "data" / "common_voice_ja_24511055.mp3"
CATALOGUE = [
    {"name": "tiny.en", "source": "bundled"},
    {"name": "base", "source": "package:base"},
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    config = dataclasses.replace(
        stack_config(nats_server.url, postgres_dsn, env={"ESCRIBA_MODELS": json.dumps(CATALOGUE)}),
        models=("tiny.en", "base"),
    )
    async with LocalStack(config) as running:
        yield running


def spec_for(path: Path, *, model: str = "", language: str = "", task: str = "") -> tasks_pb2.TaskSpec:
    spec = make_spec(path.name, language=language)
    spec.transcription.model = model
    spec.transcription.task = task
    return spec


async def delivered(stack: LocalStack, consumer: str) -> int:
    assert stack.runtime is not None
    pipeline = stack.runtime.pipeline
    info = await pipeline.js.consumer_info(pipeline.names.jobs_stream, consumer)
    return int(info.delivered.consumer_seq or 0)


async def test_each_model_gets_its_own_jobs(stack: LocalStack, client: EscribaClient) -> None:
    before_default = await delivered(stack, "transcription")
    before_base = await delivered(stack, "transcription-base")
    default = await run_task(client, JFK, spec_for(JFK))
    base = await run_task(client, JFK, spec_for(JFK, model="base"))
    assert default.status == base.status == tasks_pb2.TASK_STATUS_COMPLETED
    assert default.result.model == "tiny.en" and base.result.model == "base"
    assert wer(JFK_REFERENCE, base.result.corrected_text) < 0.15
    assert not default.result.notes and not base.result.notes  # English: every rule ran
    assert await delivered(stack, "transcription") == before_default + 1
    assert await delivered(stack, "transcription-base") == before_base + 1
    assert not base.result.transcript_from_cache  # the cache keys keep the model apart


async def test_the_multilingual_model_detects_japanese(client: EscribaClient) -> None:
    task = await run_task(client, JAPANESE, spec_for(JAPANESE, model="base"))
    assert task.status == tasks_pb2.TASK_STATUS_COMPLETED, task.error
    assert task.result.language == "ja"
    assert task.result.language_probability > 0.8
    assert any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in task.result.text)
    # English-only correction rules followed the detected language, and the task says so.
    assert any(
        note.startswith("casing: sentence starts only") and "'ja'" in note for note in task.result.notes
    )


async def test_translation_gives_english_text(client: EscribaClient) -> None:
    task = await run_task(client, JAPANESE, spec_for(JAPANESE, model="base", task="translate"))
    assert task.status == tasks_pb2.TASK_STATUS_COMPLETED, task.error
    text = task.result.text
    assert text.strip() and sum(c.isascii() for c in text) / len(text) > 0.95, text


async def test_a_forced_language_is_used(client: EscribaClient) -> None:
    task = await run_task(client, JFK, spec_for(JFK, model="base", language="en"))
    assert task.result.language == "en" and task.result.language_probability == 1.0


@pytest.mark.parametrize(
    ("model", "language", "task", "reason"),
    [
        ("large-v3", "", "", "unknown_model"),
        ("tiny.en", "ja", "", "unsupported_language"),
        ("", "de", "", "unsupported_language"),
        ("tiny.en", "", "translate", "translation_unsupported"),
    ],
)
async def test_what_a_model_cannot_do_is_refused_before_storing(
    stack: LocalStack, client: EscribaClient, model: str, language: str, task: str, reason: str
) -> None:
    assert stack.runtime is not None
    listed = await client.list(tasks_pb2.ListTasksRequest(page_size=500))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.create_task(JFK, spec_for(JFK, model=model, language=language, task=task))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(info.value.trailing_metadata() or ()).get("escriba-reason") == reason
    after = await client.list(tasks_pb2.ListTasksRequest(page_size=500))
    assert len(after.tasks) == len(listed.tasks)


async def test_list_models_names_both(client: EscribaClient) -> None:
    reply = await client.stub.ListModels(tasks_pb2.ListModelsRequest(), metadata=client.metadata)
    assert [(m.name, m.is_default, m.languages) for m in reply.models] == [
        ("tiny.en", True, tasks_pb2.MODEL_LANGUAGES_ENGLISH_ONLY),
        ("base", False, tasks_pb2.MODEL_LANGUAGES_MULTILINGUAL),
    ]


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the client marks translations so
async def test_the_http_translations_route_uses_the_multilingual_model(stack: LocalStack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.http_url, api_key="unused", max_retries=0) as http:
        models = [m.id async for m in http.models.list()]
        assert models == ["tiny.en", "base", "whisper-1"]
        with JAPANESE.open("rb") as audio:
            translation = await http.audio.translations.create(model="base", file=audio)
        assert translation.text.strip() and translation.text.isascii(), translation.text
        with pytest.raises(openai.BadRequestError) as info, JAPANESE.open("rb") as audio:
            await http.audio.translations.create(model="whisper-1", file=audio)
        assert info.value.code == "translation_unsupported"
