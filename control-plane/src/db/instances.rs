//! SQL for instances, their NICs and addresses, and the reports agents make about them.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::ids::{HostId, ImageId, InstanceId, ProjectId, SshKeyId};
use crate::openssh::HostKey;
use crate::states::{BootMode, InstanceState};

/// An instance as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct InstanceRow {
    pub id: InstanceId,
    pub project_id: ProjectId,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub state: InstanceState,
    /// Why the instance is `failed` or `lost`.
    pub state_reason: Option<String>,
    pub generation: i64,
    pub host_id: Option<HostId>,
    /// `None` only for a deleted instance whose image was deleted after it.
    pub image_id: Option<ImageId>,
    pub vcpus: i32,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    pub anti_affinity_group: Option<String>,
    /// The private address of the first NIC, once allocated.
    pub address: Option<String>,
    /// When the guest became reachable in its current boot (its SSH port answered and its host
    /// keys are known); null while it boots and whenever it is not running.
    pub ready_at: Option<DateTime<Utc>>,
    /// The SSH host public keys the guest printed on its serial console: check the guest's
    /// identity against these (`cloudctl instance ssh` does).
    #[schema(value_type = Vec<HostKey>)]
    pub ssh_host_keys: sqlx::types::Json<Vec<HostKey>>,
    /// Its disaster-recovery priority (0 to 1000, highest first): when its host dies, it is
    /// restored elsewhere from its latest snapshot. Null: no DR policy.
    pub dr_priority: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "i.id, i.project_id, i.name, i.state, i.state_reason, i.generation, i.host_id, i.image_id, \
    i.vcpus, i.memory_bytes, i.disk_bytes, i.anti_affinity_group, \
    (SELECT host(a.address) FROM network_interfaces n JOIN ip_allocations a ON a.nic_id = n.id \
      WHERE n.instance_id = i.id ORDER BY n.idx LIMIT 1) AS address, \
    i.ready_at, i.ssh_host_keys, i.dr_priority, i.created_at, i.updated_at";

/// A new instance.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub id: InstanceId,
    pub project_id: ProjectId,
    pub name: String,
    pub image_id: ImageId,
    pub vcpus: i32,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    pub user_data: String,
    pub anti_affinity_group: Option<String>,
    pub ssh_keys: Vec<SshKeyId>,
}

/// Records a new instance (state `creating`, generation 1), its key links and its operation, in
/// one statement: nothing else to wait for, and they exist together or not at all. The project's
/// quotas are handed to the statement's transaction, so the usage triggers refuse it (`CQ001`)
/// when it would take the project over one. With `check_fit`, only if some host could take the
/// instance right now (see [`super::placement::fits`]); `None` when nothing was recorded for
/// that reason (or because the project is gone).
pub async fn instance_create(
    conn: &mut PgConnection,
    new: &NewInstance,
    check_fit: bool,
    quotas: &crate::quotas::Amounts,
    operation: &super::operations::NewOperation<'_>,
) -> Result<Option<(InstanceRow, super::operations::OperationRow)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Created {
        #[sqlx(flatten)]
        instance: InstanceRow,
        operation_created_at: DateTime<Utc>,
    }
    let operation = super::operations::Inserting::new(operation);
    // $1-$5 as the fit check reads them (see `placement::fits`); the quotas' defaults at $11.
    let need = super::placement::Need {
        project_id: new.project_id,
        anti_affinity_group: new.anti_affinity_group.as_deref(),
        vcpus: new.vcpus,
        memory_bytes: new.memory_bytes,
        disk_bytes: new.disk_bytes,
    };
    let fit = if check_fit {
        format!(", (SELECT 1 FROM hosts h WHERE {} LIMIT 1) AS fit", super::placement::fits(&need))
    } else {
        String::new()
    };
    let sql = format!(
        "WITH q AS (SELECT c FROM projects p {handed_over} WHERE p.id = $1),
         i AS (
           INSERT INTO instances (id, project_id, name, image_id, vcpus, memory_bytes, disk_bytes, user_data, anti_affinity_group)
           SELECT $6, $1, $7, $8, $3, $4, $5, $9, $2 FROM q {fit}
           RETURNING *),
         k AS (
           INSERT INTO instance_ssh_keys (instance_id, ssh_key_id) SELECT i.id, key FROM i, unnest($10::uuid[]) AS key),
         {operation_ctes}
         SELECT {COLUMNS}, o.created_at AS operation_created_at FROM i, o",
        handed_over = crate::quotas::handed_over(11),
        operation_ctes = super::operations::Inserting::ctes(16, Some("i")),
    );
    let query = sqlx::query_as(&sql)
        .bind(new.project_id)
        .bind(&new.anti_affinity_group)
        .bind(new.vcpus)
        .bind(new.memory_bytes)
        .bind(new.disk_bytes)
        .bind(new.id)
        .bind(&new.name)
        .bind(new.image_id)
        .bind(&new.user_data)
        .bind(&new.ssh_keys);
    let query = operation.bind(crate::quotas::bind_defaults(query, quotas));
    let created: Option<Created> = query.fetch_optional(conn).await?;
    Ok(created.map(|c| (c.instance, operation.row(c.operation_created_at))))
}

