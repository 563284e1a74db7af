#![allow(dead_code)]

pub mod images;
