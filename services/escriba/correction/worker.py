"""The correction stage on JetStream: the last stage, which completes the task.

Corrections are cached by the corrector's own key (text and segments hash, rules version, resolved
options). Completion is a guarded write, so a redelivered job can never store a second result, and a
task cancelled meanwhile stays cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from escriba.bus import Job
from escriba.correction.convert import correction_options_from_pb
from escriba.correction.corrector import Corrector
from escriba.db.models import TaskResult
from escriba.pipeline.cache import MessageCache
from escriba.pipeline.runtime import PipelineRuntime
from escriba.pipeline.stage import StageHandler
from escriba.stages import Stage
from escriba.subtitles import to_srt, to_vtt
from escriba.transcript_pb import (
    edit_from_pb,
    edit_to_pb,
    segment_to_pb,
    segments_from_pb,
    transcript_from_pb,
)
from escriba.v1 import correction_pb2, jobs_pb2


class CorrectionStage(StageHandler[jobs_pb2.CorrectJob]):
    stage = Stage.CORRECTION
    job_type = jobs_pb2.CorrectJob

    def __init__(self, runtime: PipelineRuntime, corrector: Corrector) -> None:
        super().__init__(runtime)
        self.corrector = corrector

    async def process(self, message: jobs_pb2.CorrectJob, job: Job) -> None:
        pipeline = self.pipeline
        task_id = message.task_id
        transcript = transcript_from_pb(message.transcript)
        options = correction_options_from_pb(message.correction)
        if not options.language and transcript.language:
            # The rules follow the language the transcript is in, unless the request says otherwise.
            options = dataclasses.replace(options, language=transcript.language)
        started = time.perf_counter()
        key = self.corrector.cache_key(transcript.text, transcript.segments, options)
        cache = MessageCache(pipeline.corrections, correction_pb2.CorrectResponse, self.stage)
        response = await cache.get(key)
        if response is not None:
            text = response.text
            segments = segments_from_pb(response.segments)
            edits = tuple(edit_from_pb(e) for e in response.edits)
            rules_version = response.rules_version
            notes = tuple(response.notes)
        else:
            result = await asyncio.to_thread(
                self.corrector.correct, transcript.text, transcript.segments, options
            )
            text, segments, edits, rules_version, notes = (
                result.text,
                tuple(result.segments),
                tuple(result.edits),
                result.rules_version,
                result.notes,
            )
            response = correction_pb2.CorrectResponse(
                text=text,
                segments=[segment_to_pb(s) for s in segments],
                edits=[edit_to_pb(e) for e in edits],
                rules_version=rules_version,
                notes=list(notes),
            )
            await cache.put(key, response)
        formats: dict[str, str] = {}
        if "srt" in message.output_formats:
            formats["srt"] = to_srt(segments)
        if "vtt" in message.output_formats:
            formats["vtt"] = to_vtt(segments)
        await pipeline.repo.record_stage_result(
            task_id,
            Stage.CORRECTION,
            {"cache_key": key},
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        await self.tasks.transition(
            pipeline.repo.complete(
                task_id,
                TaskResult(
                    text=transcript.text,
                    corrected_text=text,
                    language=transcript.language,
                    language_probability=transcript.language_probability,
                    segments=segments,
                    edits=edits,
                    formats=formats,
                    model=transcript.model,
                    rules_version=rules_version,
                    transcript_from_cache=message.transcript_from_cache,
                    notes=notes,
                ),
            )
        )
