"""The JetStream pipeline around the engines: stage workers, task events and caches.

Transport glue only: each stage handler decodes a job, asks the task repository whether the task still
wants the work, runs the stage's engine (or takes its result from a content-addressed cache), stores the
result idempotently and hands the task to the next stage.
"""
