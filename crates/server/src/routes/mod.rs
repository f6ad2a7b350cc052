//! HTTP routes, one module per area.

pub mod admin;
pub mod decide;
pub mod health;
pub mod peer;
