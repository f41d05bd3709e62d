//! Test support: fixtures, a spawned service, a gobgpd + BIRD lab on loopback.
pub mod app;
pub mod fake_speaker;
pub mod lab;
