"""gRPC transport of the correction engine: convert, run off the event loop, convert back."""

from __future__ import annotations

import asyncio
import time

import grpc

from escriba.common import metrics
from escriba.common.grpc_status import translate_errors
from escriba.correction.convert import correction_options_from_pb
from escriba.correction.corrector import Corrector
from escriba.transcript_pb import edit_to_pb, segment_to_pb, segments_from_pb
from escriba.v1 import correction_pb2, correction_pb2_grpc

SERVICE_NAME = correction_pb2.DESCRIPTOR.services_by_name["CorrectionService"].full_name
STAGE = "correction"


class CorrectionServicer(correction_pb2_grpc.CorrectionServiceServicer):
    def __init__(self, corrector: Corrector) -> None:
        self.corrector = corrector

    @translate_errors
    async def Correct(
        self, request: correction_pb2.CorrectRequest, context: grpc.aio.ServicerContext
    ) -> correction_pb2.CorrectResponse:
        options = correction_options_from_pb(request.options)
        segments = segments_from_pb(request.segments)
        started = time.perf_counter()
        with metrics.IN_FLIGHT.labels(STAGE).track_inprogress():
            result = await asyncio.to_thread(self.corrector.correct, request.text, segments, options)
        metrics.STAGE_LATENCY.labels(STAGE).observe(time.perf_counter() - started)
        return correction_pb2.CorrectResponse(
            text=result.text,
            segments=[segment_to_pb(s) for s in result.segments],
            edits=[edit_to_pb(e) for e in result.edits],
            rules_version=result.rules_version,
            notes=list(result.notes),
        )
