//! End-to-end tests: the real `agentq-api`, `agentq-worker` and `agentq` binaries against real
//! Postgres and Redis, with the project's fake Messages API server standing in for Claude. The
//! tests of the API's behaviour run on both back ends (`on_both_backends!`, once as
//! `postgres::name`, once as `sqlite::name` on the embedded store `agentq dev` uses); those that
//! reach into Postgres or Redis themselves run on Postgres only. One test binary for the whole
//! suite keeps link times down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod harness;

mod api;
mod backends;
mod board;
mod budgets;
mod chaos;
mod cli;
mod code;
mod dev;
mod durability;
mod hardening;
mod llm;
mod observe;
mod openapi;
mod sessions;
mod sql;
mod tenants;
mod ui;
mod web;
mod webhooks;
