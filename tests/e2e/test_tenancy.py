"""Tenancy on a secure local stack: TLS, bearer tokens, owners, and platform-only stage services.

The whole pipeline runs (real speech through the real model), so what is proved is what a user of
``escriba up --secure`` gets: one owner's finished transcript is invisible and untouchable to another.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from escriba import cli
from escriba.client import EscribaClient
from escriba.common.security import bearer_metadata, channel_credentials, open_channel
from escriba.local.nats import EmbeddedNats
from escriba.local.secure import LocalSecurity
from escriba.local.stack import LocalStack
from escriba.v1 import common_pb2, correction_pb2, correction_pb2_grpc, tasks_pb2
from tests.support.stack import run_task, stack_config, status_name
from tests.support.text import JFK_REFERENCE, wer

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

CORRECT = correction_pb2.CorrectRequest(
    segments=[common_pb2.Segment(id=0, start_s=0.0, end_s=1.0, text=" hello   world .")]
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: EmbeddedNats, postgres_dsn: str) -> AsyncIterator[LocalStack]:
    config = dataclasses.replace(
        stack_config(nats_server.url, postgres_dsn), secure=True, owners=("alice", "bob")
    )
    async with LocalStack(config) as running:
        yield running


def security_of(stack: LocalStack) -> LocalSecurity:
    assert stack.security is not None
    return stack.security


def client_for(stack: LocalStack, owner: str | None) -> EscribaClient:
    security = security_of(stack)
    return EscribaClient(stack.address, ca_file=security.ca, token=security.token(owner) if owner else None)


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def first_event(client: EscribaClient, task_id: str) -> tasks_pb2.TaskEvent:
    async for event in client.watch(task_id):
        return event
    raise AssertionError("the watch ended without an event")


async def test_one_owners_transcript_is_invisible_to_another(stack: LocalStack, data_dir: Path) -> None:
    async with client_for(stack, "alice") as alice, client_for(stack, "bob") as bob:
        task = await run_task(alice, data_dir / "jfk.flac")
        assert status_name(task) == "completed", task.error
        assert task.owner_id == "alice"
        assert wer(JFK_REFERENCE, task.result.corrected_text) <= 0.10
        for call in (
            lambda: bob.get(task.id),
            lambda: first_event(bob, task.id),
            lambda: bob.cancel(task.id),
            lambda: bob.archive(task.id),
        ):
            assert await code_of(call()) == grpc.StatusCode.NOT_FOUND
        for archived in (False, True):
            assert (await bob.list(tasks_pb2.ListTasksRequest(archived=archived))).tasks == []
        # Alice's task is as she left it, with its transcript.
        again = await alice.get(task.id)
        assert status_name(again) == "completed" and not again.is_archived
        assert again.result.corrected_text == task.result.corrected_text
        listed = await alice.list(tasks_pb2.ListTasksRequest())
        assert [t.id for t in listed.tasks] == [task.id]
        assert (await alice.archive(task.id)).is_archived


async def test_requests_without_valid_credentials_are_refused(stack: LocalStack) -> None:
    security = security_of(stack)
    request = tasks_pb2.ListTasksRequest()
    async with EscribaClient(stack.address, ca_file=security.ca) as anonymous:
        assert await code_of(anonymous.list(request)) == grpc.StatusCode.UNAUTHENTICATED
    async with EscribaClient(stack.address, ca_file=security.ca, token="x" * 43) as guessing:
        assert await code_of(guessing.list(request)) == grpc.StatusCode.UNAUTHENTICATED
    async with EscribaClient(stack.address, token=security.token("alice")) as plaintext:
        assert await code_of(plaintext.list(request)) == grpc.StatusCode.UNAVAILABLE


async def test_stage_services_on_the_shared_port_take_only_the_service_token(stack: LocalStack) -> None:
    security = security_of(stack)
    service_token = security.service_token_file.read_text().strip()

    async def correct(metadata: Sequence[tuple[str, str]]) -> correction_pb2.CorrectResponse:
        async with open_channel(stack.address, channel_credentials(security.ca)) as channel:
            stub = correction_pb2_grpc.CorrectionServiceStub(channel)
            response: correction_pb2.CorrectResponse = await stub.Correct(CORRECT, metadata=metadata)
            return response

    assert await code_of(correct(())) == grpc.StatusCode.UNAUTHENTICATED
    # A user's token opens TaskService, not the internal services.
    assert await code_of(correct(bearer_metadata(security.token("alice")))) == grpc.StatusCode.UNAUTHENTICATED
    assert (await correct(bearer_metadata(service_token))).text == "Hello world."


async def test_processes_stack_with_mtls_stage_services_and_the_cli(
    nats_server: EmbeddedNats,
    postgres_dsn: str,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``escriba up --secure``'s shape: a process per service, stage services behind mTLS."""
    config = dataclasses.replace(stack_config(nats_server.url, postgres_dsn, mode="processes"), secure=True)
    async with LocalStack(config) as running:
        security = security_of(running)
        correction = f"127.0.0.1:{running.service_port('correction')}"

        async def correct(credentials: grpc.ChannelCredentials) -> str:
            async with open_channel(correction, credentials) as channel:
                stub = correction_pb2_grpc.CorrectionServiceStub(channel)
                return str((await stub.Correct(CORRECT, timeout=30)).text)

        assert await correct(channel_credentials(security.ca, security.client.cert, security.client.key)) == (
            "Hello world."
        )
        assert await code_of(correct(channel_credentials(security.ca))) == grpc.StatusCode.UNAVAILABLE

        base = ["--server", running.address, "--ca", str(security.ca)]
        code = await asyncio.to_thread(cli.main, ["tasks", "list", *base])
        assert code == 1 and "UNAUTHENTICATED" in capsys.readouterr().err
        monkeypatch.setenv("ESCRIBA_TOKEN", security.token("local"))
        audio = str(data_dir / "jfk.flac")
        code = await asyncio.to_thread(cli.main, ["transcribe", *base, "--quiet", audio])
        output = capsys.readouterr().out
        assert code == 0 and wer(JFK_REFERENCE, output) <= 0.10, output
        monkeypatch.delenv("ESCRIBA_TOKEN")
        code = await asyncio.to_thread(cli.main, ["tasks", "list", *base, "--token", security.token("local")])
        assert code == 0 and "completed" in capsys.readouterr().out


async def test_an_unknown_caller_learns_nothing_about_the_request(stack: LocalStack) -> None:
    """The token is checked before the task id is read: a stranger's malformed id is UNAUTHENTICATED,
    not INVALID_ARGUMENT, for GetTask and WatchTask alike."""
    async with client_for(stack, None) as stranger:
        assert await code_of(stranger.get("not-a-task-id")) == grpc.StatusCode.UNAUTHENTICATED

        async def first_of_watch() -> object:
            async for event in stranger.watch("not-a-task-id"):
                return event
            return None

        assert await code_of(first_of_watch()) == grpc.StatusCode.UNAUTHENTICATED
