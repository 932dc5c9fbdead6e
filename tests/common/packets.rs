//! Test packets, built with etherparse, and checksum verification that
//! does not trust the program: every checksum in a frame is recomputed.

use std::net::IpAddr;

use etherparse::PacketBuilder;
use lethe::checksum;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 1];

#[derive(Debug, Clone)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub udp: bool,
    pub tos: u8,
    pub vlan: Option<u16>,
    pub payload: Vec<u8>,
}

impl Flow {
    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> Flow {
        Flow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
            udp: false,
            tos: 0,
            vlan: None,
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        }
    }

    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Flow {
        Flow {
            udp: true,
            ..Flow::tcp(src, sport, dst, dport)
        }
    }

    pub fn tos(mut self, tos: u8) -> Flow {
        self.tos = tos;
        self
    }

    pub fn vlan(mut self, id: u16) -> Flow {
        self.vlan = Some(id);
        self
    }

    pub fn payload(mut self, len: usize) -> Flow {
        self.payload = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        self
    }

    /// The frame as the client sends it to the load balancer's MAC.
    pub fn frame(&self, lb_mac: [u8; 6]) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(CLIENT_MAC, lb_mac);
        let mut out = Vec::new();
        macro_rules! finish {
            ($ip:expr) => {
                if self.udp {
                    $ip.udp(self.sport, self.dport)
                        .write(&mut out, &self.payload)
                } else {
                    $ip.tcp(self.sport, self.dport, 0x1000_0000, 64240)
                        .syn()
                        .write(&mut out, &self.payload)
                }
            };
        }
        let result = match (self.src, self.dst, self.vlan) {
            (IpAddr::V4(s), IpAddr::V4(d), None) => finish!(eth.ipv4(s.octets(), d.octets(), 64)),
            (IpAddr::V6(s), IpAddr::V6(d), None) => finish!(eth.ipv6(s.octets(), d.octets(), 64)),
            (IpAddr::V4(s), IpAddr::V4(d), Some(v)) => finish!(eth
                .single_vlan(etherparse::VlanId::try_new(v).unwrap())
                .ipv4(s.octets(), d.octets(), 64)),
            (IpAddr::V6(s), IpAddr::V6(d), Some(v)) => finish!(eth
                .single_vlan(etherparse::VlanId::try_new(v).unwrap())
                .ipv6(s.octets(), d.octets(), 64)),
            _ => panic!("mixed-family flow"),
        };
        result.expect("build packet");
        if self.tos != 0 {
            let l3 = if self.vlan.is_some() { 18 } else { 14 };
            set_tos(&mut out[l3..], self.tos);
        }
        out
    }
}

/// Sets the IPv4 TOS (fixing the header checksum) or IPv6 traffic class.
pub fn set_tos(l3: &mut [u8], tos: u8) {
    if l3[0] >> 4 == 4 {
        l3[1] = tos;
        l3[10] = 0;
        l3[11] = 0;
        let c = checksum::internet(&l3[..20]);
        l3[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        l3[0] = 0x60 | (tos >> 4);
        l3[1] = (l3[1] & 0x0f) | (tos << 4);
    }
}

/// Fixes the IPv4 header checksum after a test edited the header.
pub fn fix_ipv4_csum(l3: &mut [u8]) {
    let ihl = usize::from(l3[0] & 0x0f) * 4;
    if ihl < 20 || l3.len() < ihl {
        return;
    }
    l3[10] = 0;
    l3[11] = 0;
    let c = checksum::internet(&l3[..ihl]);
    l3[10..12].copy_from_slice(&c.to_be_bytes());
}

fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut acc = checksum::sum(src, 0);
    acc = checksum::sum(dst, acc);
    acc + u32::from(proto) + len as u32
}

fn check_l4(proto: u8, src: &[u8], dst: &[u8], l4: &[u8], v6: bool) -> Result<String, String> {
    match proto {
        6 | 17 => {
            // GUE (to the fixtures' ports): also check the inner packet.
            let gue = proto == 17 && matches!(u16::from_be_bytes([l4[2], l4[3]]), 6080 | 6081);
            let inner = |what: &str| -> Result<String, String> {
                if gue {
                    check_l3(&l4[8..]).map(|i| format!("{what} [{i}]"))
                } else {
                    Ok(what.to_string())
                }
            };
            // No checksum: allowed over IPv4, and for GUE over IPv6 when the
            // inner packet cannot vouch for its payload (RFC 6935).
            if proto == 17 && (!v6 || gue) && l4[6] == 0 && l4[7] == 0 {
                return inner("udp (no checksum)");
            }
            // UDP's checksum covers its own length, which may leave bytes
            // of the IP payload after it (a surplus area).
            let seg = match proto {
                17 => match usize::from(u16::from_be_bytes([l4[4], l4[5]])) {
                    n if (8..=l4.len()).contains(&n) => &l4[..n],
                    _ => return Err("bad UDP length".into()),
                },
                _ => l4,
            };
            let sum = checksum::sum(seg, pseudo_sum(src, dst, proto, seg.len()));
            if checksum::fold(sum) != 0 {
                return Err(format!(
                    "bad {} checksum",
                    if proto == 6 { "TCP" } else { "UDP" }
                ));
            }
            if proto == 6 {
                Ok("tcp ok".into())
            } else {
                inner("udp ok")
            }
        }
        4 | 41 => check_l3(l4).map(|inner| format!("[{inner}]")),
        1 | 58 => {
            // ICMPv6 sums a pseudo-header too; ICMPv4 does not.
            let start = if proto == 58 {
                pseudo_sum(src, dst, proto, l4.len())
            } else {
                0
            };
            if checksum::fold(checksum::sum(l4, start)) != 0 {
                return Err(format!(
                    "bad {} checksum",
                    if proto == 1 { "ICMP" } else { "ICMPv6" }
                ));
            }
            Ok(if proto == 1 {
                "icmp ok".into()
            } else {
                "icmpv6 ok".into()
            })
        }
        p => Ok(format!("proto {p} unchecked")),
    }
}

/// Verifies every checksum from an IP header on: IPv4 header, TCP/UDP,
/// and recursively the inner packet of IPIP. Returns a short description.
pub fn check_l3(l3: &[u8]) -> Result<String, String> {
    match l3.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            let tot = usize::from(u16::from_be_bytes([l3[2], l3[3]]));
            if checksum::internet(&l3[..ihl]) != 0 {
                return Err("bad IPv4 header checksum".into());
            }
            let inner = check_l4(l3[9], &l3[12..16], &l3[16..20], &l3[ihl..tot], false)?;
            Ok(format!("ipv4 ok, {inner}"))
        }
        Some(6) => {
            let plen = usize::from(u16::from_be_bytes([l3[4], l3[5]]));
            let inner = check_l4(l3[6], &l3[8..24], &l3[24..40], &l3[40..40 + plen], true)?;
            Ok(format!("ipv6, {inner}"))
        }
        _ => Err("not IP".into()),
    }
}

/// Verifies the checksums of a whole Ethernet frame.
pub fn check_frame(frame: &[u8]) -> Result<String, String> {
    let l3 = if frame[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    };
    check_l3(&frame[l3..])
}
