-- Draining is an operator's intent and outlives liveness changes: a draining host whose lease
-- lapses (suspect) and that reports again comes back as draining, not active.
ALTER TABLE hosts ADD COLUMN draining boolean NOT NULL DEFAULT false;
UPDATE hosts SET draining = true WHERE state = 'draining';
