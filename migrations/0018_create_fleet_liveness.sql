-- When host liveness was last judged, and whether the fleet is partitioned. One row.
--
-- A host's silence means something only while the control plane was listening: a liveness pass
-- that finds the previous one long ago (control plane stopped, frozen, or its database away)
-- extends every lease by the gap before it judges anyone. When many hosts go silent together
-- the fleet is degraded (a partition, not deaths) and no host is declared dead automatically.
CREATE TABLE fleet_liveness (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_pass_at   timestamptz NOT NULL DEFAULT now(),
    degraded_since timestamptz,
    silent_hosts   integer NOT NULL DEFAULT 0 CHECK (silent_hosts >= 0)
);
INSERT INTO fleet_liveness DEFAULT VALUES;
