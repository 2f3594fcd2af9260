-- Addresses are a capacity like vCPUs: a host's /24 gives .2 to .254 (253) to instances, and the
-- scheduler reserves one with each placement, in the same conditional UPDATE, so a full subnet
-- is never chosen and allocation never finds it full. Every placed live instance holds one.
ALTER TABLE hosts ADD COLUMN reserved_addresses integer NOT NULL DEFAULT 0;
UPDATE hosts h SET reserved_addresses =
    (SELECT count(*) FROM instances i WHERE i.host_id = h.id AND i.deleted_at IS NULL);
ALTER TABLE hosts ADD CONSTRAINT hosts_reserved_addresses_check CHECK (reserved_addresses BETWEEN 0 AND 253);

-- MAC addresses are allocated from a sequence (52:54 and 32 bits of it), never derived from an
-- instance id: no two NICs get the same one until four billion have been handed out.
CREATE SEQUENCE mac_addresses AS bigint MINVALUE 0 MAXVALUE 4294967295 START WITH 1 CYCLE;
