-- How far transcription is (audio-seconds decoded), so GetTask shows what WatchTask streams; and one
-- row per webhook delivery attempt, so a task shows every try, its answer and why it failed.

ALTER TABLE transcription_tasks ADD COLUMN progress_audio_s double precision
    CHECK (progress_audio_s IS NULL OR progress_audio_s >= 0);

CREATE TABLE webhook_attempts (
    task_id      uuid NOT NULL REFERENCES transcription_tasks (id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    at           timestamptz NOT NULL DEFAULT now(),
    http_status  integer NOT NULL DEFAULT 0 CHECK (http_status BETWEEN 0 AND 999),
    error        text NOT NULL DEFAULT '',
    duration_ms  double precision NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
    delivered    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (task_id, attempt)
);
