//! Where the data plane lives between daemons: a bpffs directory per
//! instance (default /sys/fs/bpf/lethe/<instance>/) holding every map by
//! name, the program (`prog`), and one link per interface (`link_<ifname>`).

use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::attach::detach_pinned;
use super::DataplaneError;

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub fn instance_dir(root: &Path, instance: &str) -> PathBuf {
    root.join("lethe").join(instance)
}

pub fn link_path(dir: &Path, ifname: &str) -> PathBuf {
    dir.join(format!("link_{ifname}"))
}

pub fn prog_path(dir: &Path) -> PathBuf {
    dir.join("prog")
}

/// Whether a bpffs is mounted at `path` (not under `ip netns exec`, which
/// remounts /sys and hides it).
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a zeroed struct for a valid path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Mounts bpffs at `root` when nothing is mounted there yet.
pub fn ensure_bpffs(root: &Path) -> Result<(), DataplaneError> {
    if is_bpffs(root) {
        return Ok(());
    }
    std::fs::create_dir_all(root).map_err(|source| DataplaneError::Os {
        what: "creating the bpffs mount point",
        source,
    })?;
    let target = CString::new(root.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: static C strings and a valid target path.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DataplaneError::Os {
            what: "mounting bpffs",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The `link_<ifname>` pins of a pin directory: (ifname, path), sorted;
/// none when the directory is missing.
pub fn links(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut pins: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("link_")
                        .map(|i| (i.to_string(), e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    pins.sort();
    pins
}

/// Detaches and unpins the link of one interface; false if none was pinned.
pub fn detach_link(dir: &Path, ifname: &str) -> Result<bool, DataplaneError> {
    detach_pinned(&link_path(dir, ifname))
}

/// What `remove_instance` took away.
#[derive(Debug, Default)]
pub struct Removed {
    pub links: Vec<String>,
    pub files: usize,
}

/// Detaches every pinned link of an instance and removes its pins (maps,
/// program): traffic stops being balanced, counters are gone.
pub fn remove_instance(dir: &Path) -> Result<Removed, DataplaneError> {
    let mut removed = Removed::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(source) => {
            return Err(DataplaneError::Os {
                what: "reading the pin directory",
                source,
            })
        }
    };
    let mut others = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ifname) = name.strip_prefix("link_") {
            if detach_pinned(&entry.path())? {
                removed.links.push(ifname.to_string());
            }
        } else {
            others.push(entry.path());
        }
    }
    for path in others {
        std::fs::remove_file(&path).map_err(|source| DataplaneError::Os {
            what: "unpinning",
            source,
        })?;
        removed.files += 1;
    }
    std::fs::remove_dir(dir).map_err(|source| DataplaneError::Os {
        what: "removing the pin directory",
        source,
    })?;
    Ok(removed)
}
