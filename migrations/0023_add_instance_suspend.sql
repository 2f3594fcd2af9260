-- Suspend and resume: a suspended instance's memory, devices and disks are a snapshot on the
-- host that ran it (which is where it resumes), and it holds no capacity meanwhile; it keeps its
-- address.
ALTER TABLE instances DROP CONSTRAINT instances_state_check;
ALTER TABLE instances ADD CONSTRAINT instances_state_check
    CHECK (state IN ('creating', 'starting', 'running', 'stopping', 'stopped', 'rebooting', 'snapshotting',
                     'restoring', 'deleting', 'deleted', 'failed', 'lost', 'suspending', 'suspended'));
ALTER TABLE instances
    ADD COLUMN suspend_snapshot_id uuid,
    ADD COLUMN suspend_host_id uuid REFERENCES hosts (id) ON DELETE SET NULL;
