//! Hatch: a control plane that turns a Linux host into a small cloud of
//! microVMs behind one authenticated REST API.
//!
//! Data flow: `api` (HTTP) → `orch` (per-VM state machine, reconcilers) →
//! host subsystems (`net`, `vmm`, `image`, `cloudinit`), with `store` as the
//! source of truth.

// Here rather than in each binary's main: `hatch-bench` runs the proxy in
// its own process, and what it measures must be what the daemon runs. The
// proxy allocates a handful of small blocks per request (header maps, body
// boxes, its boxed exchange); with mimalloc its thread runs about 500
// fewer instructions per request than with glibc's malloc (16.3k against
// 16.8k, callgrind, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
