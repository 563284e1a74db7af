//! The in-process test server (`TestApi`) runs the real orchestrator: its
//! bridge, firewall chains and dnsmasq live in the test's own network
//! namespace, and all of it goes away with the `TestApi`.

use crate::common;

use common::daemon::TestApi;

#[tokio::test]
async fn the_test_daemon_networks_inside_its_namespace_and_cleans_up() {
    let api = TestApi::start().await;
    let netns = api.netns().name().to_string();
    assert!(
        api.netns().links().contains(&"fcbridge".to_string()),
        "{:?}",
        api.netns().links()
    );
    assert!(api.netns().iptables_rules("nat").contains("-N HATCH-POSTROUTING"));
    assert!(api.netns().iptables_rules("filter").contains("-N HATCH-FORWARD"));
    let (status, health) = api.call("GET", "/healthz", None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    drop(api);
    let listed = common::netns::run_ok("ip", &["netns", "list"]);
    assert!(
        !listed.split_whitespace().any(|name| name == netns),
        "{netns} left behind: {listed}"
    );
}
