//! How long a VM lives and what happens to it when idle: `ttl_seconds`,
//! `idle_timeout_seconds` and `on_idle`, given on `POST /vms` or a template.
//!
//! Values are parsed once, when a request body is read: a
//! [`LifetimeSeconds`] is always a whole number of seconds from 1 to
//! [`MAX_LIFETIME_SECONDS`], an [`OnIdle`] one of its three words, so a bad
//! value is a 400 naming the field before anything is created.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::Timestamp;

/// The longest `ttl_seconds` or `idle_timeout_seconds`: 365 days. Longer is
/// taken for a mistake (milliseconds, say) rather than a wish.
pub const MAX_LIFETIME_SECONDS: u32 = 365 * 24 * 3600;

/// A whole number of seconds from 1 to [`MAX_LIFETIME_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct LifetimeSeconds(u32);

impl LifetimeSeconds {
    /// The value if it is within bounds; else what is wrong with it.
    pub fn new(seconds: u64) -> Result<Self, String> {
        match u32::try_from(seconds) {
            Ok(s @ 1..=MAX_LIFETIME_SECONDS) => Ok(Self(s)),
            _ => Err(out_of_range(&seconds.to_string())),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0))
    }
}

fn out_of_range(given: &str) -> String {
    format!("must be a whole number of seconds from 1 to {MAX_LIFETIME_SECONDS} (365 days), got {given}")
}

impl<'de> Deserialize<'de> for LifetimeSeconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Seconds;
        impl Visitor<'_> for Seconds {
            type Value = LifetimeSeconds;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a whole number of seconds from 1 to {MAX_LIFETIME_SECONDS}")
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                LifetimeSeconds::new(value).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::custom(out_of_range(&value.to_string()))),
                }
            }

            // JSON numbers with a fraction or an exponent, and integers too
            // large for 64 bits, arrive as floats.
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
                Err(E::custom(out_of_range(&value.to_string())))
            }
        }
        deserializer.deserialize_any(Seconds)
    }
}

/// What the idle monitor does with a VM that has been idle for its timeout.
/// Read through a string so that any other JSON value is an error naming
/// the field (serde_json reports a non-string enum as malformed JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum OnIdle {
    /// Snapshot it (`snapshotted`; a route with `auto_wake` wakes it).
    Snapshot,
    /// Stop it (`stopped`; `POST /vms/{id}/start` boots it from its disk).
    Stop,
    /// Never idle it.
    None,
}

impl OnIdle {
    pub const ALL: [OnIdle; 3] = [OnIdle::Snapshot, OnIdle::Stop, OnIdle::None];

    pub fn as_str(self) -> &'static str {
        match self {
            OnIdle::Snapshot => "snapshot",
            OnIdle::Stop => "stop",
            OnIdle::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|value| value.as_str() == text)
    }
}

impl TryFrom<String> for OnIdle {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        OnIdle::parse(&text).ok_or_else(|| format!("must be \"snapshot\", \"stop\" or \"none\", got {text:?}"))
    }
}

/// A VM's (or template's) lifetime settings as given; `None`: not set (see
/// the README for what unset means).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifetime {
    /// The VM is deleted this long after it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<LifetimeSeconds>,
    /// Idle this long (no proxied request, no SSH session) before `on_idle`
    /// applies; unset: HATCH_IDLE_TIMEOUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<LifetimeSeconds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_idle: Option<OnIdle>,
}

impl Lifetime {
    /// Each setting from `self`, else from `fallback` (a template's).
    pub fn or(self, fallback: Lifetime) -> Lifetime {
        Lifetime {
            ttl_seconds: self.ttl_seconds.or(fallback.ttl_seconds),
            idle_timeout_seconds: self.idle_timeout_seconds.or(fallback.idle_timeout_seconds),
            on_idle: self.on_idle.or(fallback.on_idle),
        }
    }

    /// When a VM created at `created_at` expires, if it has a TTL.
    pub fn expires_at(&self, created_at: Timestamp) -> Option<Timestamp> {
        self.ttl_seconds
            .map(|ttl| created_at + chrono::Duration::seconds(i64::from(ttl.get())))
    }

    /// A request that says both "never idle" and how long to wait is a
    /// mistake; the error names the field that has no effect.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.on_idle == Some(OnIdle::None) && self.idle_timeout_seconds.is_some() {
            return Err((
                "idle_timeout_seconds",
                "idle_timeout_seconds has no effect with on_idle \"none\" (never idle); leave one out".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<LifetimeSeconds, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn seconds_are_whole_positive_and_at_most_a_year() {
        assert_eq!(parse(json!(1)).unwrap().get(), 1);
        assert_eq!(parse(json!(MAX_LIFETIME_SECONDS)).unwrap().get(), MAX_LIFETIME_SECONDS);
        for bad in [
            json!(0),
            json!(-5),
            json!(MAX_LIFETIME_SECONDS + 1),
            json!(u64::MAX),
            json!(1.5),
            json!(1e30),
            json!("60"),
            json!(null),
            json!(true),
            json!([60]),
        ] {
            let error = parse(bad.clone()).expect_err(&bad.to_string());
            assert!(error.contains("31536000"), "{bad}: {error}");
        }
    }

    #[test]
    fn on_idle_is_one_of_three_words() {
        for value in OnIdle::ALL {
            let text = serde_json::to_value(value).unwrap();
            assert_eq!(text, json!(value.as_str()));
            assert_eq!(serde_json::from_value::<OnIdle>(text).unwrap(), value);
            assert_eq!(OnIdle::parse(value.as_str()), Some(value));
        }
        assert!(serde_json::from_value::<OnIdle>(json!("hibernate")).is_err());
        assert_eq!(OnIdle::parse("Stop"), None);
    }

    #[test]
    fn settings_fall_back_per_field_and_expiry_is_created_plus_ttl() {
        let minute = LifetimeSeconds::new(60).unwrap();
        let request = Lifetime {
            on_idle: Some(OnIdle::Stop),
            ..Default::default()
        };
        let template = Lifetime {
            ttl_seconds: Some(minute),
            on_idle: Some(OnIdle::Snapshot),
            ..Default::default()
        };
        let merged = request.or(template);
        assert_eq!((merged.ttl_seconds, merged.on_idle), (Some(minute), Some(OnIdle::Stop)));
        let created = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            merged.expires_at(created).map(|t| t.to_rfc3339()),
            Some("2026-01-01T00:01:00+00:00".to_string())
        );
        assert_eq!(Lifetime::default().expires_at(created), None);
        let contradictory = Lifetime {
            idle_timeout_seconds: Some(minute),
            on_idle: Some(OnIdle::None),
            ..Default::default()
        };
        assert_eq!(contradictory.check().unwrap_err().0, "idle_timeout_seconds");
        assert!(merged.check().is_ok());
    }
}
