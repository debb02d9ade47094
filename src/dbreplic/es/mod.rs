//! The Elasticsearch sink: documents and index templates ([`config`]), the client and the
//! `_bulk` protocol ([`service`]), batch writes with the durable checkpoint ([`sink`]) and error
//! classification ([`retry`]).

pub mod config;
pub mod retry;
pub mod service;
pub mod sink;

pub use sink::EsSink;
