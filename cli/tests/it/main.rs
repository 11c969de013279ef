//! End-to-end tests: the real `agentq-api`, `agentq-worker` and `agentq` binaries against real
//! Postgres and Redis, with the project's fake Messages API server standing in for Claude.
//! One test binary for the whole suite keeps link times down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
mod harness;
mod llm;
mod observe;
mod openapi;
mod sessions;
mod sql;
mod web;
