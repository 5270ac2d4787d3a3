//! Cross-service tests: the whole system started in-process on ephemeral
//! ports, called through the gateway as users call it. They run on SQLite, or
//! on PostgreSQL when `CSP_TEST_POSTGRES_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod audit;
mod billing;
mod catalog;
mod content;
mod contract;
mod gateway;
mod grpcurl_cli;
mod hybrid;
mod identity;
mod licensing;
mod limits;
mod metrics;
mod ordering;
mod outbox;
mod policies;
mod price_lists;
mod sign_in;
mod support;
