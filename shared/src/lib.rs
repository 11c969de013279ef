//! What the API, the workers and the CLI share: schemas, configuration, the store (Postgres truth,
//! Redis snapshot), the queue contract, the tool base, the pricing table, the SSRF policy and
//! webhook signing.

pub mod config;
pub mod memory;
pub mod metrics;
pub mod pricing;
pub mod queue;
pub mod schemas;
pub mod ssrf;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod webhooks;
