//! chaos: the fault-injection and consistency-checking suite.
//!
//! It starts the real services as processes on 127.0.0.1, runs client
//! workloads against them on the typed client while a seeded nemesis
//! injects faults, records every operation in a [`history`], and proves
//! with the [`check`]ers that nothing forbidden happened.
//!
//! - [`history`]: operations and faults as recorded (JSON lines).
//! - [`check`]: pure checkers over a history, one per promise.
//! - [`system`]: the services as real processes, killed, paused and
//!   restarted by PID.
//! - [`nemesis`]: the seeded schedule of faults.
//! - [`workload`]: the clients and what they record.
//! - [`netns`]: the lock nodes' private network, for partitions.
//! - [`faultfs`]: the `LD_PRELOAD` shim that makes a process's disk slow,
//!   failing or full.

pub mod check;
pub mod faultfs;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod system;
pub mod workload;
