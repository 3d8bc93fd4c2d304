//! chaos: the fault-injection and consistency-checking suite.
//!
//! It starts the real services as processes on 127.0.0.1, runs client
//! workloads against them on the typed client while a seeded nemesis
//! injects faults, records every operation in a [`history`], and proves
//! with the [`check`]ers that nothing forbidden happened.
//!
//! - [`history`]: operations and faults as recorded (JSON lines).
//! - [`check`]: pure checkers over a history, one per promise.

pub mod check;
pub mod history;
