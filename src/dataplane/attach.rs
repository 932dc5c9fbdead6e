//! Attaching the program to interfaces as BPF links, in an explicit mode,
//! and keeping those links pinned so they outlive the daemon.
//!
//! libbpf's attach_xdp picks generic mode silently when a driver lacks
//! native XDP; an operator must know which one runs, so links are created
//! here with the mode flag. A pinned link is reused by the next daemon: if
//! it runs an older program, `bpf_link_update` swaps the program in place —
//! no moment without XDP on the interface.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libbpf_rs::libbpf_sys;
use libbpf_rs::query::{LinkInfo, LinkTypeInfo};

use super::DataplaneError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (XDP_FLAGS_DRV_MODE): the production mode.
    Native,
    /// In the generic network stack (XDP_FLAGS_SKB_MODE): works everywhere,
    /// several times slower. For testing and drivers without XDP.
    Generic,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            AttachMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }
}

/// An attached program. Dropping it detaches, unless the link is pinned.
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    pub ifindex: u32,
}

impl AsFd for XdpLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl XdpLink {
    /// The kernel's id of this link and of the program it runs.
    pub fn ids(&self) -> Result<(u32, u32), DataplaneError> {
        let info = LinkInfo::from_fd(self.fd.as_fd()).map_err(|e| DataplaneError::Link {
            what: "query",
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok((info.id, info.prog_id))
    }
}

/// What attach_pinned found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOutcome {
    /// No pinned link: attached and pinned a new one.
    Attached,
    /// A pinned link already ran this very program.
    Kept,
    /// A pinned link ran another program (an older build): replaced in place.
    Upgraded { previous_prog_id: u32 },
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths have no NUL")
}

fn link_err(what: &'static str, rc: i32) -> DataplaneError {
    DataplaneError::Link {
        what,
        source: std::io::Error::from_raw_os_error(-rc),
    }
}

pub fn attach(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    mode: AttachMode,
) -> Result<XdpLink, DataplaneError> {
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: size_of::<libbpf_sys::bpf_link_create_opts>() as _,
        flags: mode.flags(),
        ..Default::default()
    };
    // SAFETY: a valid program fd, an opts struct sized for this libbpf;
    // the return value is checked before it is used as an fd.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), ifindex as i32, libbpf_sys::BPF_XDP, &opts)
    };
    if fd < 0 {
        return Err(DataplaneError::Attach {
            ifindex,
            mode,
            source: std::io::Error::from_raw_os_error(-fd),
        });
    }
    // SAFETY: fd is a new link fd this process owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(XdpLink { fd, ifindex })
}

/// Opens a pinned link, if `path` holds one.
pub fn open_pinned(path: &Path) -> Result<Option<OwnedFd>, DataplaneError> {
    if !path.exists() {
        return Ok(None);
    }
    let c = cpath(path);
    // SAFETY: c is a valid path; the result is checked.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(link_err("open pinned", fd));
    }
    // SAFETY: a new fd this process owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The id of the program pinned at `path`, if one is.
pub fn pinned_prog_id(path: &Path) -> Result<Option<u32>, DataplaneError> {
    let Some(fd) = open_pinned(path)? else {
        return Ok(None);
    };
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: a valid fd; info and len describe a buffer of that size.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc < 0 {
        return Err(link_err("query program", rc));
    }
    Ok(Some(info.id))
}

fn xdp_ifindex(fd: BorrowedFd<'_>) -> Option<(u32, u32)> {
    let info = LinkInfo::from_fd(fd).ok()?;
    match info.info {
        // ifindex 0: the interface is gone and the link is defunct.
        LinkTypeInfo::Xdp(x) if x.ifindex != 0 => Some((x.ifindex, info.prog_id)),
        _ => None,
    }
}

/// Attaches through the link pinned at `path`: keeps it, upgrades its
/// program, or (none pinned, or pinned for a vanished interface) attaches
/// and pins a new one.
pub fn attach_pinned(
    prog: BorrowedFd<'_>,
    prog_id: u32,
    ifindex: u32,
    mode: AttachMode,
    path: &Path,
) -> Result<(XdpLink, LinkOutcome), DataplaneError> {
    if let Some(fd) = open_pinned(path)? {
        match xdp_ifindex(fd.as_fd()) {
            Some((idx, running)) if idx == ifindex => {
                let link = XdpLink { fd, ifindex };
                if running == prog_id {
                    return Ok((link, LinkOutcome::Kept));
                }
                let opts = libbpf_sys::bpf_link_update_opts {
                    sz: size_of::<libbpf_sys::bpf_link_update_opts>() as _,
                    ..Default::default()
                };
                // SAFETY: valid link and program fds; opts sized for libbpf.
                let rc = unsafe {
                    libbpf_sys::bpf_link_update(link.fd.as_raw_fd(), prog.as_raw_fd(), &opts)
                };
                if rc < 0 {
                    return Err(link_err("update program", rc));
                }
                return Ok((
                    link,
                    LinkOutcome::Upgraded {
                        previous_prog_id: running,
                    },
                ));
            }
            _ => {
                std::fs::remove_file(path).map_err(|source| DataplaneError::Os {
                    what: "removing a stale link pin",
                    source,
                })?;
            }
        }
    }
    let link = attach(prog, ifindex, mode)?;
    let c = cpath(path);
    // SAFETY: a valid link fd and path.
    let rc = unsafe { libbpf_sys::bpf_obj_pin(link.fd.as_raw_fd(), c.as_ptr()) };
    if rc < 0 {
        return Err(link_err("pin", rc));
    }
    Ok((link, LinkOutcome::Attached))
}

