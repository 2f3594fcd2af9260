-- Hypervisor hosts and the single-use tokens that let them join.
--
--   joining -> active <-> draining
--   active -> suspect -> dead   (lease expired; dead -> active only through a re-join)
CREATE TABLE hosts (
    id                 uuid PRIMARY KEY,
    hostname           text NOT NULL,
    agent_endpoint     text NOT NULL,
    state              text NOT NULL DEFAULT 'joining'
                       CHECK (state IN ('joining', 'active', 'draining', 'suspect', 'dead')),
    accelerator        text NOT NULL DEFAULT 'kvm' CHECK (accelerator IN ('kvm', 'tcg', 'simulated')),
    total_vcpus        integer NOT NULL CHECK (total_vcpus >= 0),
    total_memory_bytes bigint NOT NULL CHECK (total_memory_bytes >= 0),
    total_disk_bytes   bigint NOT NULL CHECK (total_disk_bytes >= 0),
    -- Reserved by the scheduler in the placement transaction; never above the totals.
    reserved_vcpus        integer NOT NULL DEFAULT 0,
    reserved_memory_bytes bigint NOT NULL DEFAULT 0,
    reserved_disk_bytes   bigint NOT NULL DEFAULT 0,
    instance_subnet    cidr NOT NULL UNIQUE,
    certificate_serial text,
    lease_expires_at   timestamptz,
    last_report_at     timestamptz,
    generation         bigint NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (reserved_vcpus BETWEEN 0 AND total_vcpus),
    CHECK (reserved_memory_bytes BETWEEN 0 AND total_memory_bytes),
    CHECK (reserved_disk_bytes BETWEEN 0 AND total_disk_bytes)
);
CREATE INDEX hosts_state_idx ON hosts (state);
CREATE INDEX hosts_lease_idx ON hosts (lease_expires_at) WHERE state IN ('active', 'draining', 'suspect');

CREATE TABLE host_join_tokens (
    id         uuid PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    host_id    uuid REFERENCES hosts (id) ON DELETE SET NULL,
    CHECK ((used_at IS NULL) = (host_id IS NULL))
);
