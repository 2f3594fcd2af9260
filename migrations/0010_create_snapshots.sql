-- Snapshots of instances: disk state, optionally with memory and device state.
CREATE TABLE snapshots (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    instance_id uuid REFERENCES instances (id) ON DELETE SET NULL,
    name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    kind        text NOT NULL CHECK (kind IN ('disk', 'full')),
    state       text NOT NULL DEFAULT 'creating'
                CHECK (state IN ('creating', 'available', 'failed', 'deleting', 'deleted')),
    state_reason text,
    size_bytes  bigint CHECK (size_bytes >= 0),
    -- Where the snapshot's files are: a local path on a host or an object-store URL.
    location    text,
    generation  bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX snapshots_project_name_idx ON snapshots (project_id, name) WHERE deleted_at IS NULL;
CREATE INDEX snapshots_instance_idx ON snapshots (instance_id, created_at DESC);
