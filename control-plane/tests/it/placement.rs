//! Placement against a real PostgreSQL: strategies, host states, refusals that explain
//! themselves, anti-affinity, idempotent release, and no overcommit under concurrent placements.

use std::collections::HashMap;

use control_plane::db::instances::{NewInstance, instance_create};
use control_plane::db::operations::NewOperation;
use control_plane::ids::{HostId, ImageId, InstanceId, ProjectId};
use control_plane::quotas::Amounts;
use control_plane::scheduler::Strategy;
use control_plane::scheduler::placement::{Filter, Request, Resources};
use control_plane::scheduler::reserve::{PlacementError, hosts_ranked_for, place_instance, release_instance};
use control_plane::states::OperationKind;
use control_plane::testing::TestDatabase;
use sqlx::Connection;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const GIB: i64 = 1 << 30;

/// A migrated database with one project and one image, and helpers to add hosts and instances.
struct Fleet {
    pool: PgPool,
    project: ProjectId,
    image: Uuid,
    _db: TestDatabase,
}

/// What an instance asks for: vCPUs, GiB of memory, GiB of disk, anti-affinity group.
#[derive(Clone, Copy)]
struct Size(i32, i64, i64, Option<&'static str>);

async fn empty_fleet() -> Fleet {
    empty_fleet_with_connections(4).await
}

async fn empty_fleet_with_connections(connections: u32) -> Fleet {
    let db = TestDatabase::create().await.unwrap();
    db.migrated_pool().await.unwrap().close().await;
    let pool = PgPoolOptions::new().max_connections(connections).connect_with(db.options()).await.unwrap();
    let project = new_project(&pool).await;
    let image = control_plane::testing::add_image(&pool).await.unwrap().0;
    Fleet { pool, project, image, _db: db }
}

async fn new_project(pool: &PgPool) -> ProjectId {
    control_plane::testing::add_project(pool).await.unwrap()
}

impl Fleet {
    /// A host in `state` with `vcpus`, `memory` GiB and `disk` GiB, nothing reserved.
    async fn host(&self, state: &str, vcpus: i32, memory: i64, disk: i64) -> HostId {
        let id = HostId::new();
        sqlx::query(
            "INSERT INTO hosts (id, hostname, agent_endpoint, state, total_vcpus, total_memory_bytes,
                                total_disk_bytes, instance_subnet)
             SELECT $1, 'h', 'https://192.0.2.1:7443', $2, $3, $4, $5,
                    ('10.' || (n / 256) || '.' || (n % 256) || '.0/24')::cidr
             FROM (SELECT count(*) AS n FROM hosts) existing",
        )
        .bind(id)
        .bind(state)
        .bind(vcpus)
        .bind(memory * GIB)
        .bind(disk * GIB)
        .execute(&self.pool)
        .await
        .unwrap();
        id
    }

    async fn instance(&self, size: Size) -> InstanceId {
        self.instance_in(self.project, size).await
    }

    async fn instance_in(&self, project: ProjectId, Size(vcpus, memory, disk, group): Size) -> InstanceId {
        let id = InstanceId::new();
        sqlx::query(
            "INSERT INTO instances (id, project_id, name, image_id, vcpus, memory_bytes, disk_bytes, anti_affinity_group)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(project)
        .bind(format!("i{}", id.0.simple()))
        .bind(self.image)
        .bind(vcpus)
        .bind(memory * GIB)
        .bind(disk * GIB)
        .bind(group)
        .execute(&self.pool)
        .await
        .unwrap();
        id
    }

    /// Places `instance` in a transaction of its own, committed only on success.
    async fn place(&self, instance: InstanceId, strategy: Strategy) -> Result<HostId, PlacementError> {
        place_in_own_transaction(&self.pool, instance, strategy).await
    }

    async fn release(&self, instance: InstanceId) -> Option<HostId> {
        let mut tx = self.pool.begin().await.unwrap();
        let released = release_instance(&mut tx, instance).await.unwrap();
        tx.commit().await.unwrap();
        released
    }

    /// (vCPUs, memory bytes, disk bytes) reserved on `host`.
    async fn reserved(&self, host: HostId) -> (i32, i64, i64) {
        sqlx::query_as("SELECT reserved_vcpus, reserved_memory_bytes, reserved_disk_bytes FROM hosts WHERE id = $1")
            .bind(host)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn host_of(&self, instance: InstanceId) -> Option<HostId> {
        sqlx::query_scalar("SELECT host_id FROM instances WHERE id = $1")
            .bind(instance)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn reserve_directly(&self, host: HostId, vcpus: i32, memory: i64, disk: i64) {
        sqlx::query(
            "UPDATE hosts SET reserved_vcpus = $2, reserved_memory_bytes = $3, reserved_disk_bytes = $4 WHERE id = $1",
        )
        .bind(host)
        .bind(vcpus)
        .bind(memory * GIB)
        .bind(disk * GIB)
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

/// A host's reservation next to the sum of the instances placed on it.
#[derive(Debug, sqlx::FromRow)]
struct HostUsage {
    #[allow(dead_code, reason = "shown in assertion messages")]
    id: HostId,
    placed_vcpus: i64,
    placed_memory_bytes: i64,
    placed_disk_bytes: i64,
    reserved_vcpus: i32,
    reserved_memory_bytes: i64,
    reserved_disk_bytes: i64,
    total_vcpus: i32,
    total_memory_bytes: i64,
    total_disk_bytes: i64,
}

async fn place_in_own_transaction(
    pool: &PgPool,
    instance: InstanceId,
    strategy: Strategy,
) -> Result<HostId, PlacementError> {
    // No retry: placements never wait for each other's host rows, so none is a deadlock victim.
    let mut tx = pool.begin().await.unwrap();
    let placed = place_instance(&mut tx, instance, strategy).await?;
    tx.commit().await.unwrap();
    Ok(placed.host_id)
}

#[tokio::test]
async fn spread_picks_the_emptiest_host_and_binpack_the_fullest() {
    let fleet = empty_fleet().await;
    let busy = fleet.host("active", 8, 16, 100).await;
    let idle = fleet.host("active", 8, 16, 100).await;
    fleet.reserve_directly(busy, 4, 8, 50).await;

    // The preview ranks without reserving.
    let request = Request {
        resources: Resources { vcpus: 1, memory_bytes: GIB, disk_bytes: 10 * GIB },
        project_id: fleet.project,
        anti_affinity_group: None,
    };
    let mut conn = fleet.pool.acquire().await.unwrap();
    assert_eq!(hosts_ranked_for(&mut conn, &request, Strategy::Spread).await.unwrap(), [idle, busy]);
    assert_eq!(hosts_ranked_for(&mut conn, &request, Strategy::Binpack).await.unwrap(), [busy, idle]);
    drop(conn);
    assert_eq!(fleet.reserved(idle).await, (0, 0, 0));

    let spread = fleet.instance(Size(1, 1, 10, None)).await;
    assert_eq!(fleet.place(spread, Strategy::Spread).await.unwrap(), idle);
    assert_eq!(fleet.reserved(idle).await, (1, GIB, 10 * GIB));

    let binpack = fleet.instance(Size(1, 1, 10, None)).await;
    assert_eq!(fleet.place(binpack, Strategy::Binpack).await.unwrap(), busy);
    assert_eq!(fleet.reserved(busy).await, (5, 9 * GIB, 60 * GIB));
    assert_eq!(fleet.host_of(binpack).await, Some(busy));
}

#[tokio::test]
async fn draining_joining_suspect_and_dead_hosts_are_never_used() {
    let fleet = empty_fleet().await;
    let mut unusable = Vec::new();
    for state in ["joining", "draining", "suspect", "dead"] {
        unusable.push(fleet.host(state, 64, 256, 1000).await);
    }
    let instance = fleet.instance(Size(1, 1, 10, None)).await;
    for strategy in [Strategy::Spread, Strategy::Binpack] {
        let err = fleet.place(instance, strategy).await.unwrap_err();
        assert!(
            matches!(&err, PlacementError::NoHostFits(e) if e.considered == 4 && e.removed_by == [(Filter::NotActive, 4)]),
            "{err}"
        );
    }
    assert_eq!(fleet.host_of(instance).await, None);

    let small = fleet.host("active", 2, 2, 20).await;
    assert_eq!(fleet.place(instance, Strategy::Spread).await.unwrap(), small);
    for host in unusable {
        assert_eq!(fleet.reserved(host).await, (0, 0, 0));
    }
}

#[tokio::test]
async fn when_nothing_fits_the_error_counts_the_hosts_each_filter_removed() {
    let fleet = empty_fleet().await;
    fleet.host("draining", 64, 256, 1000).await;
    fleet.host("active", 2, 64, 1000).await;
    fleet.host("active", 8, 4, 1000).await;
    let full_disk = fleet.host("active", 8, 64, 100).await;
    fleet.reserve_directly(full_disk, 0, 0, 90).await;

    let instance = fleet.instance(Size(4, 8, 20, None)).await;
    let err = fleet.place(instance, Strategy::Spread).await.unwrap_err();
    let PlacementError::NoHostFits(refusal) = &err else { panic!("expected NoHostFits, got {err:#?}") };
    assert_eq!(refusal.considered, 4);
    assert_eq!(
        refusal.removed_by,
        [(Filter::NotActive, 1), (Filter::Vcpus, 1), (Filter::Memory, 1), (Filter::Disk, 1)]
    );
    assert_eq!(
        err.to_string(),
        "no host fits 4 vCPUs, 8 GiB memory, 20 GiB disk: 4 hosts considered; \
         not active: 1, not enough vCPUs: 1, not enough memory: 1, not enough disk: 1"
    );
}

#[tokio::test]
async fn anti_affinity_spreads_a_group_across_hosts() {
    let fleet = empty_fleet().await;
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(fleet.host("active", 16, 64, 1000).await);
    }
    // Binpack would stack everything on one host; the group forbids it.
    let mut web = Vec::new();
    for _ in 0..3 {
        let instance = fleet.instance(Size(1, 1, 10, Some("web"))).await;
        web.push((instance, fleet.place(instance, Strategy::Binpack).await.unwrap()));
    }
    let mut used: Vec<HostId> = web.iter().map(|(_, host)| *host).collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "one member per host: {web:?}");

    let fourth = fleet.instance(Size(1, 1, 10, Some("web"))).await;
    let err = fleet.place(fourth, Strategy::Binpack).await.unwrap_err();
    assert!(matches!(&err, PlacementError::NoHostFits(e) if e.removed_by(Filter::AntiAffinity) == 3), "{err}");
    assert!(err.to_string().contains("in anti-affinity group \"web\""), "{err}");

    // Other groups, ungrouped instances and the same group name in another project are unaffected.
    let db = fleet.instance(Size(1, 1, 10, Some("db"))).await;
    fleet.place(db, Strategy::Binpack).await.unwrap();
    let plain = fleet.instance(Size(1, 1, 10, None)).await;
    fleet.place(plain, Strategy::Binpack).await.unwrap();
    let other_project = new_project(&fleet.pool).await;
    let theirs = fleet.instance_in(other_project, Size(1, 1, 10, Some("web"))).await;
    fleet.place(theirs, Strategy::Binpack).await.unwrap();

    // A released member frees its host for the group.
    let (first, first_host) = web[0];
    assert_eq!(fleet.release(first).await, Some(first_host));
    assert_eq!(fleet.place(fourth, Strategy::Binpack).await.unwrap(), first_host);
}

#[tokio::test]
async fn placing_twice_reserves_once_and_releasing_twice_releases_once() {
    let fleet = empty_fleet().await;
    let host = fleet.host("active", 8, 16, 100).await;
    let instance = fleet.instance(Size(2, 4, 20, None)).await;

    let mut tx = fleet.pool.begin().await.unwrap();
    let first = place_instance(&mut tx, instance, Strategy::Spread).await.unwrap();
    let again = place_instance(&mut tx, instance, Strategy::Binpack).await.unwrap();
    tx.commit().await.unwrap();
    assert!(first.newly_reserved && !again.newly_reserved);
    assert_eq!((first.host_id, again.host_id), (host, host));
    assert_eq!(fleet.reserved(host).await, (2, 4 * GIB, 20 * GIB));

    assert_eq!(fleet.release(instance).await, Some(host));
    assert_eq!(fleet.release(instance).await, None);
    assert_eq!(fleet.reserved(host).await, (0, 0, 0));
    assert_eq!(fleet.host_of(instance).await, None);

    // Concurrent releases (each in its own transaction) also release once.
    fleet.place(instance, Strategy::Spread).await.unwrap();
    let releases = (0..4).map(|_| {
        let pool = fleet.pool.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let released = release_instance(&mut tx, instance).await.unwrap();
            tx.commit().await.unwrap();
            released
        })
    });
    let mut released = Vec::new();
    for task in releases.collect::<Vec<_>>() {
        released.push(task.await.unwrap());
    }
    assert_eq!(released.iter().filter(|r| r.is_some()).count(), 1, "{released:?}");
    assert_eq!(fleet.reserved(host).await, (0, 0, 0));

    // A never-placed or unknown instance releases nothing; an unknown one cannot be placed.
    let never = fleet.instance(Size(1, 1, 1, None)).await;
    assert_eq!(fleet.release(never).await, None);
    let unknown = InstanceId::new();
    let err = fleet.place(unknown, Strategy::Spread).await.unwrap_err();
    assert!(matches!(err, PlacementError::UnknownInstance { instance } if instance == unknown));
}

#[tokio::test]
async fn two_hundred_concurrent_placements_never_overcommit_three_small_hosts() {
    let fleet = empty_fleet_with_connections(20).await;
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(fleet.host("active", 16, 32, 400).await);
    }
    let mut instances = Vec::new();
    for k in 0..200 {
        // Mixed sizes; a quarter in one of two anti-affinity groups.
        let group = match k % 8 {
            0 => Some("g0"),
            4 => Some("g1"),
            _ => None,
        };
        let size = Size(1 + k % 2, 1 + i64::from(k % 3), 10 + i64::from(k % 4) * 5, group);
        instances.push(fleet.instance(size).await);
    }
    let tasks: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(k, &instance)| {
            let pool = fleet.pool.clone();
            let strategy = if k % 2 == 0 { Strategy::Spread } else { Strategy::Binpack };
            tokio::spawn(async move { (instance, place_in_own_transaction(&pool, instance, strategy).await) })
        })
        .collect();
    let (mut placed, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            (_, Ok(_)) => placed += 1,
            (_, Err(PlacementError::NoHostFits(_))) => refused += 1,
            (instance, Err(err)) => panic!("instance {instance}: {err:#?}"),
        }
    }
    assert_eq!(placed + refused, 200);
    assert!(placed >= 24, "3 hosts of 16 vCPUs take at least 24 instances of at most 2: {placed}");
    assert!(refused > 0, "more was asked than fits");

    // Per host: the placed instances add up to the reservation, which stays within capacity.
    let usage: Vec<HostUsage> = sqlx::query_as(
        "SELECT h.id, coalesce(sum(i.vcpus), 0) AS placed_vcpus,
                coalesce(sum(i.memory_bytes), 0)::bigint AS placed_memory_bytes,
                coalesce(sum(i.disk_bytes), 0)::bigint AS placed_disk_bytes,
                h.reserved_vcpus, h.reserved_memory_bytes, h.reserved_disk_bytes,
                h.total_vcpus, h.total_memory_bytes, h.total_disk_bytes
         FROM hosts h LEFT JOIN instances i ON i.host_id = h.id
         GROUP BY h.id",
    )
    .fetch_all(&fleet.pool)
    .await
    .unwrap();
    assert_eq!(usage.len(), 3);
    for h in usage {
        let placed = (h.placed_vcpus, h.placed_memory_bytes, h.placed_disk_bytes);
        assert_eq!(placed, (i64::from(h.reserved_vcpus), h.reserved_memory_bytes, h.reserved_disk_bytes), "{h:?}");
        assert!(h.reserved_vcpus <= h.total_vcpus, "{h:?}");
        assert!(h.reserved_memory_bytes <= h.total_memory_bytes, "{h:?}");
        assert!(h.reserved_disk_bytes <= h.total_disk_bytes, "{h:?}");
    }
    let with_host: i64 = sqlx::query_scalar("SELECT count(*) FROM instances WHERE host_id IS NOT NULL")
        .fetch_one(&fleet.pool)
        .await
        .unwrap();
    assert_eq!(with_host, placed);

    // Anti-affinity held under concurrency too: at most one member of a group per host.
    let members: Vec<(String, HostId)> = sqlx::query_as(
        "SELECT anti_affinity_group, host_id FROM instances
         WHERE anti_affinity_group IS NOT NULL AND host_id IS NOT NULL",
    )
    .fetch_all(&fleet.pool)
    .await
    .unwrap();
    let mut per_group_host: HashMap<(String, HostId), usize> = HashMap::new();
    for member in members {
        *per_group_host.entry(member).or_default() += 1;
    }
    assert!(per_group_host.values().all(|&n| n == 1), "{per_group_host:?}");
}