/// A live instance of `project` by name or id.
pub async fn instance_get(
    conn: &mut PgConnection,
    project: ProjectId,
    name_or_id: &str,
) -> Result<Option<InstanceRow>, sqlx::Error> {
    let id = name_or_id.parse::<uuid::Uuid>().ok();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM instances i
         WHERE i.project_id = $1 AND i.deleted_at IS NULL AND (i.name = $2 OR i.id = $3)"
    ))
    .bind(project)
    .bind(name_or_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// An instance by id, whatever its project (for operations and reports).
pub async fn instance_get_unchecked(
    conn: &mut PgConnection,
    id: InstanceId,
) -> Result<Option<InstanceRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM instances i WHERE i.id = $1")).bind(id).fetch_optional(conn).await
}

/// Live instances of a project, oldest first, after the cursor, optionally in one state.
pub async fn instance_list(
    conn: &mut PgConnection,
    project: ProjectId,
    state: Option<InstanceState>,
    after: Option<(DateTime<Utc>, uuid::Uuid)>,
    limit: i64,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    let (at, id) = after.map_or((None, None), |(a, i)| (Some(a), Some(i)));
    let from = super::page_from(after.is_some(), "i.created_at, i.id", ">", 3);
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM instances i
         WHERE i.project_id = $1 AND i.deleted_at IS NULL AND ($2::text IS NULL OR i.state = $2) {from}
         ORDER BY i.created_at, i.id LIMIT $5"
    ))
    .bind(project)
    .bind(state.map(InstanceState::as_str))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Moves an instance to `state` and a new generation, if it is in one of `from`; returns the new
/// generation, or `None` when its state did not allow the change.
pub async fn instance_transition(
    conn: &mut PgConnection,
    id: InstanceId,
    from: &[InstanceState],
    state: InstanceState,
) -> Result<Option<i64>, sqlx::Error> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    sqlx::query_scalar(
        "UPDATE instances SET state = $3, state_reason = NULL, generation = generation + 1, ready_at = NULL,
                updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL AND state = ANY($2) RETURNING generation",
    )
    .bind(id)
    .bind(&from)
    .bind(state.as_str())
    .fetch_optional(conn)
    .await
}

/// Sets the state (and reason) without a new generation: the outcome of an operation. An
/// instance being deleted stays `deleting` (a cancelled create or start does not revive it).
pub async fn instance_set_state(
    conn: &mut PgConnection,
    id: InstanceId,
    state: InstanceState,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE instances SET state = $2, state_reason = $3, updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL AND state <> 'deleting'",
    )
    .bind(id)
    .bind(state.as_str())
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks an instance deleted (its row stays for history; its name is free again) and drops its
/// links to SSH keys, so a key used only by deleted instances can be deleted.
pub async fn instance_mark_deleted(conn: &mut PgConnection, id: InstanceId) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM instance_ssh_keys WHERE instance_id = $1").bind(id).execute(&mut *conn).await?;
    sqlx::query(
        "UPDATE instances SET state = 'deleted', deleted_at = COALESCE(deleted_at, now()), host_id = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Everything the agent needs to run an instance.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentSpecRow {
    pub id: InstanceId,
    pub project_id: ProjectId,
    pub name: String,
    pub generation: i64,
    #[sqlx(try_from = "String")]
    pub state: InstanceState,
    pub host_id: Option<HostId>,
    pub agent_endpoint: Option<String>,
    /// The host's state (`dead`: its agent is not called; it cleans up when it returns).
    pub host_state: Option<String>,
    pub vcpus: i32,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    pub user_data: String,
    pub image_id: ImageId,
    #[sqlx(try_from = "String")]
    pub boot_mode: BootMode,
    pub disk_sha256: Option<String>,
    pub disk_size_bytes: Option<i64>,
    pub kernel_sha256: Option<String>,
    pub initrd_sha256: Option<String>,
    pub kernel_cmdline: String,
    pub firmware: Option<String>,
    pub ssh_keys: Vec<String>,
    pub mac: Option<String>,
    pub address: Option<String>,
    pub subnet: Option<String>,
}

