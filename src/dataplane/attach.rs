//! Attaching the program to interfaces as BPF links, in an explicit mode.
//! (libbpf's attach_xdp picks generic mode silently when a driver lacks
//! native XDP; an operator must know which one runs.)

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::libbpf_sys;

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

/// An attached program. Dropping it detaches, unless the link was pinned.
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    pub ifindex: u32,
    pub mode: AttachMode,
}

impl AsFd for XdpLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
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
    Ok(XdpLink { fd, ifindex, mode })
}
