//! The one integration-test binary: the real bridge against a real Apache
//! Kafka broker (started by `kafka.rs`, shared by all tests; each test uses
//! topics of its own).

mod kafka;
#[macro_use]
mod harness;
mod load;

mod admin;
mod attacks;
mod binary;
mod callbacks;
mod compat;
mod contract;
mod dead_letter;
mod hostile;
mod observability;
mod publish;
mod rejections;
mod reliability;
mod routing;
mod tidy;
