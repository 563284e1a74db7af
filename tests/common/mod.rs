#![allow(dead_code)]

pub mod cloudinit;
pub mod snapshot;
