//! The backend-side decap program's twin (`bpf/decap.bpf.c`), rule for
//! rule: which encapsulations it strips, and what it leaves alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::abi::DecapReason;

/// What the program is configured with.
#[derive(Debug, Clone, Default)]
pub struct DecapConfig {
    /// GUE destination port; 0: GUE is not stripped.
    pub gue_port: u16,
    /// This host's addresses: the outer destinations it strips for.
    pub local: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecapOutcome {
    pub reason: DecapReason,
    /// The frame as the program leaves it (always passed to the stack).
    pub frame: Vec<u8>,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn inner_type(f: &[u8], at: usize) -> u16 {
    match f.get(at).map(|b| b >> 4) {
        Some(4) => ETH_P_IP,
        Some(6) => ETH_P_IPV6,
        _ => 0,
    }
}

/// The ECN field of an IP header of EtherType `ty`.
fn ecn_of(ip: &[u8], ty: u16) -> u8 {
    if ty == ETH_P_IP {
        ip[1] & 3
    } else {
        (ip[1] >> 4) & 3
    }
}

/// `ecn_decap` of bpf/decap.bpf.c (RFC 6040, normal mode): an outer CE
/// onto an ECN-capable inner packet, an outer ECT(1) onto ECT(0); a
/// packet that is not ECN-capable stays as it is (the RFC would drop it
/// under an outer CE; the program never drops).
fn ecn_decap(outer: u8, inner: &mut [u8], ty: u16) {
    const ECT1: u8 = 1;
    const ECT0: u8 = 2;
    const CE: u8 = 3;
    let was = ecn_of(inner, ty);
    let now = match (was, outer) {
        (0 | CE, _) => return,
        (_, CE) => CE,
        (ECT0, ECT1) => ECT1,
        _ => return,
    };
    if ty == ETH_P_IP {
        let before = u16::from_ne_bytes([inner[0], inner[1]]);
        inner[1] = (inner[1] & !3) | now;
        let after = u16::from_ne_bytes([inner[0], inner[1]]);
        let check = u16::from_ne_bytes([inner[10], inner[11]]);
        let check = crate::checksum::replace(check, &[before], &[after]);
        inner[10..12].copy_from_slice(&check.to_ne_bytes());
    } else {
        inner[1] = (inner[1] & !0x30) | (now << 4);
    }
}

pub fn decap(cfg: &DecapConfig, f: &[u8]) -> DecapOutcome {
    let left = |reason| DecapOutcome {
        reason,
        frame: f.to_vec(),
    };
    if f.len() < 14 {
        return left(DecapReason::Malformed);
    }
    let (mut proto, mut l3) = (be16(f, 12), 14);
    if proto == 0x8100 {
        if f.len() < 18 {
            return left(DecapReason::Malformed);
        }
        proto = be16(f, 16);
        l3 = 18;
    }
    let local = |a: IpAddr| cfg.local.contains(&a);
    let (next, mut olen, mut l4, mut why) = match proto {
        ETH_P_IP => {
            if f.len() < l3 + 20 {
                return left(DecapReason::Malformed);
            }
            let (v, ihl) = (f[l3] >> 4, f[l3] & 0xf);
            if v != 4 || ihl < 5 {
                return left(DecapReason::Malformed);
            }
            let next = f[l3 + 9];
            if next != 4 && next != 17 {
                return left(DecapReason::NotEncap);
            }
            if ihl != 5 || be16(f, l3 + 6) & 0x3fff != 0 {
                return left(DecapReason::Fragment);
            }
            let dst = Ipv4Addr::new(f[l3 + 16], f[l3 + 17], f[l3 + 18], f[l3 + 19]);
            if !local(IpAddr::V4(dst)) {
                return left(DecapReason::NotLocal);
            }
            (next, 20, l3 + 20, DecapReason::Ipip)
        }
        ETH_P_IPV6 => {
            if f.len() < l3 + 40 {
                return left(DecapReason::Malformed);
            }
            if f[l3] >> 4 != 6 {
                return left(DecapReason::Malformed);
            }
            let next = f[l3 + 6];
            if next != 4 && next != 41 && next != 17 {
                return left(DecapReason::NotEncap);
            }
            let mut d = [0u8; 16];
            d.copy_from_slice(&f[l3 + 24..l3 + 40]);
            if !local(IpAddr::V6(Ipv6Addr::from(d))) {
                return left(DecapReason::NotLocal);
            }
            let why = if next == 41 {
                DecapReason::Ip6ip6
            } else {
                DecapReason::Ip4in6
            };
            (next, 40, l3 + 40, why)
        }
        _ => return left(DecapReason::NotEncap),
    };
    let want = if next == 17 {
        if f.len() < l4 + 8 {
            return left(DecapReason::Malformed);
        }
        if cfg.gue_port == 0 || be16(f, l4 + 2) != cfg.gue_port {
            return left(DecapReason::NotEncap);
        }
        olen += 8;
        l4 += 8;
        why = if proto == ETH_P_IP {
            DecapReason::Gue4
        } else {
            DecapReason::Gue6
        };
        inner_type(f, l4)
    } else if next == 41 {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    if want == 0 || inner_type(f, l4) != want {
        return left(DecapReason::Malformed);
    }
    let need = if want == ETH_P_IP { 20 } else { 40 };
    if l4 + need > f.len() {
        return left(DecapReason::Malformed);
    }
    let mut out = f[..l3].to_vec();
    out[l3 - 2..l3].copy_from_slice(&want.to_be_bytes());
    out.extend_from_slice(&f[l3 + olen..]);
    ecn_decap(ecn_of(&f[l3..], proto), &mut out[l3..], want);
    DecapOutcome {
        reason: why,
        frame: out,
    }
}
