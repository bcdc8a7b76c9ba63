"""The ``escriba`` command: serve a service, migrate, run the local stack, transcribe, manage tasks.

Sub-commands import their service lazily so that, for example, ``escriba tasks list`` never loads
faster-whisper.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from escriba.common.errors import EscribaError
from escriba.common.settings import SettingsError, load, setting, settings_class
from escriba.common.startup import StartupError
from escriba.settings_catalog import SETTINGS_MODULES
from escriba.stages import GATEWAY, GATEWAY_MODULE, in_order

if TYPE_CHECKING:
    from escriba.local.secure import LocalSecurity

#: service name -> module exposing ``async def serve(port: int | None) -> None``
SERVICES = {GATEWAY: GATEWAY_MODULE, **{spec.name: spec.server_module for spec in in_order()}}


__all__ = ["SERVICES", "SETTINGS_MODULES", "build_parser", "main"]


@settings_class
@dataclass(frozen=True)
class CliSettings:
    server: str = setting(
        "ESCRIBA_SERVER", "", "TaskService address for `escriba transcribe/tasks` (empty: embedded stack)"
    )
    token: str = setting(
        "ESCRIBA_TOKEN", "", "bearer token `escriba transcribe/tasks` send (CLI only; `--token` overrides)"
    )


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """EscribaClient's credentials from the connection options (the token also from ESCRIBA_TOKEN)."""
    return {
        "token": args.token or load(CliSettings).token or None,
        "tls": args.tls,
        "ca_file": args.ca,
        "cert_file": args.cert,
        "key_file": args.key,
        "server_name": args.tls_server_name,
    }


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", default=None, help="bearer token (default: ESCRIBA_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="TLS, verifying the server with the system CAs")
    parser.add_argument("--ca", default=None, metavar="FILE", help="TLS, verifying the server with this CA")
    parser.add_argument("--cert", default=None, metavar="FILE", help="client certificate for mutual TLS")
    parser.add_argument("--key", default=None, metavar="FILE", help="the client certificate's key")
    parser.add_argument(
        "--tls-server-name",
        default=None,
        metavar="NAME",
        help="name the server's certificate must carry when --server is another address (implies TLS)",
    )


# serve / migrate / settings -------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(SERVICES[args.service])
    asyncio.run(module.serve(port=args.port))
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from escriba.db.migrate import run_migrations
    from escriba.db.settings import DatabaseSettings

    applied = asyncio.run(run_migrations(load(DatabaseSettings)))
    for migration in applied:
        print(f"applied {migration.version:04d} {migration.name}")
    if not applied:
        print("database schema is up to date")
    return 0


def _cmd_purge(args: argparse.Namespace) -> int:
    from escriba.pipeline.retention import run_purge

    report = asyncio.run(run_purge())
    print(
        f"purged {report.tasks} finished tasks ({report.archived_tasks} archived) and"
        f" {report.audio_objects} stored uploads"
    )
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    from escriba.common.settings import describe
    from escriba.settings_catalog import load_all_settings, settings_markdown

    load_all_settings()
    if args.markdown:
        print(settings_markdown(describe()))
        return 0
    for variable, default, doc in describe():
        print(f"{variable}\t{default}\t{doc}")
    return 0


# up -------------------------------------------------------------------------------------------------


def _cmd_up(args: argparse.Namespace) -> int:
    from escriba.common import logging as escriba_logging
    from escriba.local.stack import LocalStack, StackConfig, default_data_dir

    escriba_logging.configure("local", "INFO", json_format=False)

    async def run() -> None:
        stop = asyncio.Event()
        from escriba.common.grpc_server import install_signal_handlers

        install_signal_handlers(stop)
        config = StackConfig(
            data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(),
            port=args.port,
            http_port=args.http_port,
            mode="in_process" if args.in_process else "processes",
            secure=args.secure,
        )
        async with LocalStack(config) as stack:
            print(f"Escriba is up: TaskService at {stack.address}", flush=True)
            print(f"  OpenAI-compatible HTTP API at {stack.http_url}", flush=True)
            print(f"  NATS {stack.nats_url}  PostgreSQL {_redact(stack.database_url)}", flush=True)
            if stack.security is None:
                print("  try: escriba transcribe --server " + stack.address + " FILE", flush=True)
            else:
                _print_security(stack.address, stack.security, processes=config.mode == "processes")
            await stop.wait()
            print("shutting down", flush=True)

    asyncio.run(run())
    return 0


def _print_security(address: str, security: LocalSecurity, *, processes: bool) -> None:
    token = security.token("local")
    print("  security on: TLS, bearer tokens on TaskService, platform credentials on stage services")
    print(f"  CA certificate: {security.ca}")
    print(f"  token (owner local): {token}")
    if processes:
        print(
            f"  stage services (mTLS): client certificate {security.client.cert}, key {security.client.key}"
        )
    else:
        print(f"  stage services: the service token in {security.service_token_file}")
    print(f"  try: escriba transcribe --server {address} --ca {security.ca} --token {token} FILE", flush=True)


