#![allow(dead_code)]
pub mod net;
pub mod netns;
