//! `GET /v1/openapi.json`: the API's OpenAPI document, generated from the handlers (utoipa).

use axum::Json;

use utoipa::OpenApi;

use super::auth::BearerAuth;

/// The OpenAPI document of the whole API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "cloud control plane", description = "REST API of the cloud's control plane."),
    paths(
        super::health::healthz,
        super::health::metrics,
        document,
        super::hosts::join_info,
        super::hosts::join_token_create,
        super::hosts::host_list,
        super::hosts::host_get,
        super::hosts::host_drain,
        super::hosts::host_undrain,
        super::hosts::host_declare_dead,
        super::hosts::fleet_liveness,
        super::auth::whoami,
        super::auth::token_create,
        super::auth::token_list,
        super::auth::token_revoke,
        super::projects::project_list,
        super::projects::project_create,
        super::projects::project_get,
        super::projects::project_quotas_get,
        super::projects::project_quotas_set,
        super::ssh_keys::ssh_key_list,
        super::ssh_keys::ssh_key_create,
        super::ssh_keys::ssh_key_get,
        super::ssh_keys::ssh_key_delete,
        super::images::image_list,
        super::images::image_register,
        super::images::image_get,
        super::images::image_delete,
        super::instances::instance_create,
        super::instances::instance_list,
        super::instances::instance_get,
        super::instances::instance_wait,
        super::instances::instance_start,
        super::instances::instance_stop,
        super::instances::instance_reboot,
        super::instances::instance_suspend,
        super::instances::instance_delete,
        super::instances::dr_policy_set,
        super::instances::dr_policy_clear,
        super::snapshots::snapshot_create,
        super::snapshots::snapshot_list,
        super::snapshots::snapshot_get,
        super::snapshots::snapshot_delete,
        super::snapshots::snapshot_restore,
        super::snapshots::snapshot_image,
        super::snapshots::snapshot_policy_set,
        super::snapshots::snapshot_policy_get,
        super::snapshots::snapshot_policy_clear,
        super::console::console,
        super::console::tunnel,
        super::operations::operation_get,
        super::operations::operation_wait,
        super::operations::operation_list,
        super::session::session,
        super::session::session_create,
        super::session::session_delete,
        super::session::oidc_info,
        super::session::oidc_token,
        super::members::member_list,
        super::members::member_add,
        super::members::member_set,
        super::members::member_remove,
        super::members::operator_grant,
        super::members::operator_revoke,
    ),
    modifiers(&BearerAuth),
    components(schemas(
        super::error::ErrorBody,
        super::error::ErrorDetail,
        super::health::Health,
        crate::app::hosts::JoinInfo,
        crate::app::hosts::JoinTokenParams,
        crate::app::hosts::JoinTokenCreated,
        crate::db::hosts::HostRow,
        super::auth::WhoAmI,
        super::auth::UserView,
        super::auth::ProjectMembershipView,
        super::auth::TokenCreateParams,
        super::auth::TokenCreated,
        super::auth::TokenView,
        super::auth::TokenStatus,
        super::auth::TokenList,
        crate::auth::Role,
        crate::app::projects::ProjectCreateParams,
        crate::app::projects::ProjectView,
        crate::app::projects::QuotasView,
        crate::quotas::Amounts,
        crate::quotas::Settable,
        crate::app::ssh_keys::SshKeyCreateParams,
        crate::app::ssh_keys::SshKeyView,
        crate::app::images::ImageRegisterParams,
        crate::app::images::ImageView,
        crate::app::images::BootMode,
        crate::app::instances::InstanceCreateParams,
        crate::app::instances::InstanceAccepted,
        super::instances::InstanceList,
        crate::db::instances::InstanceRow,
        crate::app::snapshots::SnapshotCreateParams,
        crate::app::snapshots::SnapshotAccepted,
        crate::app::instances::InstanceRestoreParams,
        crate::app::instances::WaitUntil,
        crate::app::snapshots::SnapshotPolicyParams,
        crate::app::recovery::DrPolicyParams,
        crate::app::images::ImageFromSnapshotParams,
        crate::db::snapshot_policies::SnapshotPolicyRow,
        crate::db::snapshots::SnapshotRow,
        crate::states::SnapshotKind,
        crate::states::SnapshotState,
        crate::db::operations::OperationRow,
        super::operations::OperationList,
        crate::app::members::MemberAddParams,
        crate::app::members::MemberSetParams,
        crate::db::identity::Member,
        crate::db::identity::User,
        super::members::MemberList,
        super::session::SessionView,
        super::session::SessionCreateParams,
        super::session::OidcInfo,
        super::session::OidcTokenParams,
    )),
    tags(
        (name = "service", description = "Health, metrics and API description"),
        (name = "hosts", description = "The fleet: hosts and join tokens (operators)"),
        (name = "auth", description = "Who you are, and your API tokens"),
        (name = "projects", description = "Projects: the tenants of the cloud"),
        (name = "members", description = "Who may do what: project members and fleet operators"),
        (name = "ssh-keys", description = "SSH public keys injected into instances"),
        (name = "images", description = "Base images instances boot from"),
        (name = "instances", description = "Virtual machines"),
        (name = "snapshots", description = "Snapshots of instances: disks, and optionally memory"),
        (name = "operations", description = "Durable operations carrying out changes")
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "service",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(full())
}

/// The document with this build's version.
fn full() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = crate::VERSION.to_owned();
    doc
}

/// The document as pretty JSON, for `control-plane openapi`.
pub fn document_json() -> Result<String, serde_json::Error> {
    full().to_pretty_json()
}
