//! nimbus-api over real services: a fresh Postgres database and a Redis key space per test
//! (nimbus-testkit), an in-process pve-sim, and the router served on a free port.

mod admin;
mod admin_schedules;
mod admin_users;
mod apikeys;
mod audit;
mod auth_and_errors;
mod billing;
mod billing_ops;
mod bootstrap;
mod hardening;
mod health;
mod isolation;
mod jobs;
mod jwt;
mod metrics;
mod oidc;
mod openapi;
mod operations;
mod payments;
mod production;
mod ratelimit;
mod support;
mod tenant_errors;
mod traces;
mod vms;
mod web;
mod webhooks;
