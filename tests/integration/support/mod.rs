//! Test support: fixtures, a spawned service, a gobgpd + BIRD lab on loopback.
pub mod app;
pub mod exabgp_lab;
pub mod fake_speaker;
pub mod fastnetmon;
pub mod fnm_api;
pub mod lab;
