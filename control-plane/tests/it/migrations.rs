//! The migrations apply to an empty database and produce the schema the code expects.

use control_plane::testing::TestDatabase;

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_create_every_table() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    tables.retain(|t| t != "_sqlx_migrations");
    let expected = [
        "api_tokens",
        "audit_log",
        "fleet_ca",
        "fleet_liveness",
        "host_join_tokens",
        "hosts",
        "images",
        "instance_ssh_keys",
        "instances",
        "ip_allocations",
        "network_interfaces",
        "oidc_logins",
        "operation_steps",
        "operations",
        "project_members",
        "project_usage",
        "projects",
        "sessions",
        "snapshot_policies",
        "snapshots",
        "ssh_keys",
        "users",
    ];
    assert_eq!(tables, expected);

    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await.unwrap();
    assert_eq!(applied as usize, control_plane::db::MIGRATOR.iter().count());
}

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    control_plane::db::migrate(&pool).await.unwrap();
}

#[tokio::test]
async fn instance_generation_and_capacity_constraints_hold() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let host = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO hosts (id, hostname, agent_endpoint, total_vcpus, total_memory_bytes, total_disk_bytes, instance_subnet)
         VALUES ($1, 'h1', 'https://10.0.0.1:7443', 4, 8589934592, 107374182400, '10.100.0.0/24')",
    )
    .bind(host)
    .execute(&pool)
    .await
    .unwrap();
    // The scheduler's reservation can never exceed the host's capacity.
    let over = sqlx::query("UPDATE hosts SET reserved_vcpus = 5 WHERE id = $1").bind(host).execute(&pool).await;
    let err = over.unwrap_err();
    assert_eq!(err.as_database_error().unwrap().code().as_deref(), Some("23514"), "{err}");
    // Two hosts cannot share an instance subnet.
    let dup = sqlx::query(
        "INSERT INTO hosts (id, hostname, agent_endpoint, total_vcpus, total_memory_bytes, total_disk_bytes, instance_subnet)
         VALUES ($1, 'h2', 'https://10.0.0.2:7443', 4, 1, 1, '10.100.0.0/24')",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap_err();
    assert_eq!(dup.as_database_error().unwrap().code().as_deref(), Some("23505"), "{dup}");
    let generation: i64 = sqlx::query_scalar(
        "SELECT column_default::text::bigint FROM information_schema.columns
         WHERE table_name = 'instances' AND column_name = 'generation'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(generation, 1);
}
