"""The ``escriba`` command: serve a service, migrate, run the local stack, transcribe, manage tasks.

Sub-commands import their service lazily so that, for example, ``escriba tasks list`` never loads
faster-whisper.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from escriba.common.errors import EscribaError
from escriba.common.settings import SettingsError

#: service name -> module exposing ``async def serve(port: int | None) -> None``
SERVICES = {
    "preprocess": "escriba.preprocess.server",
    "transcription": "escriba.transcription.server",
    "correction": "escriba.correction.server",
}


def _cmd_serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(SERVICES[args.service])
    asyncio.run(module.serve(port=args.port))
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    # Importing the modules registers their settings classes.
    for name in (
        "escriba.common.grpc_server",
        "escriba.preprocess.settings",
        "escriba.transcription.settings",
        "escriba.correction.settings",
    ):
        importlib.import_module(name)
    from escriba.common.settings import env_variables

    for variable, doc in sorted(env_variables().items()):
        print(f"{variable}\t{doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="escriba", description="Escriba speech-to-text platform")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one gRPC service in the foreground")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument("--port", type=int, default=None, help="gRPC port (default: ESCRIBA_GRPC_PORT)")
    serve.set_defaults(func=_cmd_serve)

    settings = sub.add_parser("settings", help="list every ESCRIBA_* setting with its meaning")
    settings.set_defaults(func=_cmd_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except SettingsError as exc:
        print(f"escriba: bad setting: {exc}", file=sys.stderr)
        return 2
    except EscribaError as exc:
        print(f"escriba: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