/// Puts `prog` on the link pinned at `path`, whatever interface it is
/// attached to: Kept or Upgraded; None when nothing is pinned there, or
/// the link is defunct (its interface gone: the pin is removed).
pub fn upgrade_pinned(
    prog: BorrowedFd<'_>,
    prog_id: u32,
    path: &Path,
) -> Result<Option<LinkOutcome>, DataplaneError> {
    let Some(fd) = open_pinned(path)? else {
        return Ok(None);
    };
    let Some((ifindex, _)) = xdp_ifindex(fd.as_fd()) else {
        std::fs::remove_file(path).map_err(|source| DataplaneError::Os {
            what: "removing a stale link pin",
            source,
        })?;
        return Ok(None);
    };
    drop(fd);
    // The link's own interface: attach_pinned keeps or upgrades it.
    attach_pinned(prog, prog_id, ifindex, AttachMode::Native, path).map(|(_, o)| Some(o))
}

/// Detaches a pinned link even if other processes hold it, and unpins it.
pub fn detach_pinned(path: &Path) -> Result<bool, DataplaneError> {
    let Some(fd) = open_pinned(path)? else {
        return Ok(false);
    };
    // SAFETY: a valid link fd. A defunct link reports an error we ignore:
    // it is detached already.
    unsafe { libbpf_sys::bpf_link_detach(fd.as_raw_fd()) };
    std::fs::remove_file(path).map_err(|source| DataplaneError::Os {
        what: "unpinning a link",
        source,
    })?;
    Ok(true)
}

/// A pinned XDP link as the kernel sees it (for `lethe doctor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedLink {
    pub link_id: u32,
    pub prog_id: u32,
    /// The interface it is attached to, in the namespace it was attached
    /// in; 0: defunct (the interface is gone).
    pub ifindex: u32,
}

/// The link pinned at `path`: None when nothing is pinned there.
pub fn pinned_link(path: &Path) -> Result<Option<PinnedLink>, DataplaneError> {
    let Some(fd) = open_pinned(path)? else {
        return Ok(None);
    };
    let info = LinkInfo::from_fd(fd.as_fd()).map_err(|e| DataplaneError::Link {
        what: "query",
        source: std::io::Error::other(e.to_string()),
    })?;
    let ifindex = match info.info {
        LinkTypeInfo::Xdp(x) => x.ifindex,
        _ => 0,
    };
    Ok(Some(PinnedLink {
        link_id: info.id,
        prog_id: info.prog_id,
        ifindex,
    }))
}

/// How XDP runs on an interface (`bpf_xdp_query`'s attach_mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    None,
    /// In the driver.
    Native,
    /// In the generic network stack (SKB mode).
    Generic,
    /// Offloaded to the NIC.
    Offloaded,
    /// Several programs in several modes.
    Multi,
}

/// XDP on one interface of the calling thread's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpState {
    pub mode: XdpMode,
    /// The program attached (in its only mode); 0 when none or several.
    pub prog_id: u32,
    pub native_prog_id: u32,
    pub generic_prog_id: u32,
}

/// Which XDP program runs on `ifindex`, and in which mode (netlink, in the
/// calling thread's network namespace).
pub fn xdp_query(ifindex: u32) -> Result<XdpState, DataplaneError> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: size_of::<libbpf_sys::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: an opts struct sized for this libbpf, written by the call.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) };
    if rc < 0 {
        return Err(link_err("bpf_xdp_query", rc));
    }
    let mode = match u32::from(opts.attach_mode) {
        libbpf_sys::XDP_ATTACHED_DRV => XdpMode::Native,
        libbpf_sys::XDP_ATTACHED_SKB => XdpMode::Generic,
        libbpf_sys::XDP_ATTACHED_HW => XdpMode::Offloaded,
        libbpf_sys::XDP_ATTACHED_MULTI => XdpMode::Multi,
        _ => XdpMode::None,
    };
    Ok(XdpState {
        mode,
        prog_id: opts.prog_id,
        native_prog_id: opts.drv_prog_id,
        generic_prog_id: opts.skb_prog_id,
    })
}
