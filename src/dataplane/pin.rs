//! Where the data plane lives between daemons: a bpffs directory per
//! instance (default /sys/fs/bpf/lethe/<instance>/) holding every map by
//! name, the program (`prog`), one link per interface (`link_<ifname>`),
//! and the layout stamp (`layout`).
//!
//! The stamp says which layout the pinned maps are in (`LAYOUT`, a hash of
//! the headers that define them, computed by build.rs). A daemon adopts
//! pins only in its own layout. Pins in another (an upgrade that changed a
//! record or a map, or pins from before stamps) are never read: the daemon
//! fills fresh maps from the saved configuration while the old program
//! keeps forwarding on the old ones, moves the links over in one step
//! each, and only then replaces the pins (`Dataplane::take_over_pins`),
//! stamp last. A crash anywhere in between leaves links that forward and
//! pins without this build's stamp: the next daemon does it again.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use super::attach::detach_pinned;
use super::DataplaneError;

include!(concat!(env!("OUT_DIR"), "/layout.rs"));

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

pub fn layout_path(dir: &Path) -> PathBuf {
    dir.join("layout")
}

/// Whether a map of a BPF object is pinned under its name: all but
/// libbpf's internal maps (`.rodata`, `.data.config`, `name.bss`...), whose
/// contents belong to one build and are set at load.
pub fn is_pinned_map(name: &str) -> bool {
    !name.contains('.')
}

/// The pinned state of an instance, as the next daemon finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pins {
    /// Nothing pinned: a first start (or after `lethe down`, or a reboot).
    Empty,
    /// Maps in this build's layout: adopted as they are.
    Current,
    /// Maps in another layout (`stamp`: theirs, None when unstamped), or
    /// links without maps: never adopted; replaced after the links move.
    Other { stamp: Option<u64> },
}

/// Which of `Pins` the directory holds.
pub fn pins(dir: &Path) -> Pins {
    let maps = !map_pins(dir).is_empty();
    if !maps && links(dir).is_empty() {
        return Pins::Empty;
    }
    match read_layout(dir) {
        Some(LAYOUT) if maps => Pins::Current,
        stamp => Pins::Other { stamp },
    }
}

/// The pins that are neither links, the program nor the stamp: the maps,
/// by name, sorted.
pub fn map_pins(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("link_") && n != "prog" && n != "layout")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// How many VIPs the pinned `vips` map holds (0 without one): a count of
/// keys, which reads no record and so holds in any layout.
pub fn pinned_vips(dir: &Path) -> Result<usize, DataplaneError> {
    match MapHandle::from_pinned_path(dir.join("vips")) {
        Ok(map) => Ok(map.keys().count()),
        Err(_) if !dir.join("vips").exists() => Ok(0),
        Err(e) => Err(DataplaneError::map("vips", "open", e)),
    }
}

/// The pinned stamp; None when there is none or it is not one (another
/// kind of map, another size).
pub fn read_layout(dir: &Path) -> Option<u64> {
    let map = MapHandle::from_pinned_path(layout_path(dir)).ok()?;
    if map.map_type() != MapType::Array || map.key_size() != 4 || map.value_size() != 8 {
        return None;
    }
    let value = map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).ok()??;
    Some(u64::from_ne_bytes(value.try_into().ok()?))
}

/// Pins `stamp` as the directory's layout, replacing any stamp there: a
/// one-entry array of its own, which no program reads.
pub fn write_layout(dir: &Path, stamp: u64) -> Result<(), DataplaneError> {
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut map = MapHandle::create(MapType::Array, Some("lethe_layout"), 4, 8, 1, &opts)
        .map_err(|e| DataplaneError::map("layout", "create", e))?;
    map.update(&0u32.to_ne_bytes(), &stamp.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| DataplaneError::map("layout", "update", e))?;
    remove_pin(&layout_path(dir))?;
    map.pin(layout_path(dir))
        .map_err(|e| DataplaneError::map("layout", "pin", e))
}

/// Removes one pin; gone already is fine.
pub(super) fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DataplaneError::Os {
            what: "unpinning",
            source: e,
        }),
        _ => Ok(()),
    }
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

/// Whether this process runs in a mount namespace other than init's (as
/// under `ip netns exec`): a bpffs it mounts, and what it pins there, is
/// seen by no other namespace and goes with this one. False when unknown.
pub fn private_mount_namespace() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(ours), Ok(init)) => ours != init,
        _ => false,
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
