//! End-to-end tests: the real `fulcrum` binary, real echo backends, real sockets on 127.0.0.1.

mod balancing;
mod check;
mod failures;
mod faults;
mod sticky;
mod support;
mod tiers;
