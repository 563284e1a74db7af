//! Hatch: a control plane that turns a Linux host into a small cloud of
//! microVMs behind one authenticated REST API.
//!
//! Data flow: `api` (HTTP) → `orch` (per-VM state machine, reconcilers) →
//! host subsystems (`net`, `vmm`, `image`, `cloudinit`), with `store` as the
//! source of truth.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cloudinit;
pub mod config;
pub mod idle;
pub mod image;
pub mod metrics;
pub mod model;
pub mod net;
pub mod orch;
pub mod proxy;
pub mod snapshot;
pub mod store;
pub mod sys;
pub mod tls;
pub mod vmm;
