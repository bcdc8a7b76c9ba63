-- The first job of a task travels with its row until it is published (an outbox): a gateway that dies,
-- or loses NATS, between the INSERT and the publish leaves the job here, and any replica's reconciler
-- publishes it (escriba.pipeline.outbox). NULL once published. ``outbox_since`` is when it was stored
-- or last claimed, so a claim by one replica keeps the others off it for a grace period.
-- ``upload_bytes``: what the task's upload holds in the object store, counted against its owner's quota
-- while the task is unfinished (a finished task's upload is deleted).

ALTER TABLE transcription_tasks ADD COLUMN outbox_job bytea;
ALTER TABLE transcription_tasks ADD COLUMN outbox_since timestamptz;
ALTER TABLE transcription_tasks ADD COLUMN upload_bytes bigint NOT NULL DEFAULT 0 CHECK (upload_bytes >= 0);

CREATE INDEX transcription_tasks_outbox_idx ON transcription_tasks (outbox_since) WHERE outbox_job IS NOT NULL;