def _redact(url: str) -> str:
    if "@" in url and ":" in url.split("@")[0].split("//")[-1]:
        scheme, rest = url.split("//", 1)
        user = rest.split(":", 1)[0]
        return f"{scheme}//{user}:***@{rest.split('@', 1)[1]}"
    return url


# transcribe -----------------------------------------------------------------------------------------


def _task_json(task: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    from escriba.pipeline.taskpb import status_from_pb

    status = status_from_pb(task.status)
    result = task.result
    return {
        "task_id": task.id,
        "status": status.value if status else "unknown",
        "filename": task.spec.filename,
        "text": result.corrected_text,
        "raw_text": result.text,
        "language": result.language,
        "duration_s": result.duration_s or task.audio.duration_s,
        "segments": [
            json_format.MessageToDict(
                s, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for s in result.segments
        ],
        "edits": [json_format.MessageToDict(e, preserving_proto_field_name=True) for e in result.edits],
        "error": task.error,
        "error_reason": task.error_reason,
        "timings_ms": json_format.MessageToDict(task.timings, preserving_proto_field_name=True),
    }


def _render(task: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(_task_json(task), ensure_ascii=False)
    if fmt == "srt":
        return str(task.result.srt)
    if fmt == "vtt":
        return str(task.result.vtt)
    return str(task.result.corrected_text)


def _parse_glossary(values: Sequence[str]) -> list[tuple[str, list[str]]]:
    entries = []
    for value in values:
        term, _, aliases = value.partition("=")
        entries.append((term.strip(), [a.strip() for a in aliases.split(",") if a.strip()]))
    return entries


def _write_output(out_dir: Path, source: Path, fmt: str, output: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source.stem}.{'txt' if fmt == 'text' else fmt}"
    target.write_text(output + ("" if output.endswith("\n") else "\n"))
    return target


async def _transcribe(args: argparse.Namespace) -> int:
    from escriba.client import EscribaClient, make_spec
    from escriba.transcribe_files import FileRun, FileRunner, display_for, expand

    files = expand(args.files)
    for path in files:
        if not path.is_file():
            print(f"escriba: {path}: no such file", file=sys.stderr)
            return 2
    if not files:
        print("escriba: no audio files found in what was given", file=sys.stderr)
        return 2
    server = args.server or load(CliSettings).server
    show = not args.quiet
    formats = [args.format] if args.format in ("srt", "vtt") else []
    glossary = _parse_glossary(args.glossary or [])

    def spec_for(path: Path) -> Any:
        spec = make_spec(
            path.name,
            language=args.language or "",
            hotwords=args.hotwords or "",
            glossary=glossary,
            output_formats=formats,
        )
        spec.transcription.model = args.model or ""
        spec.transcription.task = "translate" if args.translate else ""
        spec.transcription.channels = "separate" if args.separate_channels else ""
        return spec

    def emit(run: FileRun) -> None:
        """Results in input order: on stdout, or one file each under --output."""
        if not run.ok:
            if args.format == "json" and run.task is not None:
                print(_render(run.task, "json"), flush=True)
            return
        assert run.task is not None
        output = _render(run.task, args.format)
        if args.output:
            _write_output(Path(args.output), run.path, args.format, output)
        else:
            print(output, flush=True)

    async with AsyncExitStack() as stack:
        if not server:
            from escriba.local.stack import LocalStack, StackConfig

            if show:
                print("starting the embedded Escriba stack...", file=sys.stderr)
            local = await stack.enter_async_context(LocalStack(StackConfig(port=0, http_port=0)))
            client = await stack.enter_async_context(EscribaClient(local.address))
        else:
            client = await stack.enter_async_context(EscribaClient(server, **_connection(args)))
        runner = FileRunner(client, spec_for, jobs=args.jobs, display=display_for(len(files), quiet=not show))
        summary = await runner.run(files, on_done=emit)
    if show:
        for line in summary.lines():
            print(line, file=sys.stderr)
    return 1 if summary.failures else 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with _tracing("escriba-cli"):
        return asyncio.run(_transcribe(args))


@contextmanager
def _tracing(service: str) -> Iterator[None]:
    """OTEL_* tracing for commands that run services in this process (embedded stack, CLI client)."""
    from escriba.common.tracing import configure_tracing

    provider = configure_tracing(service)
    try:
        yield
    finally:
        if provider is not None:
            provider.shutdown()


# tasks ----------------------------------------------------------------------------------------------


async def _tasks(args: argparse.Namespace) -> int:
    from escriba.client import EscribaClient
    from escriba.pipeline.taskpb import status_from_pb
    from escriba.v1 import tasks_pb2

    server = args.server or load(CliSettings).server
    if not server:
        print("escriba: give --server ADDR or set ESCRIBA_SERVER", file=sys.stderr)
        return 2
    async with EscribaClient(server, **_connection(args)) as client:
        if args.action == "list":
            request = tasks_pb2.ListTasksRequest(page_size=args.limit, page_token=args.page_token or "")
            if args.archived is not None:
                request.archived = args.archived == "yes"
            response = await client.list(request)
            for task in response.tasks:
                status = status_from_pb(task.status)
                print(f"{task.id}\t{status.value if status else '?'}\t{task.spec.filename}")
            if response.next_page_token:
                print(f"# next page: --page-token {response.next_page_token}", file=sys.stderr)
            return 0
        if not args.task_id:
            print(f"escriba: tasks {args.action} needs a task id", file=sys.stderr)
            return 2
        if args.action == "watch":
            async for event in client.watch(args.task_id):
                status = status_from_pb(event.status)
                print(f"{args.task_id}\t{status.value if status else '?'}\t{event.message}", flush=True)
            return 0
        action = {"get": client.get, "cancel": client.cancel, "archive": client.archive}[args.action]
        task = await action(args.task_id)
        print(json.dumps(_task_json(task), ensure_ascii=False, indent=2))
        return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    return asyncio.run(_tasks(args))


# parser ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from escriba.transcribe_files import DEFAULT_JOBS  # here, not at import: it loads gRPC

    parser = argparse.ArgumentParser(prog="escriba", description="Escriba speech-to-text platform")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument("--port", type=int, default=None, help="gRPC port (default: ESCRIBA_GRPC_PORT)")
    serve.set_defaults(func=_cmd_serve)

    migrate = sub.add_parser("migrate", help="apply the numbered SQL migrations to ESCRIBA_DATABASE_URL")
    migrate.set_defaults(func=_cmd_migrate)

    purge = sub.add_parser(
        "purge",
        help="delete finished tasks past ESCRIBA_PURGE_RETENTION_DAYS and the uploads they still name"
        " (safe to run anywhere, concurrently)",
    )
    purge.set_defaults(func=_cmd_purge)

    up = sub.add_parser(
        "up", help="run the whole stack locally (embedded NATS and PostgreSQL unless configured)"
    )
    up.add_argument("--port", type=int, default=50051, help="TaskService port (default 50051)")
    up.add_argument(
        "--http-port", type=int, default=8080, help="OpenAI-compatible HTTP API port (default 8080; 0: any)"
    )
    up.add_argument("--data-dir", default=None, help="where embedded servers keep data")
    up.add_argument("--in-process", action="store_true", help="one process instead of one per service")
    up.add_argument(
        "--secure",
        action="store_true",
        help="TLS and tokens, with throwaway certificates and a token made in the data dir",
    )
    up.set_defaults(func=_cmd_up)

    tr = sub.add_parser("transcribe", help="transcribe files (boots the embedded stack without --server)")
    tr.add_argument("files", nargs="+", metavar="FILE", help="audio files, or directories to search")
    tr.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"files in flight at once, so the server batches them together (default {DEFAULT_JOBS})",
    )
    tr.add_argument("--server", default=None, help="TaskService address (default: ESCRIBA_SERVER)")
    tr.add_argument("--format", choices=("text", "json", "srt", "vtt"), default="text")
    tr.add_argument("--language", default=None, help="ISO 639-1 code; default: detect")
    tr.add_argument(
        "--model", default=None, help="a model the server lists (ListModels); default: its default"
    )
    tr.add_argument(
        "--translate", action="store_true", help="English text from any language (multilingual models)"
    )
    tr.add_argument(
        "--separate-channels",
        action="store_true",
        help="one transcript per channel of a stereo/multichannel file, with a speaker label each",
    )
    tr.add_argument("--hotwords", default=None, help="words to bias decoding towards, e.g. product names")
    tr.add_argument(
        "--glossary",
        action="append",
        metavar="TERM=ALIAS,ALIAS",
        help="replace aliases with TERM (repeatable)",
    )
    tr.add_argument("--output", default=None, metavar="DIR", help="write one file per input into DIR")
    tr.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    _add_connection_options(tr)
    tr.set_defaults(func=_cmd_transcribe)

    tasks = sub.add_parser("tasks", help="list, inspect, watch, cancel or archive tasks")
    tasks.add_argument("action", choices=("list", "get", "watch", "cancel", "archive"))
    tasks.add_argument("task_id", nargs="?", default="")
    tasks.add_argument("--server", default=None)
    tasks.add_argument("--limit", type=int, default=50)
    tasks.add_argument("--page-token", default=None)
    tasks.add_argument("--archived", choices=("yes", "no"), default=None)
    _add_connection_options(tasks)
    tasks.set_defaults(func=_cmd_tasks)

    settings = sub.add_parser("settings", help="list every ESCRIBA_* setting with its default and meaning")
    settings.add_argument("--markdown", action="store_true", help="as the README's table")
    settings.set_defaults(func=_cmd_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The CLI spawns helper processes (pg_ctl, nats-server, services) while gRPC threads run; gRPC's
    # fork handlers are not needed for exec'd children and only print warnings.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except SettingsError as exc:
        print(f"escriba: bad setting: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"escriba: cannot start: {exc.message}", file=sys.stderr)
        return 1
    except EscribaError as exc:
        print(f"escriba: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        import grpc

        if isinstance(exc, grpc.aio.AioRpcError):
            print(f"escriba: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
