"""``escriba-operator``: run the autoscaling operator with settings from ``ESCRIBA_OPERATOR_*``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import kopf

from escriba.common.settings import SettingsError, load
from escriba_operator.handlers import register
from escriba_operator.peering import kopf_options
from escriba_operator.settings import OperatorSettings


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv:
        print("escriba-operator takes no arguments; it reads ESCRIBA_OPERATOR_* variables", file=sys.stderr)
        return 2
    try:
        settings = load(OperatorSettings)
    except SettingsError as exc:
        print(f"escriba-operator: {exc}", file=sys.stderr)
        return 2
    kopf.configure(debug=settings.log_level == "debug", verbose=settings.log_level == "debug")
    logging.getLogger().setLevel(settings.log_level.upper())
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    liveness = f"http://{settings.bind_host}:{settings.health_port}/healthz" if settings.health_port else None
    kopf.run(registry=registry, liveness_endpoint=liveness, **kopf_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
