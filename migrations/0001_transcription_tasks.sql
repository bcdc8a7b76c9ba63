-- The record of truth for every transcription request; see services/escriba/db/tasks.py for the
-- queries these indexes serve. Status changes are guarded in SQL by the repository; the CHECK
-- constraints below keep the invariants true even for a hand-written UPDATE.

CREATE TABLE transcription_tasks (
    id                    uuid PRIMARY KEY,
    owner_id              text NOT NULL CHECK (owner_id <> ''),
    status                text NOT NULL DEFAULT 'queued' CHECK (status IN (
                              'queued', 'preprocessing', 'transcribing', 'correcting',
                              'completed', 'failed', 'cancelled')),
    is_archived           boolean NOT NULL DEFAULT false,

    -- What was submitted.
    filename              text NOT NULL DEFAULT '',
    audio_object          text NOT NULL DEFAULT '',    -- object name in the escriba-audio bucket
    audio_sha256          text NOT NULL DEFAULT '',    -- hex sha256 of the upload
    options               jsonb NOT NULL DEFAULT '{}', -- transcription and correction options, output formats

    -- What the preprocess stage learned about the audio.
    audio_duration_s      double precision CHECK (audio_duration_s >= 0),
    audio                 jsonb NOT NULL DEFAULT '{}', -- AudioInfo

    -- The result, set when the task completes.
    language              text NOT NULL DEFAULT '',
    language_probability  double precision,
    model                 text NOT NULL DEFAULT '',
    rules_version         text NOT NULL DEFAULT '',
    transcript_from_cache boolean NOT NULL DEFAULT false,
    text                  text,                         -- as transcribed
    corrected_text        text,                         -- after the correction stage
    segments              jsonb NOT NULL DEFAULT '[]',  -- corrected segments with words
    edits                 jsonb NOT NULL DEFAULT '[]',  -- every change the correction stage made
    formats               jsonb NOT NULL DEFAULT '{}',  -- rendered outputs by format: {"srt": ..., "vtt": ...}

    -- Failure, retries and timings.
    error_reason          text NOT NULL DEFAULT '',     -- machine reason, e.g. "not_audio"
    error                 text NOT NULL DEFAULT '',     -- readable message
    attempts              integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    stage_attempts        jsonb NOT NULL DEFAULT '{}',  -- deliveries per stage: {"transcription": 2}
    upload_ms             double precision,
    queue_ms              double precision,             -- creation to the first stage start
    preprocess_ms         double precision,
    transcription_ms      double precision,
    correction_ms         double precision,
    total_ms              double precision,             -- upload plus creation to the terminal status

    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    completed_at          timestamptz,                  -- when it reached a terminal status

    CONSTRAINT transcription_tasks_terminal_completed_at
        CHECK ((status IN ('completed', 'failed', 'cancelled')) = (completed_at IS NOT NULL)),
    CONSTRAINT transcription_tasks_completed_has_text
        CHECK (status <> 'completed' OR text IS NOT NULL),
    CONSTRAINT transcription_tasks_archived_is_terminal
        CHECK (NOT is_archived OR status IN ('completed', 'failed', 'cancelled'))
);

-- ListTasks of one owner, newest first (the default listing: archived or not). The trailing
-- (created_at, id) pair serves the keyset cursor, so every page is a range scan in index order,
-- whatever its depth, and nothing is sorted.
CREATE INDEX transcription_tasks_owner_list_idx
    ON transcription_tasks (owner_id, created_at DESC, id DESC);

-- The same listing with the archived filter set (hide archived, or show only archived).
CREATE INDEX transcription_tasks_owner_archived_list_idx
    ON transcription_tasks (owner_id, is_archived, created_at DESC, id DESC);

-- ListTasks of one owner filtered by status, newest first (and work counts per status).
CREATE INDEX transcription_tasks_status_owner_idx
    ON transcription_tasks (status, owner_id, created_at DESC, id DESC);

-- Finished tasks by completion time: the retention purge of archived tasks.
CREATE INDEX transcription_tasks_archived_completed_idx
    ON transcription_tasks (is_archived, completed_at DESC);

-- Listings across all owners (operators), newest first.
CREATE INDEX transcription_tasks_created_idx
    ON transcription_tasks (created_at DESC, id DESC);
