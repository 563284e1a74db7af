#![allow(dead_code)]

pub mod agent;
pub mod browser;
pub mod cloudinit;
pub mod daemon;
pub mod e2e;
pub mod fakes;
pub mod guide;
pub mod hatchd;
pub mod images;
pub mod internet;
pub mod net;
pub mod netns;
pub mod proxy;
pub mod s3;
pub mod snapshot;
pub mod tls;
pub mod vmm;
