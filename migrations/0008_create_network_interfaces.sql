-- NICs and the addresses IPAM handed out from each host's /24. A unique address per subnet is
-- what makes allocation safe under concurrency: a racing allocation fails and retries.
CREATE TABLE network_interfaces (
    id          uuid PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    idx         smallint NOT NULL CHECK (idx >= 0),
    mac         macaddr NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (instance_id, idx)
);

CREATE TABLE ip_allocations (
    address    inet PRIMARY KEY,
    host_id    uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    nic_id     uuid UNIQUE REFERENCES network_interfaces (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ip_allocations_host_idx ON ip_allocations (host_id);