/// The spec of instance `id` as the agent will receive it.
pub async fn instance_agent_spec(conn: &mut PgConnection, id: InstanceId) -> Result<Option<AgentSpecRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.id, i.project_id, i.name, i.generation, i.state, i.host_id, h.agent_endpoint, h.state AS host_state, i.vcpus, i.memory_bytes, i.disk_bytes, i.user_data,
                i.image_id, im.boot_mode, im.disk_sha256, im.disk_size_bytes, im.kernel_sha256, im.initrd_sha256, im.kernel_cmdline,
                im.firmware,
                ARRAY(SELECT k.public_key FROM instance_ssh_keys ik JOIN ssh_keys k ON k.id = ik.ssh_key_id
                      WHERE ik.instance_id = i.id ORDER BY k.name) AS ssh_keys,
                (SELECT n.mac::text FROM network_interfaces n WHERE n.instance_id = i.id AND n.idx = 0) AS mac,
                (SELECT host(a.address) FROM network_interfaces n JOIN ip_allocations a ON a.nic_id = n.id
                  WHERE n.instance_id = i.id AND n.idx = 0) AS address,
                h.instance_subnet::text AS subnet
         FROM instances i JOIN images im ON im.id = i.image_id LEFT JOIN hosts h ON h.id = i.host_id
         WHERE i.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Gives instance `id` its first NIC and an address on its host's /24, unless it has them
/// there: its MAC and address, in one call of `nic_allocate` (migration 0035, which says how).
/// `RowNotFound` when the instance is gone or being deleted. A concurrent allocation of the same
/// address fails on the primary key and the caller retries.
pub async fn nic_allocate(
    conn: &mut PgConnection,
    id: InstanceId,
    host: HostId,
) -> Result<(String, Ipv4Addr), sqlx::Error> {
    let (mac, address): (String, String) =
        sqlx::query_as("SELECT mac, address FROM nic_allocate($1, $2)").bind(id).bind(host).fetch_one(conn).await?;
    let address = address.parse().map_err(|_| sqlx::Error::Protocol(format!("not an IPv4 address: {address}")))?;
    Ok((mac, address))
}

/// The next MAC address of the fleet (`next_mac()`, migration 0035).
pub async fn mac_allocate(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT next_mac()::text").fetch_one(conn).await
}

