//! `GET /v1/openapi.json`: the API's OpenAPI document, generated from the handlers (utoipa).

use axum::Json;

use utoipa::OpenApi;

use super::auth::{BearerAuth, TokenScopeRule};

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
    modifiers(&BearerAuth, &CommonResponses, &TokenScopeRule, &NoNul),
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
        crate::app::images::Firmware,
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

/// Adds to every operation the errors any handler of its kind can return, so the document
/// lists every status the API answers with, not only those a handler's own logic produces:
///
/// ```text
///  every operation ──────────────────────▶ 503 unavailable (the database cannot be reached)
///  a path or query parameter, or a body ─▶ 400 invalid (does not parse)
///  a path parameter ─────────────────────▶ 404 not_found
///  a JSON body ──────────────────────────▶ 413 too_large, 422 unprocessable
///  a bearer token required ──────────────▶ 401 unauthenticated, 403 forbidden,
///                                          429 rate_limited with Retry-After
/// ```
/// A status the handler already documents keeps its own description.
#[derive(Debug)]
pub struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                add_common_responses(operation);
            }
        }
    }
}

fn add_common_responses(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::ParameterIn;
    let params = operation.parameters.as_deref().unwrap_or_default();
    let has_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let has_input = !params.is_empty() || operation.request_body.is_some();
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut add = |status: &str, description: &str| {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| error_response(description).into());
    };
    add("503", "The database cannot be reached (`unavailable`); try again");
    if has_input {
        add("400", "A parameter or the body is invalid (`invalid`)");
    }
    if has_path {
        add("404", "No such resource (`not_found`)");
    }
    if operation.request_body.is_some() {
        add("413", "The body is larger than the limit (`too_large`)");
        add("422", "The body has the wrong shape: an unknown, missing or mistyped field (`unprocessable`)");
    }
    if secured {
        add("401", "No valid API token or session (`unauthenticated`)");
        add("403", "The caller may not do this (`forbidden`, `quota_exceeded`)");
        let limited = error_response("Over the caller's request rate (`rate_limited`) or connection cap")
            .header(
                "Retry-After",
                utoipa::openapi::HeaderBuilder::new()
                    .schema(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Integer))
                    .description(Some("Seconds to wait before trying again"))
                    .build(),
            )
            .build();
        operation.responses.responses.entry("429".to_owned()).or_insert_with(|| limited.into());
    }
}

/// States that no string the API takes holds a NUL character (`http/json.rs` and
/// `http/extract.rs` refuse one: PostgreSQL text cannot hold it): every string of a parameter
/// or a request body without a pattern, format or enum of its own gets `^[^\u0000]*$`.
#[derive(Debug)]
pub struct NoNul;

impl utoipa::Modify for NoNul {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        let mut bodies = std::collections::BTreeSet::new();
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    if let Some(RefOr::T(schema)) = &mut parameter.schema {
                        forbid_nul(schema);
                    }
                }
                let contents = operation.request_body.iter_mut().flat_map(|b| b.content.values_mut());
                for content in contents {
                    match &mut content.schema {
                        Some(RefOr::Ref(r)) => {
                            bodies.insert(r.ref_location.trim_start_matches("#/components/schemas/").to_owned());
                        }
                        Some(RefOr::T(schema)) => forbid_nul(schema),
                        None => {}
                    }
                }
            }
        }
        let schemas = openapi.components.iter_mut().flat_map(|c| c.schemas.iter_mut());
        for (_, schema) in schemas.filter(|(name, _)| bodies.contains(name.as_str())) {
            if let RefOr::T(schema) = schema {
                forbid_nul(schema);
            }
        }
    }
}

fn forbid_nul(schema: &mut utoipa::openapi::schema::Schema) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ArrayItems, Schema, SchemaType, Type};
    let each = |items: &mut Vec<RefOr<Schema>>| {
        for item in items {
            if let RefOr::T(schema) = item {
                forbid_nul(schema);
            }
        }
    };
    match schema {
        Schema::Object(object) => {
            let string = match &object.schema_type {
                SchemaType::Type(t) => *t == Type::String,
                SchemaType::Array(types) => types.contains(&Type::String),
                SchemaType::AnyValue => false,
            };
            if string && object.pattern.is_none() && object.format.is_none() && object.enum_values.is_none() {
                object.pattern = Some("^[^\\u0000]*$".to_owned());
            }
            for property in object.properties.values_mut() {
                if let RefOr::T(schema) = property {
                    forbid_nul(schema);
                }
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items
                && let RefOr::T(schema) = items.as_mut()
            {
                forbid_nul(schema);
            }
        }
        Schema::AllOf(all) => each(&mut all.items),
        Schema::OneOf(one) => each(&mut one.items),
        Schema::AnyOf(any) => each(&mut any.items),
        _ => {}
    }
}

/// A response with the API's error body.
fn error_response(description: &str) -> utoipa::openapi::ResponseBuilder {
    utoipa::openapi::ResponseBuilder::new().description(description).content(
        "application/json",
        utoipa::openapi::Content::new(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody"))),
    )
}

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
