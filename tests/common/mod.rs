#![allow(dead_code)]

pub mod vmm;
