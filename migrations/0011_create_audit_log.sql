-- Append-only record of who did what. Rows are never updated or deleted by the application.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_id    uuid,
    actor_kind  text NOT NULL CHECK (actor_kind IN ('user', 'host', 'system')),
    project_id  uuid,
    action      text NOT NULL,
    target_kind text,
    target_id   uuid,
    request_id  text,
    outcome     text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_project_idx ON audit_log (project_id, at DESC);
CREATE INDEX audit_log_target_idx ON audit_log (target_id, at DESC);
