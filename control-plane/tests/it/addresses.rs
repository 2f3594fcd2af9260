//! Addresses and MACs: a host whose subnet is full is never chosen (the scheduler reserves an
//! address with every placement, and says why nothing fits); MAC addresses are allocated from
//! a sequence and never collide.

use std::collections::HashSet;

use control_plane::db::instances::mac_allocate;
use control_plane::db::placement::shortlist;
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