/// Frees the NICs and addresses of instance `id` (idempotent).
pub async fn nic_release(conn: &mut PgConnection, id: InstanceId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM ip_allocations WHERE nic_id IN (SELECT id FROM network_interfaces WHERE instance_id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM network_interfaces WHERE instance_id = $1").bind(id).execute(conn).await?;
    Ok(())
}

/// One instance as its host reported it.
#[derive(Debug, Clone)]
pub struct InstanceReport {
    pub host: HostId,
    pub id: InstanceId,
    pub generation: i64,
    /// A steady state (running, stopped, failed), or `None` for one operations own.
    pub state: Option<InstanceState>,
    pub reason: Option<String>,
    /// When the guest of this generation's boot became reachable.
    pub ready_at: Option<DateTime<Utc>>,
    /// Its SSH host keys (empty: none published yet, the recorded ones are kept).
    pub host_keys: Vec<HostKey>,
}

/// Applies a batch of agents' reports about their instances, in two statements (each instance
/// once per batch): first what they say of the guests, their readiness in the boot of the
/// current generation (a report of an older generation is about a boot that is gone) and their
/// host keys, which apply while an operation runs; then their steady states, only for an
/// instance on that host, only when the agent applied the current generation, and only when
/// no operation is working on the instance (operations own the transitional states). Returns
/// how many instances changed.
pub async fn instances_apply_reports(conn: &mut PgConnection, reports: &[InstanceReport]) -> Result<u64, sqlx::Error> {
    let guests: Vec<&InstanceReport> =
        reports.iter().filter(|r| r.ready_at.is_some() || !r.host_keys.is_empty()).collect();
    let mut changed = 0;
    if !guests.is_empty() {
        let keys: Vec<sqlx::types::Json<&[HostKey]>> =
            guests.iter().map(|r| sqlx::types::Json(r.host_keys.as_slice())).collect();
        changed += sqlx::query(
            "UPDATE instances i
             SET ready_at = CASE WHEN r.generation >= i.generation THEN r.ready_at ELSE i.ready_at END,
                 ssh_host_keys = CASE WHEN jsonb_array_length(r.keys) > 0 THEN r.keys ELSE i.ssh_host_keys END,
                 updated_at = now()
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::timestamptz[], $5::jsonb[])
                  AS r(host, id, generation, ready_at, keys)
             WHERE i.id = r.id AND i.host_id = r.host AND i.deleted_at IS NULL
               AND ((r.generation >= i.generation AND i.ready_at IS DISTINCT FROM r.ready_at)
                    OR (jsonb_array_length(r.keys) > 0 AND i.ssh_host_keys IS DISTINCT FROM r.keys))",
        )
        .bind(guests.iter().map(|r| r.host).collect::<Vec<_>>())
        .bind(guests.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(guests.iter().map(|r| r.generation).collect::<Vec<_>>())
        .bind(guests.iter().map(|r| r.ready_at).collect::<Vec<_>>())
        .bind(keys)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    let states: Vec<(&InstanceReport, InstanceState)> =
        reports.iter().filter_map(|r| r.state.map(|state| (r, state))).collect();
    if !states.is_empty() {
        changed += sqlx::query(
            "UPDATE instances i SET state = r.state, state_reason = r.reason, reported_generation = r.generation,
                    updated_at = now(), ready_at = CASE WHEN r.state = 'running' THEN i.ready_at END
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[])
                  AS r(host, id, state, generation, reason)
             WHERE i.id = r.id AND i.host_id = r.host AND i.deleted_at IS NULL AND r.generation >= i.generation
               AND (i.state <> r.state OR i.state_reason IS DISTINCT FROM r.reason)
               AND NOT EXISTS (SELECT 1 FROM operations o
                               WHERE o.target_id = i.id AND o.state IN ('pending', 'running', 'undoing'))",
        )
        .bind(states.iter().map(|(r, _)| r.host).collect::<Vec<_>>())
        .bind(states.iter().map(|(r, _)| r.id).collect::<Vec<_>>())
        .bind(states.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>())
        .bind(states.iter().map(|(r, _)| r.generation).collect::<Vec<_>>())
        .bind(states.iter().map(|(r, _)| r.reason.clone()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(changed)
}

/// Declares the instances of dead hosts lost.
pub async fn instance_mark_lost_on_dead_hosts(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE instances SET state = 'lost', state_reason = 'the host stopped reporting and was declared dead',
                ready_at = NULL, updated_at = now()
         WHERE deleted_at IS NULL AND state NOT IN ('lost', 'deleted')
           AND host_id IN (SELECT id FROM hosts WHERE state = 'dead')",
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// Where a suspended instance's saved state is: the snapshot id and the host that holds it.
pub async fn instance_suspend_state(
    conn: &mut PgConnection,
    id: InstanceId,
) -> Result<(Option<crate::ids::SnapshotId>, Option<HostId>), sqlx::Error> {
    let row: Option<(Option<crate::ids::SnapshotId>, Option<HostId>)> =
        sqlx::query_as("SELECT suspend_snapshot_id, suspend_host_id FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.unwrap_or((None, None)))
}

/// Records (or, with `None`s, forgets) where a suspended instance's saved state is.
pub async fn instance_set_suspend_state(
    conn: &mut PgConnection,
    id: InstanceId,
    snapshot: Option<crate::ids::SnapshotId>,
    host: Option<HostId>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE instances SET suspend_snapshot_id = $2, suspend_host_id = $3, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(snapshot)
        .bind(host)
        .execute(conn)
        .await
        .map(drop)
}

/// A new generation for the instance without a change of state (a step that must outrank the
/// requests the agent has applied); returns it.
pub async fn instance_bump_generation(conn: &mut PgConnection, id: InstanceId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE instances SET generation = generation + 1, updated_at = now() WHERE id = $1 RETURNING generation",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}
