//! The integration suite: one test binary, so every test shares one build.

mod bgp_gobgp;
mod e2e_gobgp;
mod escalation;
mod notifications;
mod operator;
mod support;
