//! Binary user data (gzip-compressed cloud-config) through the API and the
//! CLI: `user_data_base64` in, the same bytes out of GET and into the seed.

use crate::common;

use base64::Engine;
use common::cloudinit::{gzip, SeedImage};
use common::daemon::{error_parts, fake_boot_files, hatch_command_in, TestApi};
use serde_json::{json, Value};

const CLOUD_CONFIG: &str = "#cloud-config\nwrite_files:\n  - path: /etc/hatch-gzip\n    content: from gzip\n";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn register_fake_image(api: &TestApi) -> String {
    let (elf, _, initrd) = fake_boot_files(api.dir.path());
    let body = json!({ "name": "base", "kernel_path": elf, "initrd_path": initrd });
    let (status, image) = api.call("POST", "/images", Some(body)).await;
    assert_eq!(status, 201, "{image}");
    image["id"].as_str().unwrap().to_string()
}

async fn create_template(api: &TestApi, fields: Value) -> Value {
    let mut body = json!({ "name": "t", "image_id": "base" });
    body.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let (status, template) = api.call("POST", "/templates", Some(body)).await;
    assert_eq!(status, 201, "{template}");
    template
}

#[tokio::test]
async fn gzip_user_data_round_trips_through_templates() {
    let api = TestApi::start().await;
    register_fake_image(&api).await;
    let compressed = gzip(CLOUD_CONFIG.as_bytes());
    assert!(std::str::from_utf8(&compressed).is_err(), "gzip output is binary");

    let template = create_template(&api, json!({ "user_data_base64": b64(&compressed) })).await;
    // Binary: no text form, the base64 form holds the exact bytes.
    assert_eq!(template["user_data"], Value::Null, "{template}");
    assert_eq!(template["user_data_base64"], json!(b64(&compressed)));
    let id = template["id"].as_str().unwrap();
    let (status, shown) = api.call("GET", &format!("/templates/{id}"), None).await;
    assert_eq!((status, &shown), (200, &template));
    let (_, listed) = api.call("GET", "/templates", None).await;
    assert_eq!(listed, json!([template]));

    // UTF-8 bytes sent as base64 are shown as text; text has no base64 form.
    let text = create_template(
        &api,
        json!({ "name": "t2", "user_data_base64": b64(CLOUD_CONFIG.as_bytes()) }),
    )
    .await;
    assert_eq!(text["user_data"], CLOUD_CONFIG);
    assert!(text.get("user_data_base64").is_none(), "{text}");
}

#[tokio::test]
async fn user_data_fields_are_checked_before_anything_is_created() {
    let api = TestApi::start().await;
    register_fake_image(&api).await;
    let over_limit = b64(&vec![0x8b; 64 * 1024 + 1]);
    let cases = [
        (
            json!({ "user_data": "#!/bin/sh\n", "user_data_base64": "IyEvYmluL3NoCg==" }),
            400,
            "invalid_field",
        ),
        (json!({ "user_data_base64": "not base64!" }), 400, "invalid_field"),
        (json!({ "user_data_base64": "H4sI=" }), 400, "invalid_field"),
        (json!({ "user_data_base64": over_limit }), 413, "too_large"),
    ];
    for path in ["/vms", "/templates"] {
        for (fields, status, code) in &cases {
            let mut body = fields.clone();
            if path == "/templates" {
                body["name"] = json!("t");
                body["image_id"] = json!("base");
            }
            let (got, reply) = api.call("POST", path, Some(body)).await;
            assert_eq!(got, *status, "{path} {fields} -> {reply}");
            assert_eq!(
                error_parts(&reply),
                (code.to_string(), Some("user_data_base64".into())),
                "{path} {fields}"
            );
        }
    }
    for path in ["/vms", "/templates"] {
        assert_eq!(api.call("GET", path, None).await.1, json!([]), "{path}");
    }
    // Exactly 64 KiB decoded is accepted (wrapped at 76 columns, as `base64` prints it).
    let limit = b64(&vec![0x8b; 64 * 1024]);
    let wrapped: Vec<&str> = limit
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let template = create_template(&api, json!({ "user_data_base64": wrapped.join("\n") })).await;
    assert_eq!(template["user_data_base64"], json!(limit));
}

/// A VM made from a template with gzip user data, and one given gzip user
/// data directly: GET shows the bytes and the seed disk holds them exactly.
#[tokio::test(flavor = "multi_thread")]
async fn vms_get_binary_user_data_byte_for_byte() {
    let image = common::images::minimal_image().await;
    let api = TestApi::start().await;
    let body = json!({
        "name": "minimal",
        "kernel_path": image.kernel_path,
        "initrd_path": image.initrd_path,
        "boot_args": image.boot_args,
    });
    let (status, registered) = api.call("POST", "/images", Some(body)).await;
    assert_eq!(status, 201, "{registered}");
    let image_id = registered["id"].clone();
    let from_template = gzip(CLOUD_CONFIG.as_bytes());
    let template = create_template(
        &api,
        json!({ "image_id": "minimal", "user_data_base64": b64(&from_template) }),
    )
    .await;
    let direct = gzip(b"#!/bin/sh\necho direct\n");

    for (fields, expected) in [
        (json!({ "template_id": template["id"] }), &from_template),
        (
            json!({ "image_id": image_id, "user_data_base64": b64(&direct) }),
            &direct,
        ),
    ] {
        let mut body = json!({ "enable_network": false });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let (status, vm) = api.call("POST", "/vms", Some(body)).await;
        assert_eq!(status, 201, "{fields} -> {vm}");
        let id = vm["id"].as_str().unwrap();
        let (_, shown) = api.call("GET", &format!("/vms/{id}"), None).await;
        assert_eq!(shown["user_data_base64"], json!(b64(expected)), "{shown}");
        assert!(shown.get("user_data").is_none(), "{shown}");

        let seed_dir = tempfile::tempdir().unwrap();
        let path = seed_dir.path().join("seed.img");
        std::fs::copy(api.dir.path().join("vms").join(id).join("seed.img"), &path).unwrap();
        let seed = SeedImage { dir: seed_dir, path };
        assert_eq!(&seed.read_both("user-data"), expected, "{fields}");
        assert_eq!(api.call("DELETE", &format!("/vms/{id}"), None).await.0, 204);
    }
}

#[tokio::test]
async fn cli_sends_binary_files_as_base64_and_text_as_text() {
    let api = TestApi::start().await;
    register_fake_image(&api).await;
    let files = tempfile::tempdir().unwrap();
    let compressed = gzip(CLOUD_CONFIG.as_bytes());
    std::fs::write(files.path().join("cc.gz"), &compressed).unwrap();
    std::fs::write(files.path().join("cc.yaml"), CLOUD_CONFIG).unwrap();
    let url = format!("unix:{}", api.socket.display());
    let vars = [("HATCH_URL", url.as_str()), ("HATCH_API_KEY", api.admin_key.as_str())];

    for (name, file) in [("gz", "cc.gz"), ("text", "cc.yaml")] {
        let file = files.path().join(file);
        let args = [
            "template",
            "create",
            "--name",
            name,
            "--image",
            "base",
            "--user-data",
            file.to_str().unwrap(),
            "--json",
        ];
        let output = hatch_command_in(None, &args, &vars).output().expect("run hatch");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let (_, templates) = api.call("GET", "/templates", None).await;
    let by_name = |name: &str| {
        templates
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        by_name("gz")["user_data_base64"],
        json!(b64(&compressed)),
        "{templates}"
    );
    assert_eq!(by_name("text")["user_data"], CLOUD_CONFIG, "{templates}");
}
