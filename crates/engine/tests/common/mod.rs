//! The engine's integration tests take their harness and record batches from the
//! test kit.

#![allow(unused_imports)] // each test file uses its own subset

pub use sluice_testkit::batches::{batch, batch_with};
pub use sluice_testkit::engine::*;
