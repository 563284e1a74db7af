//! Domain types shared by the API, orchestration and the store.
//!
//! These are the objects users see; the same structs are serialised in API
//! responses and persisted (field for field) by the store.

mod image;
mod key;
mod lifetime;
mod route;
mod snapshot;
mod template;
mod user_data;
mod vm;

pub use image::{Image, ImageProfile, KernelFormat};
pub use key::{check_quota, QuotaExceeded, QuotaKind, Quotas, Role, Usage};
pub use lifetime::{Lifetime, LifetimeSeconds, OnIdle, MAX_LIFETIME_SECONDS};
pub use route::Route;
pub use snapshot::Snapshot;
pub use template::{Template, MAX_WARM_POOL};
pub use user_data::{
    user_data_fields, user_data_fields_with_null, UserData, UserDataError, USER_DATA_BASE64_FIELD, USER_DATA_FIELD,
};
pub use vm::{
    AgentStatus, Egress, NetworkIdentity, RestartPolicy, Vm, VmState, VmmLimits, MAX_EGRESS_CIDRS,
    VMM_MEMORY_OVERHEAD_MIB,
};

/// RFC 3339 timestamp in UTC, as stored and as shown in JSON.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

pub fn now() -> Timestamp {
    chrono::Utc::now()
}

/// A short random lowercase alphanumeric suffix for ids such as `vm-xyz789`.
pub fn random_id(prefix: &str, len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}-{suffix}")
}
