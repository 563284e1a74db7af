//! The OpenAPI document against the implementation: the same routes and
//! methods both ways, the router really serves each, and real responses
//! (and the model types) match the documented schemas.

use crate::common;

use std::collections::BTreeSet;

use common::daemon::{fake_boot_files, record_states, sample_vm, test_public_key, TestApi};
use hatch::api::{route_table, Access};
use serde_json::{json, Value};

/// A small JSON Schema checker: $ref, type (one or several), enum,
/// properties, required, additionalProperties, items.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: unknown schema {reference}"));
        }
        return check(doc, target, value, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_of = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !types.is_empty() && !types.contains(&type_of(value)) {
        return Err(format!("{at}: {} is not {types:?}", type_of(value)));
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            return Err(format!("{at}: {value} not in {options:?}"));
        }
    }
    if let Value::Object(fields) = value {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap();
            if !fields.contains_key(name) {
                return Err(format!("{at}: missing required {name}"));
            }
        }
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check(doc, sub, field, &format!("{at}.{name}"))?,
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => return Err(format!("{at}: undocumented property {name}")),
                    extra @ Value::Object(_) => check(doc, extra, field, &format!("{at}.{name}"))?,
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(doc, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: u16) -> &'a Value {
    let schema = &doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "{method} {path} documents no JSON {status} response");
    schema
}

