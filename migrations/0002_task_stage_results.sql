-- One row per task and stage: the primary key makes a stage's result write idempotent, so a job
-- redelivered by JetStream after its worker was lost never produces a second result.

CREATE TABLE task_stage_results (
    task_id      uuid NOT NULL REFERENCES transcription_tasks (id) ON DELETE CASCADE,
    stage        text NOT NULL CHECK (stage IN ('preprocess', 'transcription', 'correction')),
    result       jsonb NOT NULL,
    duration_ms  double precision CHECK (duration_ms >= 0),
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, stage)
);
