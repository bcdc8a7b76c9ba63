"""gRPC transport of the correction engine: convert, run off the event loop, convert back."""

from __future__ import annotations

import asyncio
import time

import grpc

from escriba.common import convert, metrics
from escriba.common.grpc_status import translate_errors
from escriba.correction.corrector import Corrector
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
        options = convert.correction_options_from_pb(request.options)
        segments = convert.segments_from_pb(request.segments)
        started = time.perf_counter()
        with metrics.IN_FLIGHT.labels(STAGE).track_inprogress():
            result = await asyncio.to_thread(self.corrector.correct, request.text, segments, options)
        metrics.STAGE_LATENCY.labels(STAGE).observe(time.perf_counter() - started)
        return correction_pb2.CorrectResponse(
            text=result.text,
            segments=[convert.segment_to_pb(s) for s in result.segments],
            edits=[convert.edit_to_pb(e) for e in result.edits],
            rules_version=result.rules_version,
        )
