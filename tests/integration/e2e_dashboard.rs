//! The web dashboard (`/ui`) in a real headless Chromium against a real
//! daemon with a real guest (QEMU TCG, `minimal` image): log in with the
//! admin key, see an API error as the API words it, create a VM and watch
//! it become `running` without reloading, open its page (events, live
//! console, usage), snapshot and restore it, delete it after confirming;
//! markup from a guest or a user shows as text; and the page renders (a
//! screenshot that decodes and is not blank).

use crate::common;

use std::time::Duration;

use common::browser::{chromium_or_skip, Browser, Png, TcpToUnix};
use common::e2e::Topology;
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};

/// Where the page is served inside the Hatch host's namespace (the test
/// daemon listens on a unix socket; socat gives the browser a TCP port).
const PAGE_PORT: u16 = 8080;
/// Markup that would run if any API data were inserted as HTML.
const MARKUP: &str = "<img src=x onerror=\"window.__pwned=1\">";
/// The state changes a snapshot and a restore show on the VM's page.
const SNAPSHOT_AND_RESTORE: [&str; 4] = [
    "running → snapshotting",
    "snapshotting → snapshotted",
    "snapshotted → restoring",
    "restoring → running",
];
/// A boot, a snapshot or a restore under TCG on a loaded host.
const SLOW: Duration = Duration::from_secs(240);

