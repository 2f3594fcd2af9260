-- Placement reads the few hosts with the most (spread) or least (binpack) headroom through an
-- index, instead of scoring every host of the fleet for each placement: a host's headroom (its
-- smallest free fraction of vCPUs, memory and disk) is kept in its row.
ALTER TABLE hosts ADD COLUMN headroom float8 GENERATED ALWAYS AS (
    LEAST((total_vcpus - reserved_vcpus)::float8 / GREATEST(total_vcpus, 1),
          (total_memory_bytes - reserved_memory_bytes)::float8 / GREATEST(total_memory_bytes, 1),
          (total_disk_bytes - reserved_disk_bytes)::float8 / GREATEST(total_disk_bytes, 1))) STORED;
CREATE INDEX hosts_headroom_idx ON hosts (headroom, id) WHERE state = 'active';
