-- A snapshot's files live on the host that took it (until the shared store): which host, so
-- the snapshot can be deleted there and restored from there. What a restore needs of the
-- instance it was taken of is kept with it (the instance may be deleted by then). Snapshot
-- names are unique in a project among the snapshots that are not deleted.
ALTER TABLE snapshots
    ADD COLUMN host_id uuid REFERENCES hosts (id) ON DELETE SET NULL,
    ADD COLUMN image_id uuid REFERENCES images (id) ON DELETE SET NULL,
    ADD COLUMN vcpus integer CHECK (vcpus > 0),
    ADD COLUMN memory_bytes bigint CHECK (memory_bytes > 0),
    ADD COLUMN disk_bytes bigint CHECK (disk_bytes >= 0);
DROP INDEX snapshots_project_name_idx;
CREATE UNIQUE INDEX snapshots_project_name_idx ON snapshots (project_id, name) WHERE state <> 'deleted';