/// The state the page shows for `vm` in the list ("" when it has no row).
fn listed_state(browser: &Browser, vm: &str) -> String {
    browser
        .execute(
            "const row = [...document.querySelectorAll('#vm-rows tr')].find(r => r.dataset.vm === arguments[0]); \
             return row ? row.dataset.state : '';",
            json!([vm]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_listed(browser: &Browser, vm: &str, state: &str) {
    browser.wait(&format!("{vm} {state} in the list"), SLOW, |b| {
        (listed_state(b, vm) == state).then_some(())
    });
}

/// The state on the VM's own page.
fn wait_page_state(browser: &Browser, state: &str) {
    browser.wait(&format!("the VM page saying {state}"), SLOW, |b| {
        (b.text_of("#vm-details .field-state") == state).then_some(())
    });
}

/// The daemon's log without its colour codes.
fn plain_log(daemon: &TestDaemon) -> String {
    let log = daemon.log();
    let mut plain = String::with_capacity(log.len());
    let mut rest = log.as_str();
    while let Some(start) = rest.find('\x1b') {
        plain.push_str(&rest[..start]);
        rest = rest[start..].split_once('m').map_or("", |(_, after)| after);
    }
    plain.push_str(rest);
    plain
}

fn shown_error(browser: &Browser) -> String {
    browser.wait("an error", Duration::from_secs(30), |b| {
        let text = b.text_of("#error-text");
        let visible = b.execute("return !document.getElementById('error').hidden", json!([]));
        (visible == true && !text.is_empty()).then_some(text)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_drives_a_vm_through_its_life_in_a_real_browser() {
    let Some((chromium, chromedriver)) = chromium_or_skip("dashboard_drives_a_vm_through_its_life_in_a_real_browser")
    else {
        return;
    };
    let image = common::images::minimal_image().await;
    let (topo, mut daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let _forward = TcpToUnix::start(topo.host(), PAGE_PORT, &daemon.socket);
    let base = format!("http://127.0.0.1:{PAGE_PORT}");

    let browser = Browser::start(topo.host_ns(), &chromium, &chromedriver, (1280, 900));
    browser.goto(&format!("{base}/ui"));

    // The page's own SSE parser, on chunks split mid-line and mid-CRLF.
    let parsed = browser.execute_async(
        "const done = arguments[arguments.length - 1]; \
         import('/ui/sse.js').then(({ SseParser }) => { \
           const got = []; const parser = new SseParser((m) => got.push(m)); \
           for (const piece of [': keep-alive\\r', '\\n', 'id: 7\\r', '\\nevent: state\\ndata: {\"a\":', '1}\\ndata: x\\n', '\\r\\n', 'data:no-space\\n\\n']) parser.push(piece); \
           done(got); }).catch((e) => done(String(e)));",
        json!([]),
    );
    assert_eq!(
        parsed,
        json!([{ "id": "7", "event": "state", "data": "{\"a\":1}\nx" }, { "id": null, "event": "message", "data": "no-space" }])
    );

    // A wrong key: refused in the API's words.
    browser.type_into("#login-key", "not-a-key");
    browser.click("#login-submit");
    let (_, refused) = daemon.request_with_key("GET", "/keys/me", None, Some("not-a-key"));
    assert_eq!(shown_error(&browser), refused["error"]["message"].as_str().unwrap());

    // The admin key: the page goes live (the event stream is open).
    browser.type_into("#login-key", &daemon.admin_key());
    browser.click("#login-submit");
    browser.wait("the live stream", Duration::from_secs(30), |b| {
        (b.execute("return document.getElementById('live').className", json!([])) == "live on").then_some(())
    });
    assert!(browser.text_of("#who").contains("admin"), "{}", browser.text_of("#who"));
    let storage = browser.execute(
        "return [sessionStorage.length, localStorage.length, document.cookie]",
        json!([]),
    );
    assert_eq!(storage, json!([1, 0, ""]), "the key is kept in the tab's session only");

    // A bad size: the API's error, word for word, and nothing created.
    browser.wait("the image in the create form", Duration::from_secs(30), |b| {
        let chosen = b.execute(
            "const s = document.getElementById('create-source'); \
             const o = [...s.options].find(o => o.value === 'image:' + arguments[0]); \
             if (o) { s.value = o.value; } return Boolean(o);",
            json!([image_id]),
        );
        (chosen == true).then_some(())
    });
    browser.type_into("#create-ssh_authorized_keys", &key.public);
    browser.type_into("#create-mem_mib", "1");
    browser.click("#create-submit");
    let body = json!({ "image_id": image_id, "mem_mib": 1, "ssh_authorized_keys": [key.public] });
    let (status, expected) = daemon.api("POST", "/vms", Some(&body));
    assert_eq!(status, 400, "{expected}");
    assert_eq!(shown_error(&browser), expected["error"]["message"].as_str().unwrap());
    let marked = browser.execute(
        "return document.getElementById('create-mem_mib').getAttribute('aria-invalid')",
        json!([]),
    );
    assert_eq!(marked, "true", "the field the API named is marked");
    assert_eq!(daemon.api("GET", "/vms", None).1, json!([]));

    // Create: the new row turns `running` by itself (no reload: live events).
    browser.type_into("#create-mem_mib", "");
    browser.type_into("#create-user_data", &format!("#!/bin/sh\n# {MARKUP}\n"));
    browser.click("#create-submit");
    let id = browser.wait("the new VM's row", Duration::from_secs(60), |b| {
        let id = b.execute(
            "const r = document.querySelector('#vm-rows tr'); return r ? r.dataset.vm : null",
            json!([]),
        );
        id.as_str().map(str::to_string)
    });
    wait_listed(&browser, &id, "running");
    let (_, vm) = daemon.api("GET", &format!("/vms/{id}"), None);
    let row = browser.text_of(&format!("#vm-rows tr[data-vm=\"{id}\"]"));
    assert!(
        row.contains(vm["guest_ip"].as_str().unwrap()),
        "row {row:?} lacks the IP of {vm}"
    );
    assert!(
        row.contains(&vm["ssh_port"].to_string()),
        "row {row:?} lacks the SSH port of {vm}"
    );

    // The guest prints markup on its console; the VM page shows it as text.
    let port = vm["ssh_port"].as_u64().unwrap() as u16;
    topo.ssh(&key, "root", port, &format!("echo '{MARKUP}' > /dev/console"));
    browser.click(&format!("#vm-rows tr[data-vm=\"{id}\"] a.vm-link"));
    browser.wait("the markup on the console, as text", SLOW, |b| {
        b.text_of("#vm-console").contains(MARKUP).then_some(())
    });
    assert!(browser.text_of("#vm-details .field-user_data").contains(MARKUP));
    let injected = browser.execute(
        "return [document.querySelectorAll('img').length, window.__pwned === undefined]",
        json!([]),
    );
    assert_eq!(injected, json!([0, true]), "API data was parsed as HTML");
    assert!(
        browser.text_of("#vm-events").contains("creating → running"),
        "{}",
        browser.text_of("#vm-events")
    );
    browser.wait("the VM's CPU time", Duration::from_secs(30), |b| {
        let usage = b.text_of("#vm-metrics");
        usage
            .lines()
            .any(|l| l.starts_with("CPU time") && l.trim_end().ends_with(" s"))
            .then_some(())
    });

    // Snapshot and restore from the VM's page; its events follow live.
    browser.click("#vm-actions button[data-op=snapshot]");
    wait_page_state(&browser, "snapshotted");
    browser.click("#vm-actions button[data-op=restore]");
    wait_page_state(&browser, "running");
    let events = browser.text_of("#vm-events");
    for change in SNAPSHOT_AND_RESTORE {
        assert!(events.contains(change), "events lack {change}:\n{events}");
    }
    topo.ssh(&key, "root", port, "true");

    // The daemon is killed and started again: the page reconnects by itself
    // (after its last event) and goes on following, console included.
    let before = plain_log(&daemon).len();
    daemon.restart();
    browser.wait("the event stream opened again", Duration::from_secs(60), |_| {
        plain_log(&daemon)[before..]
            .contains("path=/events status=200")
            .then_some(())
    });
    // Resumed with Last-Event-ID: no need to read the whole list again.
    assert!(
        !plain_log(&daemon)[before..].contains("path=/vms status="),
        "the page read GET /vms again instead of resuming its stream"
    );
    topo.ssh(&key, "root", port, "echo after-the-restart > /dev/console");
    browser.wait("the console after the restart", SLOW, |b| {
        b.text_of("#vm-console").contains("after-the-restart").then_some(())
    });

    // Back to the list: it renders (a real screenshot, not a blank one).
    browser.click("header h1 a");
    wait_listed(&browser, &id, "running");
    let png = Png::decode(&browser.screenshot()).expect("the screenshot is a PNG");
    let viewport = browser.execute("return [innerWidth, innerHeight]", json!([]));
    assert_eq!(
        json!([png.width, png.height]),
        viewport,
        "the screenshot is the window's page area"
    );
    assert!(
        png.colours(64) >= 16,
        "the page looks blank: {} colours",
        png.colours(64)
    );

    // Delete asks first; cancelling keeps the VM, confirming removes it.
    let delete = format!("#vm-rows tr[data-vm=\"{id}\"] button[data-op=delete]");
    browser.click(&delete);
    browser.wait("the confirmation", Duration::from_secs(10), |b| {
        (b.execute("return document.getElementById('confirm').open", json!([])) == true).then_some(())
    });
    browser.click("#confirm-cancel");
    assert_eq!(daemon.api("GET", &format!("/vms/{id}"), None).0, 200);
    browser.click(&delete);
    browser.click("#confirm-ok");
    browser.wait("the VM gone from the list", SLOW, |b| {
        listed_state(b, &id).is_empty().then_some(())
    });
    let (status, gone): (u16, Value) = daemon.api("GET", &format!("/vms/{id}"), None);
    assert_eq!(status, 404, "{gone}");
    assert!(browser.text_of("#vm-empty").contains("No VMs"));
}
