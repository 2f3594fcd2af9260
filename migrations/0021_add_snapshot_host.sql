-- A snapshot's files live on the host that took it (until the shared store): which host, so
-- the snapshot can be deleted there and restored from there. Snapshot names are unique in a
-- project among the snapshots that are not deleted.
ALTER TABLE snapshots ADD COLUMN host_id uuid REFERENCES hosts (id) ON DELETE SET NULL;
DROP INDEX snapshots_project_name_idx;
CREATE UNIQUE INDEX snapshots_project_name_idx ON snapshots (project_id, name) WHERE state <> 'deleted';
