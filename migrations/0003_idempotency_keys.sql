-- A caller-chosen key per owner makes CreateTask safe to retry: the second create with the same key
-- finds the first task instead of queueing the audio twice. Partial, so tasks without a key cost the
-- index nothing.

ALTER TABLE transcription_tasks ADD COLUMN idempotency_key text
    CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 128);

CREATE UNIQUE INDEX transcription_tasks_owner_idempotency_key
    ON transcription_tasks (owner_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
