-- Instances (VMs). Every change is guarded by `generation`: an agent's report only wins when its
-- generation is at least the one the control plane last asked for.
--
--   creating -> starting -> running <-> stopping -> stopped -> deleting -> deleted
--   plus rebooting, snapshotting, restoring, failed (with state_reason), lost (host unreachable)
CREATE TABLE instances (
    id                  uuid PRIMARY KEY,
    project_id          uuid NOT NULL REFERENCES projects (id) ON DELETE RESTRICT,
    name                text NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    state               text NOT NULL DEFAULT 'creating'
                        CHECK (state IN ('creating', 'starting', 'running', 'stopping', 'stopped',
                                         'rebooting', 'snapshotting', 'restoring', 'deleting',
                                         'deleted', 'failed', 'lost')),
    state_reason        text,
    generation          bigint NOT NULL DEFAULT 1 CHECK (generation >= 1),
    -- The generation the host agent last reported having applied.
    reported_generation bigint NOT NULL DEFAULT 0,
    host_id             uuid REFERENCES hosts (id) ON DELETE SET NULL,
    image_id            uuid NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
    vcpus               integer NOT NULL CHECK (vcpus > 0),
    memory_bytes        bigint NOT NULL CHECK (memory_bytes > 0 AND memory_bytes % 1048576 = 0),
    disk_bytes          bigint NOT NULL CHECK (disk_bytes > 0),
    user_data           text NOT NULL DEFAULT '',
    anti_affinity_group text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
-- Names are unique among the live instances of a project; deleted ones keep their rows.
CREATE UNIQUE INDEX instances_project_name_idx ON instances (project_id, name) WHERE deleted_at IS NULL;
CREATE INDEX instances_host_idx ON instances (host_id) WHERE deleted_at IS NULL;
CREATE INDEX instances_anti_affinity_idx ON instances (project_id, anti_affinity_group)
    WHERE anti_affinity_group IS NOT NULL AND deleted_at IS NULL;

CREATE TABLE instance_ssh_keys (
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    ssh_key_id  uuid NOT NULL REFERENCES ssh_keys (id) ON DELETE RESTRICT,
    PRIMARY KEY (instance_id, ssh_key_id)
);
