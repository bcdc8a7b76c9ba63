"""For ``kopf run -m escriba_operator.kopf_entry``: the handlers on kopf's default registry.

``escriba-operator`` is the usual entry point; this module lets kopf's own CLI (its ``--namespace``,
``--standalone``, ``--liveness`` and ``--peering`` flags) run the same handlers. Importing it registers
them, so nothing else imports it.
"""

from __future__ import annotations

import kopf

from escriba.common.settings import load
from escriba_operator.handlers import register
from escriba_operator.settings import OperatorSettings

runtime = register(kopf.get_default_registry(), load(OperatorSettings))
