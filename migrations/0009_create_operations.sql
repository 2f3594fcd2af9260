-- Durable operations: every mutating API call becomes an operation carried out step by step.
-- A control-plane replica claims an operation with a lease (lease_owner, lease_expires_at); when
-- the lease lapses another replica resumes it from the last recorded step.
CREATE TABLE operations (
    id               uuid PRIMARY KEY,
    project_id       uuid REFERENCES projects (id) ON DELETE CASCADE,
    kind             text NOT NULL,
    target_kind      text NOT NULL,
    target_id        uuid,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'undoing', 'succeeded', 'failed', 'cancelled')),
    params           jsonb NOT NULL DEFAULT '{}',
    result           jsonb,
    error_code       text,
    error_message    text,
    created_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    idempotency_key  text,
    -- SHA-256 of the request body: the same key with a different body is a conflict.
    request_hash     bytea,
    lease_owner      text,
    lease_expires_at timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE UNIQUE INDEX operations_idempotency_idx ON operations (created_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX operations_claimable_idx ON operations (lease_expires_at)
    WHERE state IN ('pending', 'running', 'undoing');
CREATE INDEX operations_target_idx ON operations (target_id, created_at);

CREATE TABLE operation_steps (
    operation_id uuid NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    idx          smallint NOT NULL CHECK (idx >= 0),
    name         text NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'done', 'undoing', 'undone', 'failed')),
    output       jsonb,
    error        text,
    started_at   timestamptz,
    finished_at  timestamptz,
    PRIMARY KEY (operation_id, idx)
);