async fn document(api: &TestApi) -> Value {
    let (status, doc) = api.call("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    doc
}

#[tokio::test]
async fn documented_routes_are_exactly_the_served_routes() {
    let api = TestApi::start().await;
    let doc = document(&api).await;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = route_table()
        .into_iter()
        .map(|(m, p, _)| (m.as_str().to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);

    for (method, path, access) in route_table() {
        let op = &doc["paths"][path][method.as_str().to_lowercase()];
        let public = op["security"] == json!([]);
        assert_eq!(public, access == Access::Public, "{method} {path}: documented security");
        if access != Access::Public {
            assert!(!op["responses"]["401"].is_null(), "{method} {path} documents 401");
        }
        if access == Access::Admin {
            assert!(!op["responses"]["403"].is_null(), "{method} {path} documents 403");
        }
        // The router answers the route (not the fallbacks).
        let mut concrete = path.replace("{id}", "does-not-exist");
        if path == "/events" {
            // A stream that would follow forever: ask for what is recorded.
            concrete.push_str("?follow=false");
        }
        let (status, body) = api.call(method.as_str(), &concrete, None).await;
        assert_ne!(status, 405, "{method} {path}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("no such endpoint"), "{method} {path} is not routed");
    }
}

#[tokio::test]
async fn responses_match_their_schemas() {
    let api = TestApi::start().await;
    let doc = document(&api).await;
    let (elf, _, initrd) = fake_boot_files(api.dir.path());
    let valid = |value: &Value, schema: &Value, what: &str| {
        check(&doc, schema, value, what).unwrap_or_else(|e| panic!("{what}: {e}\n{value:#}"));
    };

    let (status, image) = api
        .call(
            "POST",
            "/images",
            Some(json!({ "name": "m", "kernel_path": elf, "initrd_path": initrd })),
        )
        .await;
    valid(&image, response_schema(&doc, "/images", "post", status), "POST /images");
    let image_id = image["id"].as_str().unwrap().to_string();
    let (status, template) = api
        .call(
            "POST",
            "/templates",
            // Binary user data: shown as user_data null plus user_data_base64.
            Some(json!({ "name": "t", "image_id": image_id, "ssh_authorized_keys": [test_public_key()], "user_data_base64": "H4sIAAAAAAAAAwMAAAAAAAAAAAA=" })),
        )
        .await;
    valid(
        &template,
        response_schema(&doc, "/templates", "post", status),
        "POST /templates",
    );
    let (status, key) = api.call("POST", "/keys", Some(json!({ "name": "k" }))).await;
    valid(&key, response_schema(&doc, "/keys", "post", status), "POST /keys");
    api.call("DELETE", &format!("/keys/{}", key["id"].as_str().unwrap()), None)
        .await;

    for (path, pattern) in [
        ("/healthz".to_string(), "/healthz"),
        ("/images".to_string(), "/images"),
        (format!("/images/{image_id}"), "/images/{id}"),
        ("/templates".to_string(), "/templates"),
        (
            format!("/templates/{}", template["id"].as_str().unwrap()),
            "/templates/{id}",
        ),
        ("/keys".to_string(), "/keys"),
        ("/keys/me".to_string(), "/keys/me"),
        ("/audit".to_string(), "/audit"),
    ] {
        let (status, body) = api.call("GET", &path, None).await;
        assert_eq!(status, 200, "GET {path}");
        valid(
            &body,
            response_schema(&doc, pattern, "get", 200),
            &format!("GET {path}"),
        );
    }

    // Errors.
    let (status, body) = api.call("GET", "/images/nope", None).await;
    valid(&body, response_schema(&doc, "/images/{id}", "get", status), "404");
    let (status, body) = api.call("POST", "/vms", Some(json!({ "vcpu_count": 0 }))).await;
    valid(&body, response_schema(&doc, "/vms", "post", status), "400");

    // A VM's state history (recorded by orchestration; written directly here).
    let mut vm = sample_vm(&image_id, 2);
    vm.state = hatch::model::VmState::Creating;
    api.store.insert_vm(&vm, None).unwrap();
    record_states(&api.store, &mut vm, &[(hatch::model::VmState::Error, Some("exit 1"))]);
    let (status, events) = api.call("GET", &format!("/vms/{}/events", vm.id), None).await;
    assert_eq!(events.as_array().map(Vec::len), Some(2), "{events}");
    valid(
        &events,
        response_schema(&doc, "/vms/{id}/events", "get", status),
        "GET /vms/{id}/events",
    );

    // VMs as the model serialises them, with and without networking.
    let vm_schema = response_schema(&doc, "/vms/{id}", "get", 200);
    let mut vm = sample_vm(&image_id, 1);
    vm.state_reason = Some("booted".into());
    vm.ready_at = Some(hatch::model::now());
    vm.user_data = Some(hatch::model::UserData::from(&[0x1f, 0x8b, 0x08][..]));
    vm.lifetime = hatch::model::Lifetime {
        ttl_seconds: Some(hatch::model::LifetimeSeconds::new(60).unwrap()),
        idle_timeout_seconds: Some(hatch::model::LifetimeSeconds::new(30).unwrap()),
        on_idle: Some(hatch::model::OnIdle::Stop),
    };
    vm.expires_at = vm.lifetime.expires_at(vm.created_at);
    let binary = serde_json::to_value(&vm).unwrap();
    valid(&binary, vm_schema, "networked VM with binary user data");
    assert_eq!(binary["user_data_base64"], "H4sI");
    vm.user_data = Some("#cloud-config\n".into());
    vm.network = None;
    vm.enable_network = false;
    vm.pid = None;
    let plain = serde_json::to_value(&vm).unwrap();
    valid(&plain, vm_schema, "VM without network, text user data");
    assert_eq!(plain["user_data"], "#cloud-config\n");
    assert!(plain.get("guest_ip").is_none());
}

#[tokio::test]
async fn documented_request_fields_are_the_accepted_fields() {
    let api = TestApi::start().await;
    let doc = document(&api).await;
    for (path, schema) in [
        ("/images", "RegisterImage"),
        ("/templates", "CreateTemplate"),
        ("/vms", "CreateVm"),
        ("/keys", "CreateKey"),
        ("/vms/does-not-exist/owner", "ReassignVm"),
    ] {
        let properties = doc["components"]["schemas"][schema]["properties"].as_object().unwrap();
        for name in properties.keys() {
            // A value of the wrong type for every field: the server must
            // know the field (a type error naming it, not "unknown field").
            let (status, body) = api.call("POST", path, Some(json!({ name: { "wrong": "type" } }))).await;
            assert_eq!(status, 400, "{path} {name}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                !message.contains("unknown field"),
                "{path} documents {name} but rejects it: {message}"
            );
        }
        let (_, body) = api.call("POST", path, Some(json!({ "undocumented_field": 1 }))).await;
        assert_eq!(body["error"]["field"], "undocumented_field", "{path}");
    }
}
