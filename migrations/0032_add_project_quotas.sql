-- Per-project quotas: NULL takes the configured default ([quotas]); 0 means no limit.
ALTER TABLE projects
    ADD COLUMN quota_instances    integer CHECK (quota_instances >= 0),
    ADD COLUMN quota_vcpus        integer CHECK (quota_vcpus >= 0),
    ADD COLUMN quota_memory_bytes bigint  CHECK (quota_memory_bytes >= 0),
    ADD COLUMN quota_disk_bytes   bigint  CHECK (quota_disk_bytes >= 0),
    ADD COLUMN quota_snapshots    integer CHECK (quota_snapshots >= 0);

-- What each project holds, kept by triggers in the same transactions that change it, so a
-- quota check reads one row (and locks it: two creates of one project cannot both take the
-- last room) whatever the project's size.
CREATE TABLE project_usage (
    project_id   uuid PRIMARY KEY,
    instances    bigint NOT NULL DEFAULT 0,
    vcpus        bigint NOT NULL DEFAULT 0,
    memory_bytes bigint NOT NULL DEFAULT 0,
    disk_bytes   bigint NOT NULL DEFAULT 0,
    snapshots    bigint NOT NULL DEFAULT 0
);

INSERT INTO project_usage (project_id, instances, vcpus, memory_bytes, disk_bytes, snapshots)
SELECT p.id,
       (SELECT count(*) FROM instances i WHERE i.project_id = p.id AND i.deleted_at IS NULL),
       (SELECT COALESCE(sum(vcpus), 0) FROM instances i WHERE i.project_id = p.id AND i.deleted_at IS NULL),
       (SELECT COALESCE(sum(memory_bytes), 0) FROM instances i WHERE i.project_id = p.id AND i.deleted_at IS NULL),
       (SELECT COALESCE(sum(disk_bytes), 0) FROM instances i WHERE i.project_id = p.id AND i.deleted_at IS NULL),
       (SELECT count(*) FROM snapshots s WHERE s.project_id = p.id AND s.state <> 'deleted')
FROM projects p;

-- Adds to a project's usage. When the transaction set `cloud.quotas` (the effective quotas of
-- the project it checked, as JSON) and this raises a usage past its quota, the change is refused
-- with SQLSTATE CQ001 and a message naming the quota. The triggers below run at commit
-- (deferred), so the usage row is locked only while a transaction commits: creates of one
-- project take turns for that moment alone, and two of them never both take the last room.
CREATE FUNCTION project_usage_add(p uuid, n bigint, v bigint, m bigint, d bigint, s bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    u project_usage;
    q jsonb := NULLIF(current_setting('cloud.quotas', true), '')::jsonb;
    checks text[][] := ARRAY[['instances', 'instances'], ['vcpus', 'vCPUs'], ['memory_bytes', 'bytes of memory'],
                             ['disk_bytes', 'bytes of disk'], ['snapshots', 'snapshots']];
    deltas bigint[] := ARRAY[n, v, m, d, s];
    now_used bigint[];
    lim bigint;
BEGIN
    INSERT INTO project_usage AS pu (project_id, instances, vcpus, memory_bytes, disk_bytes, snapshots)
    VALUES (p, n, v, m, d, s)
    ON CONFLICT (project_id) DO UPDATE SET
        instances = pu.instances + EXCLUDED.instances, vcpus = pu.vcpus + EXCLUDED.vcpus,
        memory_bytes = pu.memory_bytes + EXCLUDED.memory_bytes, disk_bytes = pu.disk_bytes + EXCLUDED.disk_bytes,
        snapshots = pu.snapshots + EXCLUDED.snapshots
    RETURNING * INTO u;
    IF q IS NULL OR (q->>'project')::uuid IS DISTINCT FROM p THEN
        RETURN;
    END IF;
    now_used := ARRAY[u.instances, u.vcpus, u.memory_bytes, u.disk_bytes, u.snapshots];
    FOR i IN 1..5 LOOP
        lim := (q->>checks[i][1])::bigint;
        IF deltas[i] > 0 AND lim > 0 AND now_used[i] > lim THEN
            RAISE EXCEPTION USING ERRCODE = 'CQ001', MESSAGE = format(
                'quota exceeded: project %s may hold at most %s %s (quotas.%s); it holds %s and this needs %s more',
                q->>'name', lim, checks[i][2], checks[i][1], now_used[i] - deltas[i], deltas[i]);
        END IF;
    END LOOP;
END $$;

-- A live instance (deleted_at NULL) counts; the old row's share goes, the new row's comes.
CREATE FUNCTION instances_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.deleted_at IS NULL THEN
        PERFORM project_usage_add(OLD.project_id, -1, -OLD.vcpus, -OLD.memory_bytes, -OLD.disk_bytes, 0);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.deleted_at IS NULL THEN
        PERFORM project_usage_add(NEW.project_id, 1, NEW.vcpus, NEW.memory_bytes, NEW.disk_bytes, 0);
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER instances_usage AFTER INSERT OR DELETE
    OR UPDATE OF deleted_at, vcpus, memory_bytes, disk_bytes, project_id ON instances
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION instances_usage();

-- A snapshot counts until it is deleted.
CREATE FUNCTION snapshots_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state <> 'deleted' THEN
        PERFORM project_usage_add(OLD.project_id, 0, 0, 0, 0, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state <> 'deleted' THEN
        PERFORM project_usage_add(NEW.project_id, 0, 0, 0, 0, 1);
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER snapshots_usage AFTER INSERT OR DELETE OR UPDATE OF state, project_id ON snapshots
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION snapshots_usage();
