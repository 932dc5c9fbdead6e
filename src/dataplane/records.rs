//! Map records: the skeleton's generated types for `bpf/abi.h`, built from
//! domain values, and viewed as bytes for map calls.

use std::net::IpAddr;

use super::skel::types;
use crate::abi::{BACKEND_F_SRC, FAMILY_INET, FAMILY_INET6};
use crate::plan::VipKey;

pub use types::{
    lethe_backend, lethe_backend_src, lethe_config, lethe_counter, lethe_nat_return,
    lethe_nexthop_ctl, lethe_trace, lethe_vip, lethe_vip_entry, lethe_vip_half,
    lethe_vip_index_ctl, lethe_vip_key,
};

/// Types whose every byte is initialised data: `repr(C)` structs of
/// integers with all padding spelled out as fields (see `bpf/abi.h`;
/// tests/abi.rs checks the sizes add up).
pub trait Pod: Copy {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: Pod is only implemented for repr(C) integer-only structs
        // without implicit padding, so all size_of::<Self>() bytes are
        // initialised and any alignment is fine for u8.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>()) }
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self>
    where
        Self: Default,
    {
        if bytes.len() != size_of::<Self>() {
            return None;
        }
        let mut v = Self::default();
        // SAFETY: lengths are equal; every bit pattern is a valid value of
        // an integer-only struct; the regions cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (&mut v as *mut Self).cast::<u8>(),
                bytes.len(),
            );
        }
        Some(v)
    }
}

impl Pod for lethe_vip_key {}
impl Pod for lethe_vip {}
impl Pod for lethe_vip_entry {}
impl Pod for lethe_vip_half {}
impl Pod for lethe_vip_index_ctl {}
impl Pod for lethe_backend {}
impl Pod for lethe_config {}
impl Pod for lethe_counter {}
impl Pod for lethe_trace {}
impl Pod for lethe_nat_return {}
impl Pod for lethe_backend_src {}
impl Pod for lethe_nexthop_ctl {}

/// Address bytes as the ABI stores them (IPv4 in the first 4 bytes) and
/// the ABI family code.
pub fn addr_bytes(a: &IpAddr) -> ([u8; 16], u8) {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (out, FAMILY_INET)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_INET6),
    }
}

pub fn vip_key(k: &VipKey) -> lethe_vip_key {
    let (addr, family) = addr_bytes(&k.address);
    lethe_vip_key {
        addr,
        // The map holds network byte order; the struct field is a plain u16
        // laid out in host order, so store the big-endian bytes.
        port: u16::from_ne_bytes(k.port.to_be_bytes()),
        proto: k.protocol.number(),
        family,
    }
}

/// A backend record; `src`: its outer source address is in backend_srcs.
pub fn backend(address: &IpAddr, port: u16, vip_id: u32, src: bool) -> lethe_backend {
    let (addr, family) = addr_bytes(address);
    lethe_backend {
        addr,
        port: u16::from_ne_bytes(port.to_be_bytes()),
        family,
        vip_id,
        flags: if src { BACKEND_F_SRC } else { 0 },
    }
}

pub fn backend_src(address: &IpAddr) -> lethe_backend_src {
    lethe_backend_src {
        addr: addr_bytes(address).0,
    }
}

/// The address an ABI record holds, if its family code is valid.
pub fn addr_from(addr: &[u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_INET => Some(IpAddr::from([addr[0], addr[1], addr[2], addr[3]])),
        FAMILY_INET6 => Some(IpAddr::from(*addr)),
        _ => None,
    }
}

/// A port as the ABI stores it (network order in a host-order field).
pub fn port_from(raw: u16) -> u16 {
    u16::from_be_bytes(raw.to_ne_bytes())
}

/// The VIP key a map key stands for, if it is one Lethe could have written.
pub fn vip_key_from(k: &lethe_vip_key) -> Option<VipKey> {
    Some(VipKey {
        address: addr_from(&k.addr, k.family)?,
        port: port_from(k.port),
        protocol: crate::config::Protocol::from_number(k.proto)?,
    })
}

impl std::ops::AddAssign for lethe_counter {
    fn add_assign(&mut self, o: Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}
