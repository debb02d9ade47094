//! The reporting PostgreSQL sink (XiVO CC's `xivo_stats`): layout ([`config`]), connection
//! and schema ([`service`]), batch writes ([`sink`]) and error classification ([`retry`]).

pub mod config;
pub mod retry;
pub mod service;
pub mod sink;

pub use sink::PgSink;
