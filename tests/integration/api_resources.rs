//! Images, templates and request validation through a real server.

use crate::common;

use common::daemon::{error_parts, fake_boot_files, record_states, sample_vm, test_public_key, TestApi};
use serde_json::{json, Value};

async fn register_image(api: &TestApi, name: &str) -> Value {
    let (elf, _, initrd) = fake_boot_files(api.dir.path());
    let (status, image) = api
        .call(
            "POST",
            "/images",
            Some(json!({ "name": name, "kernel_path": elf, "initrd_path": initrd })),
        )
        .await;
    assert_eq!(status, 201, "{image}");
    image
}

#[tokio::test]
async fn empty_lists_are_empty_arrays() {
    let api = TestApi::start().await;
    for path in ["/images", "/templates"] {
        let (status, body) = api.call("GET", path, None).await;
        assert_eq!((status, body), (200, json!([])), "{path}");
    }
}

#[tokio::test]
async fn images_register_show_list_delete() {
    let api = TestApi::start().await;
    let (elf, bz, initrd) = fake_boot_files(api.dir.path());
    let (status, image) = api
        .call(
            "POST",
            "/images",
            Some(json!({ "name": "mini", "kernel_path": elf, "initrd_path": initrd, "boot_args": "quiet" })),
        )
        .await;
    assert_eq!(status, 201, "{image}");
    assert_eq!(image["profile"], "registered");
    assert_eq!(image["kernel_path"], json!(elf), "ELF detected");
    assert_eq!(image["bzimage_path"], Value::Null);
    assert_eq!(image["login_user"], "root");
    assert_eq!(image["size_bytes"], 4096 + 2048);
    let id = image["id"].as_str().unwrap();
    assert!(id.starts_with("img-"));

    let (_, bz_image) = api
        .call(
            "POST",
            "/images",
            Some(json!({ "name": "bz", "kernel_path": bz, "login_user": "debian" })),
        )
        .await;
    assert_eq!(bz_image["bzimage_path"], json!(bz), "bzImage detected: {bz_image}");
    assert_eq!(bz_image["kernel_path"], Value::Null);

    let (status, shown) = api.call("GET", &format!("/images/{id}"), None).await;
    assert_eq!((status, &shown), (200, &image));
    let (status, by_name) = api.call("GET", "/images/mini", None).await;
    assert_eq!((status, by_name["id"].as_str()), (200, Some(id)));

    let (_, listed) = api.call("GET", "/images", None).await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![bz_image["id"].as_str().unwrap(), id], "newest first");

    let (status, _) = api.call("DELETE", &format!("/images/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, body) = api.call("GET", &format!("/images/{id}"), None).await;
    assert_eq!((status, error_parts(&body).0.as_str()), (404, "not_found"));
    let (status, _) = api.call("DELETE", &format!("/images/{id}"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn image_registration_checks_the_files() {
    let api = TestApi::start().await;
    let (elf, _, initrd) = fake_boot_files(api.dir.path());
    let not_kernel = initrd.clone();
    let cases = [
        (
            json!({ "name": "x", "kernel_path": "/nonexistent/vmlinux" }),
            "kernel_path",
        ),
        (json!({ "name": "x", "kernel_path": "relative/vmlinux" }), "kernel_path"),
        (json!({ "name": "x", "kernel_path": not_kernel }), "kernel_path"),
        (json!({ "name": "x", "kernel_path": api.dir.path() }), "kernel_path"),
        (
            json!({ "name": "x", "kernel_path": elf, "initrd_path": "/nonexistent" }),
            "initrd_path",
        ),
        (
            json!({ "name": "x", "kernel_path": elf, "initrd_path": elf }),
            "initrd_path",
        ),
        (
            json!({ "name": "x", "kernel_path": elf, "rootfs_path": "/nonexistent" }),
            "rootfs_path",
        ),
        (
            json!({ "name": "x", "kernel_path": elf, "login_user": "Root;" }),
            "login_user",
        ),
        (
            json!({ "name": "x", "kernel_path": elf, "boot_args": "a\nb" }),
            "boot_args",
        ),
        (json!({ "name": "", "kernel_path": elf }), "name"),
        (json!({ "kernel_path": elf }), "name"),
        (json!({ "name": "x" }), "kernel_path"),
    ];
    for (body, field) in cases {
        let (status, reply) = api.call("POST", "/images", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert_eq!(
            error_parts(&reply),
            ("invalid_field".into(), Some(field.into())),
            "{body}"
        );
    }
    let (_, listed) = api.call("GET", "/images", None).await;
    assert_eq!(listed, json!([]), "nothing registered");
}

#[tokio::test]
async fn templates_crud_and_image_reference() {
    let api = TestApi::start().await;
    let image = register_image(&api, "base").await;
    let key = test_public_key();
    let (status, template) = api
        .call(
            "POST",
            "/templates",
            Some(json!({ "name": "small", "image_id": "base", "mem_mib": 512, "user_data": "#cloud-config\n", "ssh_authorized_keys": [key], "egress": ["10.20.0.0/16"] })),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    assert_eq!(template["image_id"], image["id"], "name resolved to the id");
    assert_eq!(
        (template["vcpu_count"].as_u64(), template["mem_mib"].as_u64()),
        (Some(1), Some(512)),
        "vcpu default"
    );
    assert_eq!(template["ssh_authorized_keys"], json!([key]));
    assert_eq!(template["egress"], json!(["10.20.0.0/16"]));
    let id = template["id"].as_str().unwrap();

    let (status, shown) = api.call("GET", &format!("/templates/{id}"), None).await;
    assert_eq!((status, &shown), (200, &template));
    let (_, listed) = api.call("GET", "/templates", None).await;
    assert_eq!(listed, json!([template]));

    // The image is in use by the template.
    let image_path = format!("/images/{}", image["id"].as_str().unwrap());
    let (status, body) = api.call("DELETE", &image_path, None).await;
    assert_eq!((status, error_parts(&body).0.as_str()), (409, "conflict"));

    let (status, _) = api.call("DELETE", &format!("/templates/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = api.call("GET", &format!("/templates/{id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = api.call("DELETE", &image_path, None).await;
    assert_eq!(status, 204, "free once the template is gone");
}

#[tokio::test]
async fn an_image_used_by_a_vm_cannot_be_deleted() {
    let api = TestApi::start().await;
    let image = register_image(&api, "base").await;
    let image_id = image["id"].as_str().unwrap();
    api.store.insert_vm(&sample_vm(image_id, 1), None).unwrap();
    let (status, body) = api.call("DELETE", &format!("/images/{image_id}"), None).await;
    assert_eq!((status, error_parts(&body).0.as_str()), (409, "conflict"));
    let (status, _) = api.call("GET", &format!("/images/{image_id}"), None).await;
    assert_eq!(status, 200, "still there");
}

#[tokio::test]
async fn template_validation_names_the_field_and_creates_nothing() {
    let api = TestApi::start().await;
    register_image(&api, "base").await;
    let big = "x".repeat(64 * 1024 + 1);
    let cases = [
        (json!({ "name": "t", "image_id": "nope" }), 404, "not_found", "image_id"),
        (
            json!({ "name": "t", "image_id": "base", "vcpu_count": 0 }),
            400,
            "invalid_field",
            "vcpu_count",
        ),
        (
            json!({ "name": "t", "image_id": "base", "vcpu_count": 33 }),
            400,
            "invalid_field",
            "vcpu_count",
        ),
        (
            json!({ "name": "t", "image_id": "base", "mem_mib": 127 }),
            400,
            "invalid_field",
            "mem_mib",
        ),
        (
            json!({ "name": "t", "image_id": "base", "mem_mib": 100_000_000 }),
            400,
            "invalid_field",
            "mem_mib",
        ),
        (
            json!({ "name": "t", "image_id": "base", "user_data": big }),
            413,
            "too_large",
            "user_data",
        ),
        (
            json!({ "name": "t", "image_id": "base", "ssh_authorized_keys": ["ssh-ed25519 bm90IGEga2V5"] }),
            400,
            "invalid_field",
            "ssh_authorized_keys[0]",
        ),
        (
            json!({ "name": "t", "image_id": "base", "ssh_authorized_keys": ["hello"] }),
            400,
            "invalid_field",
            "ssh_authorized_keys[0]",
        ),
        (
            json!({ "name": "t", "image_id": "base", "colour": "red" }),
            400,
            "invalid_field",
            "colour",
        ),
        (
            json!({ "name": "t", "image_id": "base", "vcpu_count": "two" }),
            400,
            "invalid_field",
            "vcpu_count",
        ),
        (
            json!({ "name": "t", "image_id": "base", "vcpu_count": -1 }),
            400,
            "invalid_field",
            "vcpu_count",
        ),
        (json!({ "image_id": "base" }), 400, "invalid_field", "name"),
        (
            json!({ "name": "t", "image_id": "base", "egress": "all" }),
            400,
            "invalid_field",
            "egress",
        ),
        (
            json!({ "name": "t", "image_id": "base", "egress": ["10.0.0.0/8", "bad"] }),
            400,
            "invalid_field",
            "egress",
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, reply) = api.call("POST", "/templates", Some(body.clone())).await;
        assert_eq!(got, status, "{body} -> {reply}");
        assert_eq!(error_parts(&reply), (code.into(), Some(field.into())), "{body}");
    }
    let (_, listed) = api.call("GET", "/templates", None).await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn malformed_bodies_get_json_errors() {
    let api = TestApi::start().await;
    let (status, body) = api
        .raw("POST", "/templates", "application/json", b"{\"name\": ".to_vec())
        .await;
    assert_eq!((status, error_parts(&body).0.as_str()), (400, "invalid_json"));
    let (status, body) = api
        .raw("POST", "/templates", "application/json", b"[1, 2]".to_vec())
        .await;
    assert_eq!((status, error_parts(&body).0.as_str()), (400, "invalid_json"));
    let (status, body) = api
        .raw(
            "POST",
            "/templates",
            "application/json",
            br#"{"name": "t", "image_id": "x"} trailing"#.to_vec(),
        )
        .await;
    assert_eq!((status, error_parts(&body).0.as_str()), (400, "invalid_json"));
    let (status, body) = api
        .raw("POST", "/keys", "text/plain", b"{\"name\": \"a\"}".to_vec())
        .await;
    assert_eq!((status, error_parts(&body).0.as_str()), (415, "unsupported_media_type"));
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let api = TestApi::start().await;
    let body = format!("{{\"name\": \"{}\"}}", "a".repeat(300 * 1024)).into_bytes();
    for path in ["/keys", "/templates", "/images", "/vms"] {
        let (status, reply) = api.raw("POST", path, "application/json", body.clone()).await;
        assert_eq!((status, error_parts(&reply).0.as_str()), (413, "too_large"), "{path}");
    }
}

#[tokio::test]
async fn vm_requests_are_validated_before_anything_is_created() {
    let api = TestApi::start().await;
    let big = "x".repeat(64 * 1024 + 1);
    let cases = [
        ("/vms", json!({ "vcpu_count": 0 }), 400, "invalid_field", "vcpu_count"),
        ("/vms", json!({ "vcpu_count": 33 }), 400, "invalid_field", "vcpu_count"),
        ("/vms", json!({ "mem_mib": 64 }), 400, "invalid_field", "mem_mib"),
        (
            "/vms",
            json!({ "mem_mib": 100_000_000 }),
            400,
            "invalid_field",
            "mem_mib",
        ),
        ("/vms", json!({ "user_data": big }), 413, "too_large", "user_data"),
        ("/vms", json!({ "flavour": "big" }), 400, "invalid_field", "flavour"),
        (
            "/vms",
            json!({ "enable_network": "yes" }),
            400,
            "invalid_field",
            "enable_network",
        ),
        (
            "/vms",
            json!({ "enable_network": false, "guest_ip": "192.168.241.9" }),
            400,
            "invalid_field",
            "guest_ip",
        ),
        (
            "/vms",
            json!({ "image_id": "a", "template_id": "b" }),
            400,
            "invalid_field",
            "template_id",
        ),
        (
            "/vms",
            json!({ "ssh_authorized_keys": ["ssh-rsa !!"] }),
            400,
            "invalid_field",
            "ssh_authorized_keys[0]",
        ),
        ("/vms?wait=soon", json!({}), 400, "invalid_field", "wait"),
        (
            "/vms?wait=ready&timeout=forever",
            json!({}),
            400,
            "invalid_field",
            "timeout",
        ),
        ("/vms?timeout=5", json!({}), 400, "invalid_field", "timeout"),
        ("/vms?colour=red", json!({}), 400, "invalid_field", "colour"),
        ("/vms", json!({ "egress": "anywhere" }), 400, "invalid_field", "egress"),
        (
            "/vms",
            json!({ "egress": ["10.0.0.0/33"] }),
            400,
            "invalid_field",
            "egress",
        ),
        (
            "/vms",
            json!({ "egress": ["10.0.0.0"] }),
            400,
            "invalid_field",
            "egress",
        ),
        (
            "/vms",
            json!({ "egress": ["10.1.0.0/8"] }),
            400,
            "invalid_field",
            "egress",
        ),
        ("/vms", json!({ "egress": [1] }), 400, "invalid_field", "egress"),
        (
            "/vms",
            json!({ "egress": (0..65).map(|i| format!("10.{i}.0.0/16")).collect::<Vec<_>>() }),
            400,
            "invalid_field",
            "egress",
        ),
        (
            "/vms",
            json!({ "enable_network": false, "egress": "none" }),
            400,
            "invalid_field",
            "egress",
        ),
    ];
    for (path, body, status, code, field) in cases {
        let (got, reply) = api.call("POST", path, Some(body.clone())).await;
        assert_eq!(got, status, "{path} {body} -> {reply}");
        assert_eq!(error_parts(&reply), (code.into(), Some(field.into())), "{path} {body}");
    }
    assert!(api.store.list_vms().unwrap().is_empty());
    let (status, reply) = api.call("GET", "/vms/x/logs?bytes=0", None).await;
    assert_eq!(
        (status, error_parts(&reply)),
        (400, ("invalid_field".into(), Some("bytes".into())))
    );
}

#[tokio::test]
async fn vm_events_list_state_changes_in_order() {
    let api = TestApi::start().await;
    let (status, body) = api.call("GET", "/vms/vm-nothere/events", None).await;
    assert_eq!((status, error_parts(&body).0.as_str()), (404, "not_found"));
    use hatch::model::VmState::{Creating, Running, Stopped};
    let mut vm = sample_vm("img-x", 3);
    vm.state = Creating;
    api.store.insert_vm(&vm, None).unwrap();
    record_states(
        &api.store,
        &mut vm,
        &[(Running, None), (Stopped, Some("guest shut down"))],
    );
    let (_, events) = api.call("GET", &format!("/vms/{}/events", vm.id), None).await;
    let steps: Vec<(Value, Value)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from_state"].clone(), e["to_state"].clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (Value::Null, json!("creating")),
            (json!("creating"), json!("running")),
            (json!("running"), json!("stopped"))
        ]
    );
    assert_eq!(events[2]["reason"], "guest shut down");
}
