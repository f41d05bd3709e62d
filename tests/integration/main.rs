//! The integration suite: one test binary, so every test shares one build.

mod authorization;
mod bgp_gobgp;
mod e2e_exabgp;
mod e2e_fastnetmon;
mod e2e_gobgp;
mod escalation;
mod exec_backend;
mod hostile;
mod notifications;
mod openapi;
mod operator;
mod ordering;
mod reliability;
mod sources;
mod support;
