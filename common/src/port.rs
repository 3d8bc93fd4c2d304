//! Ports for servers that run as separate processes (black-box tests, the
//! fault suite, load tools): the port has to be chosen before the process
//! that binds it starts, so "bind 127.0.0.1:0 and let the kernel pick" is not
//! available.
//!
//! The usual stand-in, binding port 0, reading the port and closing the
//! socket, races twice, and CI lost runs to both ("Address already in use"
//! from a node started a few milliseconds later):
//! - the kernel hands out the same *ephemeral* range to outgoing
//!   connections, so a busy test next door (hundreds of client connections)
//!   can take the port as its local port before the server binds it;
//! - another test process can be handed the same port.
//!
//! [`reserve`] closes both:
//! - ports come from below the ephemeral range
//!   (`/proc/sys/net/ipv4/ip_local_port_range`), which outgoing connections
//!   never use;
//! - each port is claimed across processes by an exclusive `flock` on a file
//!   under the temp dir, held until this process exits (the kernel drops it
//!   even on SIGKILL, so a crashed test leaves nothing behind);
//! - a claimed port is also bound once to check nothing else (a server
//!   outside this scheme) listens on it.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

/// Lowest port handed out: above the well-known and common service ports.
const FIRST_PORT: u16 = 20_000;

/// Used when the ephemeral range cannot be read (not Linux): the IANA
/// dynamic range starts here.
const DEFAULT_EPHEMERAL_START: u16 = 49_152;

/// Lock files held for the life of the process (dropping one frees its port
/// for other processes).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A port on 127.0.0.1 that no other process using this function holds, that
/// nothing listens on now, and that outgoing connections will not take.
/// It stays reserved to this process until it exits, so a server restarted
/// on the same port gets it back.
pub fn reserve() -> io::Result<u16> {
    let end = ephemeral_start().max(FIRST_PORT + 1000);
    let span = u32::from(end - FIRST_PORT);
    let dir = std::env::temp_dir().join("dsync-ports");
    std::fs::create_dir_all(&dir)?;
    // Start at a different place per process so concurrent test binaries
    // rarely even try the same files.
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos();
    for i in 0..span {
        let port = FIRST_PORT + ((seed.wrapping_add(i)) % span) as u16;
        if let Some(lock) = claim(&dir, port)? {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
                return Ok(port);
            }
            // In use by something outside this scheme: keep the claim, so
            // no one else in it tries this port again.
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free port left in {FIRST_PORT}..{end}"),
    ))
}

/// [`reserve`] for tests and tools, where no free port is a broken set-up.
pub fn free_port() -> u16 {
    reserve().unwrap_or_else(|e| panic!("cannot reserve a port on 127.0.0.1: {e}"))
}

/// The port's lock file, locked by this process, or `None` when another
/// process (or this one) holds it.
fn claim(dir: &std::path::Path, port: u16) -> io::Result<Option<File>> {
    let path: PathBuf = dir.join(format!("{port}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 50, "{ports:?}");
        for p in ports {
            assert!(p >= FIRST_PORT && p < ephemeral_start().max(FIRST_PORT + 1000));
            TcpListener::bind(("127.0.0.1", p)).expect("a reserved port binds");
        }
    }

    #[test]
    fn a_port_held_by_this_process_is_not_claimed_again() {
        let dir = tempfile::tempdir().unwrap();
        let held = claim(dir.path(), 20_001).unwrap();
        assert!(held.is_some());
        // flock locks belong to the open file, so a second open is refused
        // even within one process, as another process would be.
        assert!(claim(dir.path(), 20_001).unwrap().is_none());
        drop(held);
        assert!(claim(dir.path(), 20_001).unwrap().is_some());
    }
}
