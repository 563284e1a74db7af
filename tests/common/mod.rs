#![allow(dead_code)]

pub mod cloudinit;
