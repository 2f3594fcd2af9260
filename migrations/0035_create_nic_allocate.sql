-- An instance's first NIC and its address, allocated in one call: the allocation step was ten
-- round trips (lock, reads, sequence, inserts), each one waiting for the database under load.

-- The next MAC address of the fleet: 52:54 (locally administered, QEMU's prefix) and 32 bits of
-- the mac_addresses sequence. Allocated, never derived from an id, so two NICs get the same one
-- only after four billion allocations (and then nic_allocate skips one still in use).
CREATE FUNCTION next_mac() RETURNS macaddr LANGUAGE sql VOLATILE AS $$
    SELECT format('52:54:%s:%s:%s:%s', substr(h, 1, 2), substr(h, 3, 2), substr(h, 5, 2), substr(h, 7, 2))::macaddr
    FROM (SELECT lpad(to_hex(nextval('mac_addresses')), 8, '0') AS h) AS next
$$;

-- Gives instance `inst` its first NIC and an address on host `on_host`'s /24, unless it has
-- them there: the lowest free address from .2. An instance that moved to another host (a resume
-- or a recovery elsewhere) keeps its NIC and MAC and gets a new address. An instance gone or
-- being deleted gets nothing (no row): the row lock orders this against the delete's
-- transition, which may have released its addresses already. A concurrent allocation of the
-- same address fails on the primary key, and the caller retries.
CREATE FUNCTION nic_allocate(inst uuid, on_host uuid, OUT mac text, OUT address text) RETURNS SETOF record
LANGUAGE plpgsql AS $$
DECLARE
    live boolean;
    nic uuid;
    nic_mac macaddr;
    held inet;
    held_on uuid;
    subnet inet;
    free inet;
BEGIN
    SELECT i.state NOT IN ('deleting', 'deleted') INTO live
    FROM instances i WHERE i.id = inst AND i.deleted_at IS NULL FOR UPDATE;
    IF live IS NOT TRUE THEN
        RETURN;
    END IF;
    SELECT n.id, n.mac, a.address, a.host_id INTO nic, nic_mac, held, held_on
    FROM network_interfaces n LEFT JOIN ip_allocations a ON a.nic_id = n.id
    WHERE n.instance_id = inst AND n.idx = 0;
    IF held_on = on_host THEN
        mac := nic_mac::text;
        address := host(held);
        RETURN NEXT;
        RETURN;
    END IF;
    IF held IS NOT NULL THEN
        DELETE FROM ip_allocations WHERE ip_allocations.address = held;
    END IF;
    SELECT h.instance_subnet INTO subnet FROM hosts h WHERE h.id = on_host;
    SELECT set_masklen(subnet + n, 32) INTO free
    FROM generate_series(2, 254) AS n
    WHERE n NOT IN (SELECT a.address - subnet FROM ip_allocations a WHERE a.host_id = on_host)
    ORDER BY n LIMIT 1;
    IF free IS NULL THEN
        RAISE EXCEPTION 'no free address left on host %', on_host;
    END IF;
    IF nic IS NULL THEN
        -- After the sequence wrapped around, a MAC still in use is skipped.
        FOR attempt IN 1..64 LOOP
            INSERT INTO network_interfaces (id, instance_id, idx, mac)
            SELECT gen_random_uuid(), inst, 0, m FROM next_mac() AS m
            WHERE NOT EXISTS (SELECT 1 FROM network_interfaces x WHERE x.mac = m)
            ON CONFLICT (instance_id, idx) DO NOTHING;
            -- Not inserted: the MAC is in use, or a concurrent call gave the instance its NIC.
            EXIT WHEN FOUND OR EXISTS (SELECT 1 FROM network_interfaces x WHERE x.instance_id = inst AND x.idx = 0);
        END LOOP;
        SELECT n.id, n.mac INTO nic, nic_mac FROM network_interfaces n WHERE n.instance_id = inst AND n.idx = 0;
        IF nic IS NULL THEN
            RAISE EXCEPTION 'no free MAC address for instance % after 64 tries', inst;
        END IF;
    END IF;
    INSERT INTO ip_allocations (address, host_id, nic_id) VALUES (free, on_host, nic);
    mac := nic_mac::text;
    address := host(free);
    RETURN NEXT;
END $$;
