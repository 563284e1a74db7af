//! Authentication through a real server and client: every endpoint but
//! GET /healthz needs a key; failures are 401 JSON with no detail.

use crate::common;

use std::os::unix::fs::PermissionsExt;

use common::daemon::{error_parts, json_or_null, TestApi};
use hatch::api::{route_table, Access};
use hyper::Method;

/// A path for a route pattern (`{id}` filled in).
fn concrete(path: &str) -> String {
    path.replace("{id}", "nothing-here")
}

#[tokio::test]
async fn every_protected_route_refuses_missing_and_bad_keys_alike() {
    let api = TestApi::start().await;
    let bad_headers: [Option<&str>; 3] = [None, Some("hatch_0000000000000000"), Some("")];
    let mut messages = std::collections::HashSet::new();
    for (method, path, access) in route_table() {
        if access == Access::Public {
            continue;
        }
        for key in bad_headers {
            let reply = api
                .client(key)
                .request(method.clone(), &concrete(path), None)
                .await
                .unwrap();
            assert_eq!(reply.status.as_u16(), 401, "{method} {path} with {key:?}");
            let body = json_or_null(&reply.body);
            let (code, field) = error_parts(&body);
            assert_eq!((code.as_str(), field), ("unauthorized", None), "{method} {path}");
            messages.insert(body["error"]["message"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(messages.len(), 1, "the same message whatever was wrong: {messages:?}");
}

#[tokio::test]
async fn a_malformed_authorization_header_is_401() {
    let api = TestApi::start().await;
    // The bare key without a scheme, another scheme, or an empty bearer.
    let bare_key = api.admin_key.clone();
    for header in ["Basic abc", "Bearer", "Bearer  ", &bare_key] {
        let (status, body) = raw_with_authorization(&api, header).await;
        assert_eq!(status, 401, "{header:?}");
        assert_eq!(error_parts(&body).0, "unauthorized");
    }
    let (status, _) = raw_with_authorization(&api, &format!("bearer {bare_key}")).await;
    assert_eq!(status, 200, "the scheme is case-insensitive");
}

/// A request with a hand-made Authorization header (the client only sends "Bearer <key>").
async fn raw_with_authorization(api: &TestApi, value: &str) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::UnixStream::connect(&api.socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("/images")
        .header("host", "localhost")
        .header("authorization", value)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, json_or_null(&body))
}

#[tokio::test]
async fn healthz_is_public_and_counts() {
    let api = TestApi::start().await;
    let reply = api.client(None).request(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(reply.status.as_u16(), 200);
    let body = json_or_null(&reply.body);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["vms"]["total"], 0);
    assert_eq!(body["vms"]["by_state"]["running"], 0);
    assert_eq!(body["images"], 0);
}

#[tokio::test]
async fn unknown_paths_need_a_key_too() {
    let api = TestApi::start().await;
    let reply = api.client(None).request(Method::GET, "/nope", None).await.unwrap();
    assert_eq!(reply.status.as_u16(), 401);
    let (status, body) = api.call("GET", "/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(error_parts(&body).0, "not_found");
    let (status, body) = api.call("PUT", "/images", None).await;
    assert_eq!(status, 405);
    assert_eq!(error_parts(&body).0, "method_not_allowed");
}

#[tokio::test]
async fn first_start_writes_an_owner_only_admin_key_once() {
    let api = TestApi::start().await;
    let path = api.dir.path().join("admin.key");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        mode(&api.dir.path().join("hatch.db")),
        0o600,
        "the database is owner-only too"
    );
    let (status, _) = api.call("GET", "/images", None).await;
    assert_eq!(status, 200, "the admin key works");

    // A second start with keys present neither replaces nor adds a key.
    let config = hatch::config::Config::with_data_dir(api.dir.path()).unwrap();
    drop(hatch::cli::serve::open_state(&config).unwrap());
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), api.admin_key);
    assert_eq!(api.store.count_active_api_keys().unwrap(), 1);
}

/// `hatch key create --local` writes the database beside the running
/// daemon, which authenticates from memory: the key works at once all the
/// same, and its revocation through the API refuses it at once.
#[tokio::test]
async fn a_key_created_beside_the_daemon_works_until_revoked() {
    let api = TestApi::start().await;
    let beside = hatch::store::Store::open(&hatch::store::Store::path_in(api.dir.path())).unwrap();
    let (info, key) = beside
        .create_api_key("local", hatch::model::Role::Member, Default::default())
        .unwrap();
    drop(beside);
    let (status, body) = api.call_as(&key, "GET", "/vms", None).await;
    assert_eq!((status, body), (200, serde_json::json!([])));

    let (status, _) = api.call("DELETE", &format!("/keys/{}", info.id), None).await;
    assert_eq!(status, 204);
    let (status, body) = api.call_as(&key, "GET", "/vms", None).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn created_keys_work_until_revoked() {
    let api = TestApi::start().await;
    let (status, created) = api
        .call("POST", "/keys", Some(serde_json::json!({ "name": "ci" })))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));

    let with_new_key = api.client(Some(&key));
    assert_eq!(
        with_new_key
            .request(Method::GET, "/templates", None)
            .await
            .unwrap()
            .status
            .as_u16(),
        200
    );

    let (status, listed) = api.call("GET", "/keys", None).await;
    assert_eq!(status, 200);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        !listed.iter().any(|k| k.get("key").is_some()),
        "listing never shows keys"
    );

    let (status, body) = api.call("DELETE", &format!("/keys/{id}"), None).await;
    assert_eq!((status, body), (204, serde_json::Value::Null));
    assert_eq!(
        with_new_key
            .request(Method::GET, "/templates", None)
            .await
            .unwrap()
            .status
            .as_u16(),
        401
    );
    let (status, body) = api.call("DELETE", &format!("/keys/{id}"), None).await;
    assert_eq!(status, 404, "already revoked: {body}");

    let (status, body) = api
        .call("POST", "/keys", Some(serde_json::json!({ "name": "bad name!" })))
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_parts(&body), ("invalid_field".into(), Some("name".into())));
}
