"""Speech to text with faster-whisper: the engine behind ``TranscriptionService`` and the transcribe
worker. Nothing here knows about gRPC or NATS; the servicer and the worker adapt their messages to
:class:`TranscriptionOptions` and call :class:`WhisperEngine`.
"""

from escriba.transcription.engine import WhisperEngine
from escriba.transcription.options import TranscriptionOptions, VadParameters
from escriba.transcription.settings import TranscriptionSettings

__all__ = ["TranscriptionOptions", "TranscriptionSettings", "VadParameters", "WhisperEngine"]
