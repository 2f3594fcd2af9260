//! Addresses and MACs: a host whose subnet is full is never chosen (the scheduler reserves an
//! address with every placement, and says why nothing fits); MAC addresses are allocated from
//! a sequence and never collide; an instance's NIC and address are allocated once per host.

use std::collections::HashSet;

use control_plane::db::instances::{mac_allocate, nic_allocate};
use control_plane::db::placement::shortlist;
use control_plane::ids::InstanceId;
use control_plane::scheduler::Strategy;
use control_plane::scheduler::placement::{Filter, Request, Resources};
use control_plane::scheduler::reserve::{PlacementError, hosts_ranked_for, need};

#[tokio::test]
async fn a_host_with_no_free_address_is_never_chosen() {
    let db = control_plane::testing::TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let full = control_plane::testing::add_host(&pool, "full", 64, 64, 1000).await.unwrap();
    let roomy = control_plane::testing::add_host(&pool, "roomy", 1, 1, 10).await.unwrap();
    sqlx::query("UPDATE hosts SET reserved_addresses = 253 WHERE id = $1").bind(full).execute(&pool).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let project = control_plane::ids::ProjectId::new();
    let request = Request {
        resources: Resources { vcpus: 1, memory_bytes: 1 << 20, disk_bytes: 0 },
        project_id: project,
        anti_affinity_group: None,
    };
    // Spread would prefer the big empty host, but its subnet is full.
    assert_eq!(hosts_ranked_for(&mut conn, &request, Strategy::Spread).await.unwrap(), vec![roomy]);
    // The database's filters (a create's fit check, a placement's shortlist) agree.
    let need = need(&request);
    assert_eq!(shortlist(&mut conn, &need, true, 8).await.unwrap().len(), 1);
    sqlx::query("UPDATE hosts SET reserved_addresses = 253").execute(&pool).await.unwrap();
    assert!(shortlist(&mut conn, &need, true, 8).await.unwrap().is_empty());
    match hosts_ranked_for(&mut conn, &request, Strategy::Spread).await {
        Err(PlacementError::NoHostFits(why)) => {
            assert_eq!(why.removed_by(Filter::Addresses), 2, "{why}");
            assert!(why.to_string().contains("no free address"), "{why}");
        }
        other => panic!("a full subnet was chosen: {other:?}"),
    }
}

#[tokio::test]
async fn ten_thousand_mac_allocations_never_collide() {
    let db = control_plane::testing::TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let mut seen = HashSet::new();
    let mut conn = pool.acquire().await.unwrap();
    for _ in 0..10_000 {
        let mac = mac_allocate(&mut conn).await.unwrap();
        assert!(mac.starts_with("52:54:") && mac.len() == 17, "{mac}");
        assert!(seen.insert(mac.clone()), "{mac} was handed out twice");
    }
}

/// An instance of a new project, in `state`, on no host.
async fn instance(pool: &sqlx::PgPool, state: &str) -> InstanceId {
    let project = control_plane::testing::add_project(pool).await.unwrap();
    control_plane::testing::add_instance(pool, project, "vm", None, state).await.unwrap()
}

#[tokio::test]
async fn a_nic_is_allocated_once_per_host_from_the_lowest_free_address() {
    let db = control_plane::testing::TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let one = control_plane::testing::add_host(&pool, "one", 8, 8, 100).await.unwrap();
    let two = control_plane::testing::add_host(&pool, "two", 8, 8, 100).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let (a, b) = (instance(&pool, "creating").await, instance(&pool, "creating").await);
    let (mac_a, addr_a) = nic_allocate(&mut conn, a, one).await.unwrap();
    assert_eq!(addr_a.to_string(), "10.200.0.2");
    assert!(mac_a.starts_with("52:54:"), "{mac_a}");
    // Again on the same host: the same NIC and address (a step run twice changes nothing).
    assert_eq!(nic_allocate(&mut conn, a, one).await.unwrap(), (mac_a.clone(), addr_a));
    let (mac_b, addr_b) = nic_allocate(&mut conn, b, one).await.unwrap();
    assert_eq!(addr_b.to_string(), "10.200.0.3");
    assert_ne!(mac_a, mac_b);
    // Moved to another host: the same NIC and MAC, an address there; the old one is free again
    // and is the lowest, so it is the next one handed out on the first host.
    let (moved_mac, moved) = nic_allocate(&mut conn, a, two).await.unwrap();
    assert_eq!((moved_mac.as_str(), moved.to_string().as_str()), (mac_a.as_str(), "10.200.1.2"));
    let c = instance(&pool, "creating").await;
    assert_eq!(nic_allocate(&mut conn, c, one).await.unwrap().1.to_string(), "10.200.0.2");
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM ip_allocations").fetch_one(&pool).await.unwrap();
    assert_eq!(held, 3);
    // An instance being deleted gets nothing.
    let going = instance(&pool, "deleting").await;
    assert!(matches!(nic_allocate(&mut conn, going, one).await, Err(sqlx::Error::RowNotFound)));
    // A full subnet is an error that names the host, and allocates nothing.
    sqlx::query(
        "INSERT INTO ip_allocations (address, host_id) SELECT ('10.200.1.' || n)::inet, $1 FROM generate_series(3, 254) n",
    )
    .bind(two)
    .execute(&pool)
    .await
    .unwrap();
    let err = nic_allocate(&mut conn, b, two).await.unwrap_err();
    assert!(err.to_string().contains(&format!("no free address left on host {two}")), "{err}");
    assert_eq!(nic_allocate(&mut conn, b, one).await.unwrap().1, addr_b);
}
