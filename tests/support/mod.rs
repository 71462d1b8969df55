//! Test support shared by the end-to-end tests and xtask (which includes this file with
//! `#[path]`): one implementation of the namespace topology and the lab.
#![allow(dead_code)]

pub mod lab;
pub mod mobility;
pub mod netns;
pub mod stream;
