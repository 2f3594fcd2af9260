//! cloudctl's view of the API cannot drift from the served OpenAPI document: for each response
//! type the CLI reads, an example holding every property of the server's schema (nullable ones
//! filled in) must parse into the CLI's type with no field left unknown, and the CLI must name no
//! field the server does not serve.

use std::collections::BTreeSet;

use cloudctl::client::UnknownFields;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

/// A value for `schema` with every property present (and arrays of one item).
fn example(schema: &Value, schemas: &Value, depth: usize) -> Value {
    assert!(depth < 16, "schema nesting too deep: {schema}");
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return example(&schemas[name], schemas, depth + 1);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let chosen = options.iter().find(|o| o["type"] != "null").unwrap_or(&Value::Null);
            return example(chosen, schemas, depth + 1);
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        let mut merged = Map::new();
        for part in all {
            if let Value::Object(fields) = example(part, schemas, depth + 1) {
                merged.extend(fields);
            }
        }
        return Value::Object(merged);
    }
    if let Some(values) = schema["enum"].as_array() {
        return values.iter().find(|v| !v.is_null()).cloned().unwrap_or(Value::Null);
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds.iter().find(|k| *k != "null").cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    match kind.as_str() {
        Some("string") => match schema["format"].as_str() {
            Some("uuid") => json!("00000000-0000-4000-8000-000000000001"),
            Some("date-time") => json!("2025-01-02T03:04:05Z"),
            _ => json!("text"),
        },
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([example(&schema["items"], schemas, depth + 1)]),
        Some("object") | None if schema["properties"].is_object() => {
            let props = schema["properties"].as_object().unwrap();
            Value::Object(props.iter().map(|(k, v)| (k.clone(), example(v, schemas, depth + 1))).collect())
        }
        Some("object") => json!({}),
        _ => Value::Null,
    }
}

fn check<T: DeserializeOwned + Serialize + UnknownFields>(schema_name: &str, doc: &Value) {
    let schemas = &doc["components"]["schemas"];
    let schema = &schemas[schema_name];
    assert!(schema.is_object(), "the served document has no schema {schema_name}");
    let served = example(schema, schemas, 0);
    let parsed: T = serde_json::from_value(served.clone())
        .unwrap_or_else(|e| panic!("cloudctl cannot read a served {schema_name}: {e}\n{served:#}"));
    let unknown: Vec<&String> = parsed.unknown_fields().keys().collect();
    assert!(unknown.is_empty(), "cloudctl does not know the fields {unknown:?} of {schema_name}");
    let served_fields: BTreeSet<&String> = served.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    let named = serde_json::to_value(&parsed).unwrap();
    let invented: Vec<&String> = named.as_object().unwrap().keys().filter(|k| !served_fields.contains(k)).collect();
    assert!(invented.is_empty(), "cloudctl names fields {invented:?} that {schema_name} does not have");
}

#[test]
fn cloudctl_reads_every_field_the_api_serves_and_invents_none() {
    let doc = serde_json::to_value(control_plane::http::openapi::ApiDoc::openapi()).unwrap();
    use cloudctl::client as cli;
    check::<cli::Instance>("InstanceRow", &doc);
    check::<cli::InstanceAccepted>("InstanceAccepted", &doc);
    check::<cli::Operation>("OperationRow", &doc);
    check::<cli::SshKey>("SshKeyView", &doc);
    check::<cli::Snapshot>("SnapshotRow", &doc);
    check::<cli::SnapshotAccepted>("SnapshotAccepted", &doc);
    check::<cli::SnapshotPolicy>("SnapshotPolicyRow", &doc);
    check::<cli::Image>("ImageView", &doc);
    check::<cli::Project>("ProjectView", &doc);
    check::<cli::ProjectQuotas>("QuotasView", &doc);
    check::<cli::Host>("HostRow", &doc);
    check::<cli::FleetLiveness>("FleetLiveness", &doc);
    check::<cli::JoinToken>("JoinTokenCreated", &doc);
    check::<cli::WhoAmI>("WhoAmI", &doc);
    check::<cli::Token>("TokenView", &doc);
    check::<cli::Member>("Member", &doc);
    check::<cli::OidcInfo>("OidcInfo", &doc);
    check::<cli::UserAccount>("User", &doc);
}
