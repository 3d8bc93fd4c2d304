//! The disk fault shim (`faultfs.c`): an `LD_PRELOAD` library that makes
//! one process's `fsync`/`fdatasync` slow or failing (`EIO`) and its
//! `pwrite` fail with `ENOSPC`, switched at run time through a control
//! file (see the C source for its format).
//!
//! It is compiled with the system's `cc` when first needed (the machines
//! this project runs on have gcc), into a unique file that is then renamed,
//! so concurrent test processes never load a half-written library.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = include_str!("faultfs.c");

/// One disk fault, as the shim's control file states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every call passes through.
    None,
    /// Every sync sleeps this many ms first.
    Slow { ms: u64 },
    /// The next `times` syncs sleep `after_ms`, then fail with EIO.
    Eio { times: u32, after_ms: u64 },
    /// The next `times` writes to regular files fail with ENOSPC.
    Enospc { times: u32 },
}

impl Fault {
    /// The control file's line for this fault.
    pub fn line(&self) -> String {
        match self {
            Fault::None => "ok\n".into(),
            Fault::Slow { ms } => format!("slow {ms}\n"),
            Fault::Eio { times, after_ms } => format!("eio {times} {after_ms}\n"),
            Fault::Enospc { times } => format!("enospc {times}\n"),
        }
    }
}

/// Build the shim into `dir` (once per version of its source) and return
/// the library's path. The file is named for a hash of the source, so a
/// changed shim is never served from an older build.
pub fn build(dir: &Path) -> std::io::Result<PathBuf> {
    let hash = SOURCE.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let out = dir.join(format!("libfaultfs-{hash:016x}.so"));
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir)?;
    let unique = format!("{}.{:?}", std::process::id(), std::thread::current().id());
    let src = dir.join(format!("faultfs.{unique}.c"));
    let tmp = dir.join(format!("libfaultfs.so.{unique}"));
    std::fs::write(&src, SOURCE)?;
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&tmp)
        .arg(&src)
        .args(["-ldl", "-lpthread"])
        .status()?;
    let _ = std::fs::remove_file(&src);
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "cc could not build the fault shim ({status})"
        )));
    }
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// Set the fault a process started with `FAULTFS_CTL=ctl` sees from its
/// next sync or write on.
pub fn set(ctl: &Path, fault: Fault) -> std::io::Result<()> {
    std::fs::write(ctl, fault.line())
}

/// The environment that puts a process on the shim, controlled by `ctl`.
pub fn env(lib: &Path, ctl: &Path) -> [(&'static str, PathBuf); 2] {
    [
        ("LD_PRELOAD", lib.to_path_buf()),
        ("FAULTFS_CTL", ctl.to_path_buf()),
    ]
}
