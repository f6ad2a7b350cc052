//! HTTP routes, one module per area.

pub mod admin;
pub mod capacity;
pub mod cluster;
pub mod credentials;
pub mod decide;
pub mod decision_log;
pub mod drain;
pub mod health;
pub mod peer;
pub mod tokens;
pub mod upgrade;
pub mod watch;
