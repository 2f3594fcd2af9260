//! The fleet CA lives in the database: replicas starting at once agree on one, and a CA an older
//! version kept in `<data_dir>/pki` is imported, so a fleet's hosts keep trusting it.

use control_plane::fleet::Fleet;
use control_plane::fleet::pki::FleetCa;
use control_plane::testing::TestDatabase;

#[tokio::test(flavor = "multi_thread")]
async fn replicas_starting_at_once_share_one_ca_from_the_database() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let loads = dirs.iter().map(|dir| Fleet::load(&pool, dir.path(), Default::default()));
    let fleets = futures::future::try_join_all(loads).await.unwrap();
    let first = fleets[0].ca.cert_pem();
    assert!(fleets.iter().all(|f| f.ca.cert_pem() == first), "the replicas loaded different CAs");
    // Each replica has its own certificate, signed by that CA; no replica wrote the CA to disk.
    assert_ne!(fleets[0].identity.cert_pem, fleets[1].identity.cert_pem);
    assert!(dirs.iter().all(|d| !d.path().join("pki").exists()));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM fleet_ca").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 1);
    let again = Fleet::load(&pool, dirs[0].path(), Default::default()).await.unwrap();
    assert_eq!(again.ca.cert_pem(), first);
}

#[tokio::test]
async fn a_ca_kept_in_the_data_directory_is_imported_once() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old = FleetCa::generate().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    control_plane::fleet::pki::write_private(&pki.join("ca.key"), &old.key_pem).unwrap();
    std::fs::write(pki.join("ca.pem"), &old.cert_pem).unwrap();

    let fleet = Fleet::load(&pool, dir.path(), Default::default()).await.unwrap();
    assert_eq!(fleet.ca.cert_pem(), old.cert_pem);
    // From then on the database's copy is the one: another replica, without the files, gets it.
    let other = tempfile::tempdir().unwrap();
    let replica = Fleet::load(&pool, other.path(), Default::default()).await.unwrap();
    assert_eq!(replica.ca.cert_pem(), old.cert_pem);
}
