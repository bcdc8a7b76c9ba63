"""A request's correction options from their protobuf message (unset fields: the documented defaults)."""

from __future__ import annotations

from escriba.correction.options import CorrectionOptions
from escriba.transcript_pb import glossary_from_pb
from escriba.v1 import common_pb2


def correction_options_from_pb(o: common_pb2.CorrectionOptions) -> CorrectionOptions:
    return CorrectionOptions(
        glossary=glossary_from_pb(o.glossary),
        spelling=o.spelling if o.HasField("spelling") else None,
        remove_hallucinations=o.remove_hallucinations if o.HasField("remove_hallucinations") else True,
        fix_casing=o.fix_casing if o.HasField("fix_casing") else True,
        language=o.language,
    )