#[tokio::test]
async fn a_create_is_recorded_exactly_when_the_ranking_finds_a_host_on_every_filter() {
    let fleet = empty_fleet().await;
    for state in ["joining", "draining", "suspect", "dead"] {
        fleet.host(state, 64, 256, 1000).await;
    }
    let small = fleet.host("active", 4, 8, 100).await;
    let big = fleet.host("active", 16, 64, 200).await;
    fleet.reserve_directly(big, 8, 16, 100).await;
    // A member of group "db" already runs on each active host.
    for host in [small, big] {
        let member = fleet.instance(Size(1, 1, 1, Some("db"))).await;
        sqlx::query("UPDATE instances SET host_id = $2 WHERE id = $1")
            .bind(member)
            .bind(host)
            .execute(&fleet.pool)
            .await
            .unwrap();
    }
    let other_project = new_project(&fleet.pool).await;
    let cases = [
        (1, 1, 10, None, fleet.project),
        (4, 8, 100, None, fleet.project),     // fits the small host only
        (8, 48, 100, None, fleet.project),    // fits the big one only
        (9, 1, 1, None, fleet.project),       // vCPUs: neither
        (1, 100, 1, None, fleet.project),     // memory: neither
        (1, 1, 150, None, fleet.project),     // disk: neither
        (1, 1, 1, Some("db"), fleet.project), // anti-affinity: both run a member
        (1, 1, 1, Some("db"), other_project), // another project's group is not ours
        (1, 1, 1, Some("web"), fleet.project),
    ];
    let mut conn = fleet.pool.acquire().await.unwrap();
    for (vcpus, memory, disk, group, project) in cases {
        let request = Request {
            resources: Resources { vcpus, memory_bytes: memory * GIB, disk_bytes: disk * GIB },
            project_id: project,
            anti_affinity_group: group.map(str::to_owned),
        };
        // The create's own statement, its fit check guarding the insert; rolled back each time.
        let new = NewInstance {
            id: InstanceId::new(),
            project_id: project,
            name: "probe".to_owned(),
            image_id: ImageId::from(fleet.image),
            vcpus,
            memory_bytes: memory * GIB,
            disk_bytes: disk * GIB,
            user_data: String::new(),
            anti_affinity_group: request.anti_affinity_group.clone(),
            ssh_keys: Vec::new(),
        };
        let operation = NewOperation {
            project_id: Some(project),
            kind: OperationKind::InstanceCreate,
            target_kind: "instance",
            target_id: Some(new.id.0),
            params: serde_json::json!({}),
            created_by: None,
            idempotency_key: None,
            request_hash: None,
            steps: &[],
        };
        let mut tx = conn.begin().await.unwrap();
        let created = instance_create(&mut tx, &new, true, &Amounts::default(), &operation).await.unwrap();
        tx.rollback().await.unwrap();
        let ranked = hosts_ranked_for(&mut conn, &request, Strategy::Spread).await;
        assert_eq!(created.is_some(), ranked.is_ok(), "{request:?}: {ranked:?}");
    }
}

#[tokio::test]
async fn a_placement_reads_a_shortlist_yet_picks_the_host_the_full_ranking_picks() {
    let fleet = empty_fleet().await;
    // More hosts than the shortlist holds, each with a different load.
    let mut hosts = Vec::new();
    for i in 0..40i32 {
        let host = fleet.host("active", 64, 256, 1000).await;
        let n = i64::from(i);
        fleet.reserve_directly(host, (i * 37) % 61, 2 * ((n * 17) % 97), 5 * ((n * 13) % 151)).await;
        hosts.push(host);
    }
    for strategy in [Strategy::Spread, Strategy::Binpack] {
        let request = Request {
            resources: Resources { vcpus: 2, memory_bytes: 4 * GIB, disk_bytes: 20 * GIB },
            project_id: fleet.project,
            anti_affinity_group: None,
        };
        let mut conn = fleet.pool.acquire().await.unwrap();
        let best = hosts_ranked_for(&mut conn, &request, strategy).await.unwrap()[0];
        drop(conn);
        let instance = fleet.instance(Size(2, 4, 20, None)).await;
        assert_eq!(fleet.place(instance, strategy).await.unwrap(), best, "{strategy}");
        fleet.release(instance).await;
    }
}
