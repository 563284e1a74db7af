//! The active API keys in memory, so authenticating a request (every API
//! call) never waits for SQLite, and above all never for the write
//! connection while a transition or a snapshot holds it.
//!
//! Loaded when the store is opened and changed by this store's own key
//! writes (create, quotas, revoke) while they still hold the write
//! connection, so a revoked key is refused from the moment the revocation
//! returns. A key this cache does not know may have been added by another
//! process (`hatch key create --local`); the store then rereads the active
//! keys and replaces the cache, unless one of its own key writes happened
//! meanwhile (the `generation` check), which would make that read stale.

use std::sync::RwLock;

use subtle::ConstantTimeEq;

use super::keys::ApiKeyInfo;
use crate::model::Quotas;

/// A key's SHA-256 and its listing.
pub(super) type ActiveKey = ([u8; 32], ApiKeyInfo);

struct Entries {
    keys: Vec<ActiveKey>,
    /// Bumped by every change this store makes.
    generation: u64,
}

pub(super) struct KeyCache {
    entries: RwLock<Entries>,
}

impl KeyCache {
    pub(super) fn new(keys: Vec<ActiveKey>) -> KeyCache {
        KeyCache {
            entries: RwLock::new(Entries { keys, generation: 0 }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        // Every change replaces or removes whole entries; a panic cannot leave one half-made.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn change(&self, apply: impl FnOnce(&mut Vec<ActiveKey>)) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        apply(&mut entries.keys);
        entries.generation = entries.generation.wrapping_add(1);
    }

    /// Take this before reading the database for [`replace_if_unchanged`](Self::replace_if_unchanged).
    pub(super) fn generation(&self) -> u64 {
        self.read().generation
    }

    /// The active key with this hash, comparing every cached hash in
    /// constant time (no early exit that would reveal how much matched).
    pub(super) fn find(&self, hash: &[u8; 32]) -> Option<ApiKeyInfo> {
        let entries = self.read();
        let mut matched = None;
        for (stored, info) in &entries.keys {
            if bool::from(stored.ct_eq(hash)) {
                matched = Some(info);
            }
        }
        matched.cloned()
    }

    pub(super) fn insert(&self, key: ActiveKey) {
        self.change(|keys| keys.push(key));
    }

    pub(super) fn remove(&self, id: &str) {
        self.change(|keys| keys.retain(|(_, info)| info.id != id));
    }

    pub(super) fn set_quotas(&self, id: &str, quotas: Quotas) {
        self.change(|keys| {
            for (_, info) in keys.iter_mut().filter(|(_, info)| info.id == id) {
                info.quotas = quotas;
            }
        });
    }

    /// Replaces every entry with `keys`, read from the database after
    /// `generation` was taken; false (nothing changed) when this store
    /// changed a key in between.
    pub(super) fn replace_if_unchanged(&self, generation: u64, keys: Vec<ActiveKey>) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.generation != generation {
            return false;
        }
        entries.keys = keys;
        true
    }
}
