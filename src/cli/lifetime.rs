//! `--ttl`, `--idle-timeout` and `--on-idle`, shared by `hatch vm create`
//! and `hatch template create`.

use serde_json::{json, Map, Value};

use crate::model::OnIdle;

#[derive(Debug, Clone, clap::Args)]
pub struct LifetimeArgs {
    /// Delete the VM this long after it is created (90s, 30m, 2h; a bare
    /// number is seconds; at most 365 days).
    #[arg(long, value_name = "DURATION", value_parser = whole_seconds)]
    ttl: Option<u64>,
    /// Idle this long (no proxied request, no SSH session) before --on-idle
    /// applies [default: HATCH_IDLE_TIMEOUT].
    #[arg(long, value_name = "DURATION", value_parser = whole_seconds)]
    idle_timeout: Option<u64>,
    /// What happens to the VM once idle: snapshot, stop, or none (never)
    /// [default: snapshot, for VMs with routes or an --idle-timeout].
    #[arg(long, value_name = "ACTION", value_parser = on_idle)]
    on_idle: Option<OnIdle>,
}

impl LifetimeArgs {
    /// Adds the fields that were given to a request body.
    pub fn add_to(&self, body: &mut Map<String, Value>) {
        if let Some(ttl) = self.ttl {
            body.insert("ttl_seconds".into(), json!(ttl));
        }
        if let Some(timeout) = self.idle_timeout {
            body.insert("idle_timeout_seconds".into(), json!(timeout));
        }
        if let Some(action) = self.on_idle {
            body.insert("on_idle".into(), json!(action.as_str()));
        }
    }
}

/// A duration as whole seconds (the daemon checks the range).
fn whole_seconds(text: &str) -> Result<u64, String> {
    let duration = crate::config::values::duration(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("{text:?}: whole seconds only"));
    }
    Ok(duration.as_secs())
}

fn on_idle(text: &str) -> Result<OnIdle, String> {
    OnIdle::parse(text).ok_or_else(|| format!("{text:?}: expected snapshot, stop or none"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_whole_seconds() {
        assert_eq!(whole_seconds("90"), Ok(90));
        assert_eq!(whole_seconds("2h"), Ok(7200));
        assert!(whole_seconds("1500ms").is_err());
        assert!(whole_seconds("0").is_err());
        assert!(on_idle("hibernate").is_err());
        let args = LifetimeArgs {
            ttl: Some(60),
            idle_timeout: None,
            on_idle: Some(OnIdle::Stop),
        };
        let mut body = Map::new();
        args.add_to(&mut body);
        assert_eq!(Value::Object(body), json!({"ttl_seconds": 60, "on_idle": "stop"}));
    }
}
