-- Scheduled snapshots: an instance with a policy is snapshotted every `every_secs` while it
-- runs, and only its newest `keep` scheduled snapshots are kept (manual ones are never pruned).
CREATE TABLE snapshot_policies (
    instance_id uuid PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    every_secs  integer NOT NULL CHECK (every_secs >= 10),
    keep        integer NOT NULL CHECK (keep BETWEEN 1 AND 100),
    memory      boolean NOT NULL DEFAULT false,
    last_run_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE snapshots ADD COLUMN scheduled boolean NOT NULL DEFAULT false;
CREATE INDEX snapshots_scheduled_idx ON snapshots (instance_id, created_at DESC) WHERE scheduled;
