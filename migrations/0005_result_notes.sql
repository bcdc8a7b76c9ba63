-- What the correction stage could not do as asked (an English-only rule on Japanese text, say),
-- kept with the result so the task itself says so.

ALTER TABLE transcription_tasks ADD COLUMN notes jsonb NOT NULL DEFAULT '[]'::jsonb;
