-- When an operation began undoing: undo steps are retried within their time limit from then,
-- and abandoned (recorded on the step) after it, so an operation always ends.
ALTER TABLE operations ADD COLUMN undo_started_at timestamptz;
