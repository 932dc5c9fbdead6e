//! Packet fixtures through the real XDP program (BPF_PROG_TEST_RUN): each
//! row is an input frame, the verdict and reason the program must give,
//! and the frame it must leave. Expected frames are built here with
//! etherparse, independently of the program and of the model; every
//! forwarded frame's checksums are recomputed.
//!
//! Privileged: needs root (BPF, a network namespace). Run by scripts/test.sh.

mod common;

use std::net::IpAddr;

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header};
use lethe::abi::{Action, Reason, IPPROTO_TCP, IPPROTO_UDP};
use lethe::dataplane::{Counter, Dataplane};
use lethe::flow_hash::FlowKey;
use lethe::model::{self, Network};
use lethe::plan::Plan;

use common::config::fixture_config;
use common::netns::in_new_netns;
use common::packets::{check_frame, fix_ipv4_csum, Flow};
use common::topology::Topology;

/// What a fixture expects the program to leave.
enum Expect {
    /// The input frame, byte for byte.
    Untouched,
    /// This frame.
    Frame(Vec<u8>),
}

struct Fixture {
    name: &'static str,
    input: Vec<u8>,
    action: Action,
    reason: Reason,
    output: Expect,
}

struct Env {
    topo: Topology,
    plan: Plan,
    ingress: u32,
    lb_mac: [u8; 6],
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Env {
    fn key(&self, f: &Flow) -> FlowKey {
        FlowKey {
            src: f.src,
            dst: f.dst,
            sport: f.sport,
            dport: f.dport,
            proto: if f.udp { 17 } else { 6 },
        }
    }

    /// The backend and hash the plan gives a flow (checked against the
    /// kernel by the frames below and by tests/model_vs_kernel.rs).
    fn pick(&self, f: &Flow) -> model::Pick {
        model::pick(&self.plan, &self.key(f)).expect("flow to a VIP with backends")
    }

    fn egress(&self, backend: IpAddr) -> (&'static str, Option<IpAddr>) {
        match backend {
            IpAddr::V4(a) if a.octets()[1] == 9 || a.octets()[..3] == [198, 51, 100] => {
                ("lt0", Some(ip("10.1.0.254")))
            }
            IpAddr::V6(a) if a.segments()[1] == 9 || a.segments()[..3] == [0x2001, 0xdb8, 0xc] => {
                ("lt0", Some(ip("fd00:1::fe")))
            }
            IpAddr::V4(a) if a.octets()[1] == 2 => ("lt2", None),
            IpAddr::V6(a) if a.segments()[1] == 2 => ("lt2", None),
            _ => ("lt0", None),
        }
    }

    fn macs_for(&self, backend: IpAddr) -> ([u8; 6], [u8; 6]) {
        let (dev, gw) = self.egress(backend);
        let dmac = self
            .topo
            .neighbour_mac(gw.unwrap_or(backend))
            .expect("resolved");
        (self.topo.iface_mac(dev), dmac)
    }

    /// The outer source: the egress interface's address of that family.
    fn outer_src(&self, backend: IpAddr) -> IpAddr {
        let n = match self.egress(backend).0 {
            "lt0" => 1,
            "lt2" => 2,
            _ => 3,
        };
        if backend.is_ipv4() {
            ip(&format!("10.{n}.0.1"))
        } else {
            ip(&format!("fd00:{n}::1"))
        }
    }

    /// dsr: the input with the backend's MAC as destination and the egress
    /// interface's as source.
    fn dsr(&self, f: &Flow) -> Vec<u8> {
        let input = f.frame(self.lb_mac);
        let (smac, dmac) = self.macs_for(self.pick(f).backend);
        let mut out = input.clone();
        out[0..6].copy_from_slice(&dmac);
        out[6..12].copy_from_slice(&smac);
        out
    }

    /// gue: L2 with new MACs and EtherType, the outer IP header and UDP
    /// header written by etherparse — over IPv6 with the UDP checksum
    /// computed in full over the inner packet — then the input from L3 on.
    fn gue(&self, f: &Flow, input: &[u8]) -> Vec<u8> {
        let pick = self.pick(f);
        let backend = pick.backend;
        let (smac, dmac) = self.macs_for(backend);
        let l3 = if f.vlan.is_some() { 18 } else { 14 };
        let inner_len = if f.src.is_ipv4() {
            usize::from(u16::from_be_bytes([input[l3 + 2], input[l3 + 3]]))
        } else {
            40 + usize::from(u16::from_be_bytes([input[l3 + 4], input[l3 + 5]]))
        };
        let inner = &input[l3..l3 + inner_len];
        let sport = 0xc000 | (pick.hash & 0x3fff) as u16;
        let mut out = input[..l3].to_vec();
        out[0..6].copy_from_slice(&dmac);
        out[6..12].copy_from_slice(&smac);
        let src = self.outer_src(backend);
        match (src, backend) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out[l3 - 2..l3].copy_from_slice(&0x0800u16.to_be_bytes());
                let mut h = Ipv4Header::new(
                    (inner_len + 8) as u16,
                    64,
                    IpNumber::UDP,
                    s.octets(),
                    d.octets(),
                )
                .unwrap();
                h.dont_fragment = true;
                h.dscp = etherparse::Ipv4Dscp::try_new(f.tos >> 2).unwrap();
                h.ecn = etherparse::Ipv4Ecn::try_new(f.tos & 3).unwrap();
                h.header_checksum = h.calc_header_checksum();
                h.write(&mut out).unwrap();
                let udp = etherparse::UdpHeader {
                    source_port: sport,
                    destination_port: 6081,
                    length: (inner_len + 8) as u16,
                    checksum: 0,
                };
                udp.write(&mut out).unwrap();
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out[l3 - 2..l3].copy_from_slice(&0x86ddu16.to_be_bytes());
                let h = Ipv6Header {
                    traffic_class: f.tos,
                    flow_label: Ipv6FlowLabel::try_new(pick.hash & 0xF_FFFF).unwrap(),
                    payload_length: (inner_len + 8) as u16,
                    next_header: IpNumber::UDP,
                    hop_limit: 64,
                    source: s.octets(),
                    destination: d.octets(),
                };
                h.write(&mut out).unwrap();
                let csum_at = if f.src.is_ipv4() { 26 } else { 46 };
                let inner_udp_without_csum =
                    f.udp && inner[csum_at] == 0 && inner[csum_at + 1] == 0;
                let udp = if inner_udp_without_csum {
                    etherparse::UdpHeader {
                        source_port: sport,
                        destination_port: 6081,
                        length: (inner_len + 8) as u16,
                        checksum: 0,
                    }
                } else {
                    etherparse::UdpHeader::with_ipv6_checksum(sport, 6081, &h, inner).unwrap()
                };
                udp.write(&mut out).unwrap();
            }
            _ => unreachable!(),
        }
        out.extend_from_slice(&input[l3..]);
        out
    }

    /// nat ingress: the same packet built anew (etherparse computes every
    /// checksum from scratch) to the backend and its port, MACs towards it.
    fn nat_in(&self, f: &Flow, zero_udp_csum: bool) -> Vec<u8> {
        let backend = self.pick(f).backend;
        let planned = self
            .plan
            .vips
            .iter()
            .find(|v| v.vip.address == f.dst)
            .unwrap();
        let port = planned
            .vip
            .backends
            .iter()
            .find(|b| b.address == backend)
            .map(|b| planned.vip.backend_port(b))
            .unwrap();
        let mut g = f.clone();
        g.dst = backend;
        if port != 0 {
            g.dport = port;
        }
        self.finish(&g, backend, zero_udp_csum)
    }

    /// nat return: the backend's reply built anew from the VIP.
    fn nat_back(&self, f: &Flow, vip: &str, vip_port: u16, zero_udp_csum: bool) -> Vec<u8> {
        let mut g = f.clone();
        g.src = ip(vip);
        if vip_port != 0 {
            g.sport = vip_port;
        }
        self.finish(&g, f.dst, zero_udp_csum)
    }

    /// A rewritten frame passed to the kernel (unresolved next hop): the
    /// input's MACs, the rewritten packet's headers.
    fn kept_macs(&self, rewritten: Vec<u8>, input: &[u8]) -> Vec<u8> {
        let mut out = rewritten;
        out[..12].copy_from_slice(&input[..12]);
        out
    }

    fn finish(&self, g: &Flow, towards: IpAddr, zero_udp_csum: bool) -> Vec<u8> {
        let mut out = g.frame(self.lb_mac);
        if zero_udp_csum {
            zero_udp_checksum(&mut out);
        }
        // No neighbour: the frame is passed to the kernel with the input's
        // MACs (see kept_macs).
        if self.resolved(towards) {
            let (smac, dmac) = self.macs_for(towards);
            out[0..6].copy_from_slice(&dmac);
            out[6..12].copy_from_slice(&smac);
        }
        out
    }

    fn resolved(&self, towards: IpAddr) -> bool {
        let (_, gw) = self.egress(towards);
        self.topo.neighbour_mac(gw.unwrap_or(towards)).is_some()
    }

    /// ipip: L2 (and tag) with new MACs and EtherType, the outer header
    /// written by etherparse, then the input from L3 on.
    fn ipip(&self, f: &Flow, input: &[u8]) -> Vec<u8> {
        let pick = self.pick(f);
        let backend = pick.backend;
        let (smac, dmac) = self.macs_for(backend);
        let l3 = if f.vlan.is_some() { 18 } else { 14 };
        let inner = &input[l3..];
        let inner_len = if f.src.is_ipv4() {
            usize::from(u16::from_be_bytes([inner[2], inner[3]]))
        } else {
            40 + usize::from(u16::from_be_bytes([inner[4], inner[5]]))
        };
        let mut out = input[..l3].to_vec();
        out[0..6].copy_from_slice(&dmac);
        out[6..12].copy_from_slice(&smac);
        let src = self.outer_src(backend);
        match (src, backend) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out[l3 - 2..l3].copy_from_slice(&0x0800u16.to_be_bytes());
                let mut h =
                    Ipv4Header::new(inner_len as u16, 64, IpNumber::IPV4, s.octets(), d.octets())
                        .unwrap();
                h.dont_fragment = true;
                h.identification = 0;
                h.dscp = etherparse::Ipv4Dscp::try_new(f.tos >> 2).unwrap();
                h.ecn = etherparse::Ipv4Ecn::try_new(f.tos & 3).unwrap();
                h.header_checksum = h.calc_header_checksum();
                h.write(&mut out).unwrap();
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out[l3 - 2..l3].copy_from_slice(&0x86ddu16.to_be_bytes());
                let h = Ipv6Header {
                    traffic_class: f.tos,
                    flow_label: Ipv6FlowLabel::try_new(pick.hash & 0xF_FFFF).unwrap(),
                    payload_length: inner_len as u16,
                    next_header: if f.src.is_ipv4() {
                        IpNumber::IPV4
                    } else {
                        IpNumber::IPV6
                    },
                    hop_limit: 64,
                    source: s.octets(),
                    destination: d.octets(),
                };
                h.write(&mut out).unwrap();
            }
            _ => unreachable!(),
        }
        out.extend_from_slice(inner);
        out
    }
}

fn tcp4(dst: &str, dport: u16) -> Flow {
    Flow::tcp("198.51.100.7", 40_001, dst, dport)
}

fn tcp6(dst: &str, dport: u16) -> Flow {
    Flow::tcp("2001:db8:c::7", 40_001, dst, dport)
}

fn fwd(name: &'static str, input: Vec<u8>, action: Action, output: Vec<u8>) -> Fixture {
    let reason = if action == Action::Tx {
        Reason::FwdTx
    } else {
        Reason::FwdRedirect
    };
    Fixture {
        name,
        input,
        action,
        reason,
        output: Expect::Frame(output),
    }
}

fn fwd_as(name: &'static str, input: Vec<u8>, reason: Reason, output: Vec<u8>) -> Fixture {
    Fixture {
        name,
        input,
        action: reason.implied_action(),
        reason,
        output: Expect::Frame(output),
    }
}

fn left(name: &'static str, input: Vec<u8>, reason: Reason) -> Fixture {
    Fixture {
        name,
        input,
        action: reason.implied_action(),
        reason,
        output: Expect::Untouched,
    }
}

/// Edits the L3 header of a frame (offset 14) and returns it.
fn edit(mut frame: Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    f(&mut frame);
    frame
}

fn fixtures(env: &Env) -> Vec<Fixture> {
    let m = env.lb_mac;
    let frame = |f: &Flow| f.frame(m);
    let ipip = |f: &Flow| env.ipip(f, &f.frame(m));
    let mut v = vec![
        // Forwarding, per mode and family.
        fwd(
            "ipv4 tcp to dsr VIP: MACs rewritten, sent back out",
            frame(&tcp4("10.100.0.1", 80)),
            Action::Tx,
            env.dsr(&tcp4("10.100.0.1", 80)),
        ),
        fwd(
            "ipv6 tcp to dsr VIP (weighted backends)",
            frame(&tcp6("fd00:100::1", 80)),
            Action::Tx,
            env.dsr(&tcp6("fd00:100::1", 80)),
        ),
        fwd(
            "ipv4 tcp, any port, to all-ports VIP: IPv4-in-IPv4 via gateway",
            frame(&tcp4("10.100.0.2", 9999)),
            Action::Tx,
            ipip(&tcp4("10.100.0.2", 9999)),
        ),
        fwd(
            "ipv4 tcp to port 8080: the exact-port VIP wins over all-ports",
            frame(&tcp4("10.100.0.2", 8080)),
            Action::Tx,
            env.dsr(&tcp4("10.100.0.2", 8080)),
        ),
        fwd(
            "ipv4 udp to ipip VIP with IPv6 backends: IPv4-in-IPv6",
            frame(&Flow::udp("198.51.100.7", 5353, "10.100.0.1", 53)),
            Action::Tx,
            ipip(&Flow::udp("198.51.100.7", 5353, "10.100.0.1", 53)),
        ),
        fwd(
            "ipv6 tcp to ipip VIP: IPv6-in-IPv6, flow label from the hash",
            frame(&tcp6("fd00:100::2", 443)),
            Action::Tx,
            ipip(&tcp6("fd00:100::2", 443)),
        ),
        fwd(
            "ipv4 ipip: TOS copied to the outer header",
            frame(&tcp4("10.100.0.2", 22).tos(0xb8)),
            Action::Tx,
            ipip(&tcp4("10.100.0.2", 22).tos(0xb8)),
        ),
        fwd(
            "ipv6 ipip: traffic class copied to the outer header",
            frame(&tcp6("fd00:100::2", 443).tos(0x2e)),
            Action::Tx,
            ipip(&tcp6("fd00:100::2", 443).tos(0x2e)),
        ),
        fwd(
            "ipv4 dsr to a backend on another port: redirect",
            frame(&tcp4("10.100.0.4", 80)),
            Action::Redirect,
            env.dsr(&tcp4("10.100.0.4", 80)),
        ),
        fwd(
            "ipv6 ipip to a backend on another port: redirect",
            frame(&tcp6("fd00:100::4", 80)),
            Action::Redirect,
            ipip(&tcp6("fd00:100::4", 80)),
        ),
        fwd(
            "802.1Q-tagged ipv4 to dsr VIP: tag kept",
            frame(&tcp4("10.100.0.1", 80).vlan(42)),
            Action::Tx,
            env.dsr(&tcp4("10.100.0.1", 80).vlan(42)),
        ),
        fwd(
            "802.1Q-tagged ipv6 to ipip VIP: outer header after the tag",
            frame(&tcp6("fd00:100::2", 443).vlan(7)),
            Action::Tx,
            ipip(&tcp6("fd00:100::2", 443).vlan(7)),
        ),
        fwd(
            "ipv4 ipip to a 7-slot table",
            frame(&Flow::udp("198.51.100.9", 999, "10.100.0.11", 53)),
            Action::Tx,
            ipip(&Flow::udp("198.51.100.9", 999, "10.100.0.11", 53)),
        ),
        fwd(
            "ipv4 dsr at exactly the egress MTU",
            frame(&tcp4("10.100.0.1", 80).payload(1500 - 40)),
            Action::Tx,
            env.dsr(&tcp4("10.100.0.1", 80).payload(1500 - 40)),
        ),
        // Not for a VIP: passed untouched.
        left(
            "ipv4 tcp to a VIP address, other port",
            frame(&tcp4("10.100.0.1", 81)),
            Reason::NotVip,
        ),
        left(
            "ipv4 udp to a tcp VIP's address and port",
            frame(&Flow::udp("198.51.100.7", 1, "10.100.0.1", 80)),
            Reason::NotVip,
        ),
        left(
            "ipv6 udp to no VIP",
            frame(&Flow::udp("2001:db8:c::7", 1, "2001:db8::99", 53)),
            Reason::NotVip,
        ),
        // The first test reads addresses only: a flawed packet to no VIP is
        // the kernel's to judge; one to an address whose quick_filter bit
        // a VIP sets goes on (GRE: to the full path, where it is parsed
        // and its flaw found).
        left(
            "ipv4 to no VIP, total length beyond the frame: passed at the first test",
            ip_len_beyond_frame(frame(&tcp4("198.51.100.200", 80))),
            Reason::NotVip,
        ),
        left(
            "ipv4 GRE to no VIP sharing a VIP's quick bit, total length beyond the frame",
            ip_len_beyond_frame(gre(frame(&tcp4(&sharing_quick_bit("10.100.0.1"), 80)))),
            Reason::BadIpLen,
        ),
        left(
            "ipv6 to no VIP, payload length beyond the frame: passed at the first test",
            ip_len_beyond_frame(frame(&tcp6("2001:db8::99", 80))),
            Reason::NotVip,
        ),
        left(
            "ipv6 GRE to no VIP sharing a VIP's quick bit, payload length beyond the frame",
            ip_len_beyond_frame(gre(frame(&tcp6(&sharing_quick_bit("fd00:100::1"), 80)))),
            Reason::BadIpLen,
        ),
        // Its second stage reads the destination port of TCP and UDP to a
        // VIP's address: another port is no VIP's, flawed or not; a port
        // whose bit a VIP key sets is parsed.
        left(
            "ipv4 tcp to a VIP's address, another port: passed at the second stage",
            frame(&tcp4("10.100.0.1", other_port(env, "10.100.0.1", IPPROTO_TCP))),
            Reason::NotVip,
        ),
        left(
            "ipv4 tcp to a VIP's address, another port, total length beyond the frame",
            ip_len_beyond_frame(frame(&tcp4(
                "10.100.0.1",
                other_port(env, "10.100.0.1", IPPROTO_TCP),
            ))),
            Reason::NotVip,
        ),
        left(
            "ipv4 tcp to a VIP's address, a port sharing a VIP key's bit, total length beyond the frame",
            ip_len_beyond_frame(frame(&tcp4(
                "10.100.0.1",
                port_sharing_a_bit(env, "10.100.0.1", IPPROTO_TCP),
            ))),
            Reason::BadIpLen,
        ),
        left(
            "ipv4 tcp to a VIP's address, a port sharing a VIP key's bit: parsed, no VIP's",
            frame(&tcp4(
                "10.100.0.1",
                port_sharing_a_bit(env, "10.100.0.1", IPPROTO_TCP),
            )),
            Reason::NotVip,
        ),
        left(
            "ipv6 udp to a VIP's address, another port: passed at the second stage",
            frame(&Flow::udp(
                "2001:db8:c::7",
                1,
                "fd00:100::21",
                other_port(env, "fd00:100::21", IPPROTO_UDP),
            )),
            Reason::NotVip,
        ),
        left(
            "ipv6 tcp to a VIP's address, a port sharing a VIP key's bit, payload length beyond the frame",
            ip_len_beyond_frame(frame(&tcp6(
                "fd00:100::1",
                port_sharing_a_bit(env, "fd00:100::1", IPPROTO_TCP),
            ))),
            Reason::BadIpLen,
        ),
        left(
            "ipv4 fragment to a VIP's address, another port: the full path",
            edit(
                frame(&tcp4("10.100.0.1", other_port(env, "10.100.0.1", IPPROTO_TCP))),
                |f| {
                    f[14 + 7] = 0x10;
                    fix_ipv4_csum(&mut f[14..]);
                },
            ),
            Reason::Fragment,
        ),
        left(
            "ipv4 udp to an all-ports VIP's address, total length beyond the frame: parsed",
            ip_len_beyond_frame(frame(&Flow::udp("198.51.100.7", 4000, "10.100.0.22", 9999))),
            Reason::BadIpLen,
        ),
        left(
            "ipv4 with options to no VIP: the full path",
            ipv4_with_options(&frame(&tcp4("198.51.100.200", 80))),
            Reason::Ipv4Options,
        ),
        left(
            "ARP: not IP",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| {
                f[12..14].copy_from_slice(&[0x08, 0x06])
            }),
            Reason::NotIp,
        ),
        left(
            "LLDP EtherType 0x88cc: not IP",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| {
                f[12..14].copy_from_slice(&[0x88, 0xcc])
            }),
            Reason::NotIp,
        ),
        left(
            "two 802.1Q tags: only one is tolerated",
            edit(frame(&tcp4("10.100.0.1", 80).vlan(5)), |f| {
                f[16..18].copy_from_slice(&[0x81, 0x00])
            }),
            Reason::NotIp,
        ),
        left(
            "ipv4 ICMP to a VIP address: not TCP/UDP",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| {
                f[14 + 9] = 1;
                fix_ipv4_csum(&mut f[14..]);
            }),
            Reason::L4Proto,
        ),
        left(
            "ipv6 ICMPv6 to a VIP address: not TCP/UDP",
            edit(frame(&tcp6("fd00:100::1", 80)), |f| f[14 + 6] = 58),
            Reason::L4Proto,
        ),
        left(
            "ipv4 with options (IHL 6) to a VIP",
            ipv4_with_options(&frame(&tcp4("10.100.0.1", 80))),
            Reason::Ipv4Options,
        ),
        left(
            "ipv4 fragment, more-fragments set",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| {
                f[14 + 6] |= 0x20;
                fix_ipv4_csum(&mut f[14..]);
            }),
            Reason::Fragment,
        ),
        left(
            "ipv4 fragment, offset set",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| {
                f[14 + 7] = 0x10;
                fix_ipv4_csum(&mut f[14..]);
            }),
            Reason::Fragment,
        ),
        left(
            "ipv6 fragment header",
            edit(frame(&tcp6("fd00:100::1", 80)), |f| f[14 + 6] = 44),
            Reason::Fragment,
        ),
        left(
            "ipv6 hop-by-hop options header",
            edit(frame(&tcp6("fd00:100::1", 80)), |f| f[14 + 6] = 0),
            Reason::Ipv6Ext,
        ),
        left(
            "ipv6 routing header",
            edit(frame(&tcp6("fd00:100::1", 80)), |f| f[14 + 6] = 43),
            Reason::Ipv6Ext,
        ),
        left(
            "dsr backend without a resolved neighbour",
            frame(&tcp4("10.100.0.5", 80)),
            Reason::NoNeigh,
        ),
        // Dropped, with their reasons.
        left(
            "ipv4 ipip backend behind an unreachable route",
            frame(&tcp4("10.100.0.6", 80)),
            Reason::NoRoute,
        ),
        left(
            "ipv6 ipip backend behind an unreachable route",
            frame(&tcp6("fd00:100::6", 80)),
            Reason::NoRoute,
        ),
        left(
            "dsr backend behind a gateway: not adjacent",
            frame(&tcp4("10.100.0.7", 80)),
            Reason::NotAdjacent,
        ),
        left(
            "VIP without backends",
            frame(&tcp4("10.100.0.8", 80)),
            Reason::NoBackend,
        ),
        left(
            "VIP whose only backend has weight 0",
            frame(&tcp4("10.100.0.10", 80)),
            Reason::NoBackend,
        ),
        left(
            "backend behind a port that is not in tx_ports",
            frame(&tcp4("10.100.0.9", 80)),
            Reason::NoTxPort,
        ),
        fwd_as(
            "ipip would exceed the egress MTU: the client is told the MTU",
            frame(&tcp4("10.100.0.2", 80).payload(1500 - 40)),
            Reason::TooBig,
            too_big_answer(&frame(&tcp4("10.100.0.2", 80).payload(1500 - 40)), 14, 1480),
        ),
        left(
            "802.1Q tag cut short",
            frame(&tcp4("10.100.0.1", 80).vlan(1))[..16].to_vec(),
            Reason::TruncVlan,
        ),
        left(
            "ipv4 header cut short",
            frame(&tcp4("10.100.0.1", 80))[..14 + 19].to_vec(),
            Reason::TruncIp,
        ),
        left(
            "ipv6 header cut short",
            frame(&tcp6("fd00:100::1", 80))[..14 + 39].to_vec(),
            Reason::TruncIp,
        ),
        left(
            "ipv4 EtherType carrying version 6",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| f[14] = 0x65),
            Reason::BadIpVersion,
        ),
        left(
            "ipv6 EtherType carrying version 4",
            edit(frame(&tcp6("fd00:100::1", 80)), |f| f[14] = 0x40),
            Reason::BadIpVersion,
        ),
        left(
            "ipv4 IHL 4",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| f[14] = 0x44),
            Reason::BadIhl,
        ),
        left(
            "ipv4 total length beyond the frame",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| {
                let n = (f.len() - 14 + 1) as u16;
                f[16..18].copy_from_slice(&n.to_be_bytes());
            }),
            Reason::BadIpLen,
        ),
        left(
            "ipv4 total length below the header",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| {
                f[16..18].copy_from_slice(&19u16.to_be_bytes())
            }),
            Reason::BadIpLen,
        ),
        left(
            "ipv6 payload length beyond the frame",
            edit(frame(&tcp6("fd00:100::1", 80)), |f| {
                let n = (f.len() - 54 + 1) as u16;
                f[18..20].copy_from_slice(&n.to_be_bytes());
            }),
            Reason::BadIpLen,
        ),
        left(
            "tcp header cut short by the IP length",
            edit(frame(&tcp4("10.100.0.1", 80)), |f| {
                f[16..18].copy_from_slice(&39u16.to_be_bytes());
                fix_ipv4_csum(&mut f[14..]);
            }),
            Reason::TruncL4,
        ),
        left(
            "udp header cut short by the frame",
            Flow::udp("198.51.100.7", 1, "10.100.0.1", 53).frame(m)[..14 + 20 + 7].to_vec(),
            Reason::BadIpLen,
        ),
        left(
            "ipv6 udp header cut short by the payload length",
            edit(
                frame(&Flow::udp("2001:db8:c::7", 1, "fd00:100::21", 53)),
                |f| f[18..20].copy_from_slice(&7u16.to_be_bytes()),
            ),
            Reason::TruncL4,
        ),
    ];
    // gue.
    let gue = |f: &Flow| env.gue(f, &f.frame(m));
    let udp0 = |f: &Flow| {
        let mut x = f.frame(m);
        zero_udp_checksum(&mut x);
        x
    };
    let g4 = tcp4("10.100.0.30", 80);
    let g6 = tcp6("fd00:100::30", 443).tos(0x2e);
    let g46 = Flow::udp("198.51.100.7", 5353, "10.100.0.31", 53);
    let g6u = Flow::udp("2001:db8:c::7", 5353, "fd00:100::31", 53).payload(333);
    let mut g46_nocsum = g46.frame(m);
    zero_udp_checksum(&mut g46_nocsum);
    // 4 bytes after the UDP datagram, inside the IPv6 payload (a UDP
    // options surplus area): the inner checksum does not cover them, so
    // the outer one cannot come from the headers: 0.
    let surplus = |f: &Flow| {
        let mut x = f.frame(m);
        let n = u16::from_be_bytes([x[18], x[19]]) + 4;
        x[18..20].copy_from_slice(&n.to_be_bytes());
        x.extend_from_slice(&[1, 2, 3, 4]);
        x
    };
    let g6_surplus = surplus(&g6u);
    let mut g6_surplus_out = env.gue(&g6u, &g6_surplus);
    // Outer Ethernet 14, IPv6 40, then the UDP checksum at 6.
    g6_surplus_out[14 + 40 + 6..14 + 40 + 8].fill(0);
    v.extend([
        fwd(
            "ipv4 tcp to gue VIP: IPv4/UDP to port 6081, checksum 0",
            frame(&g4),
            Action::Tx,
            gue(&g4),
        ),
        fwd(
            "ipv6 tcp to gue VIP: IPv6/UDP, checksum from the inner headers",
            frame(&g6),
            Action::Tx,
            gue(&g6),
        ),
        fwd(
            "ipv4 udp to gue VIP with IPv6 backends",
            frame(&g46),
            Action::Tx,
            gue(&g46),
        ),
        fwd(
            "ipv4 udp without checksum in IPv6 gue: outer checksum 0",
            g46_nocsum.clone(),
            Action::Tx,
            env.gue(&g46, &g46_nocsum),
        ),
        fwd(
            "ipv6 udp to gue VIP on another port: redirect",
            frame(&g6u),
            Action::Redirect,
            gue(&g6u),
        ),
        fwd(
            "ipv6 udp without checksum (a tunnel's) in IPv6 gue: outer checksum 0",
            udp0(&g6u),
            Action::Redirect,
            env.gue(&g6u, &udp0(&g6u)),
        ),
        fwd(
            "ipv6 udp shorter than its payload in IPv6 gue: outer checksum 0",
            g6_surplus,
            Action::Redirect,
            g6_surplus_out,
        ),
        fwd_as(
            "gue would exceed the egress MTU: the client is told the MTU",
            frame(&tcp4("10.100.0.30", 80).payload(1500 - 40 - 20)),
            Reason::TooBig,
            too_big_answer(
                &frame(&tcp4("10.100.0.30", 80).payload(1500 - 40 - 20)),
                14,
                1472,
            ),
        ),
    ]);

    // nat, both ways.
    let n4 = tcp4("10.100.0.20", 80);
    let n6 = tcp6("fd00:100::20", 443);
    let nu4 = Flow::udp("198.51.100.7", 5300, "10.100.0.21", 53);
    let nu6 = Flow::udp("2001:db8:c::7", 5300, "fd00:100::21", 53);
    let nall = Flow::udp("198.51.100.7", 4000, "10.100.0.22", 9999);
    v.extend([
        fwd(
            "ipv4 tcp to nat VIP: destination and port rewritten, checksums updated",
            frame(&n4),
            Action::Tx,
            env.nat_in(&n4, false),
        ),
        fwd(
            "ipv6 tcp to nat VIP: destination and port rewritten",
            frame(&n6),
            Action::Tx,
            env.nat_in(&n6, false),
        ),
        fwd(
            "ipv4 udp to nat VIP, port mapped",
            frame(&nu4),
            Action::Tx,
            env.nat_in(&nu4, false),
        ),
        fwd(
            "ipv4 udp without checksum to nat VIP: stays without",
            udp0(&nu4),
            Action::Tx,
            env.nat_in(&nu4, true),
        ),
        fwd(
            "ipv6 udp to nat VIP",
            frame(&nu6),
            Action::Tx,
            env.nat_in(&nu6, false),
        ),
        fwd(
            "ipv6 udp without checksum (a tunnel's) to nat VIP: stays without",
            udp0(&nu6),
            Action::Tx,
            env.nat_in(&nu6, true),
        ),
        fwd(
            "udp to an every-port nat VIP: port kept, redirected",
            frame(&nall),
            Action::Redirect,
            env.nat_in(&nall, false),
        ),
        left(
            "nat backend behind an unreachable route",
            frame(&tcp4("10.100.0.23", 80)),
            Reason::NoRoute,
        ),
        fwd_as(
            "nat backend without a resolved neighbour: rewritten, passed to the kernel",
            frame(&tcp4("10.100.0.24", 80)),
            Reason::NoNeigh,
            env.kept_macs(
                env.nat_in(&tcp4("10.100.0.24", 80), false),
                &frame(&tcp4("10.100.0.24", 80)),
            ),
        ),
        fwd_as(
            "nat backend without a resolved neighbour, ipv6",
            frame(&tcp6("fd00:100::24", 80)),
            Reason::NoNeigh,
            env.kept_macs(
                env.nat_in(&tcp6("fd00:100::24", 80), false),
                &frame(&tcp6("fd00:100::24", 80)),
            ),
        ),
    ]);
    let back4 = Flow::tcp("10.1.0.11", 8080, "198.51.100.7", 40_001);
    let back6 = Flow::tcp("fd00:1::11", 8443, "2001:db8:c::7", 40_001);
    let backu4 = Flow::udp("10.1.0.13", 5353, "198.51.100.7", 5300);
    let backu6 = Flow::udp("fd00:1::13", 5353, "2001:db8:c::7", 5300);
    let backall = Flow::udp("10.2.0.11", 9999, "198.51.100.7", 4000);
    // One byte over the client path's MTU.
    let big_back = Flow::udp("10.1.0.13", 5353, "198.51.100.7", 5301).payload(1500 - 28 + 1);
    let clear_df = |mut f: Vec<u8>| {
        f[14 + 6] &= !0x40;
        fix_ipv4_csum(&mut f[14..]);
        f
    };
    v.extend([
        fwd(
            "nat return: the backend's reply leaves from the VIP",
            frame(&back4),
            Action::Tx,
            env.nat_back(&back4, "10.100.0.20", 80, false),
        ),
        fwd(
            "nat return, ipv6",
            frame(&back6),
            Action::Tx,
            env.nat_back(&back6, "fd00:100::20", 443, false),
        ),
        fwd(
            "nat return, udp with the port mapped back",
            frame(&backu4),
            Action::Tx,
            env.nat_back(&backu4, "10.100.0.21", 53, false),
        ),
        fwd(
            "nat return, udp without checksum",
            udp0(&backu4),
            Action::Tx,
            env.nat_back(&backu4, "10.100.0.21", 53, true),
        ),
        fwd(
            "nat return, ipv6 udp without checksum (a tunnel's)",
            udp0(&backu6),
            Action::Tx,
            env.nat_back(&backu6, "fd00:100::21", 53, true),
        ),
        fwd(
            "nat return of an every-port VIP: address only",
            frame(&backall),
            Action::Tx,
            env.nat_back(&backall, "10.100.0.22", 0, false),
        ),
        left(
            "a backend's traffic from another port: not a VIP's",
            frame(&Flow::tcp("10.1.0.11", 9999, "198.51.100.7", 1)),
            Reason::NotVip,
        ),
        left(
            "a nat backend's answer to this host (a health check): the kernel's",
            frame(&Flow::tcp("10.1.0.11", 8080, "10.1.0.1", 33_000)),
            Reason::ReturnPassed,
        ),
        fwd_as(
            "nat return towards an unresolved next hop: rewritten, passed to the kernel",
            frame(&Flow::tcp("10.1.0.11", 8080, "10.1.0.99", 40_002)),
            Reason::NoNeigh,
            env.kept_macs(
                env.nat_back(
                    &Flow::tcp("10.1.0.11", 8080, "10.1.0.99", 40_002),
                    "10.100.0.20",
                    80,
                    false,
                ),
                &frame(&Flow::tcp("10.1.0.11", 8080, "10.1.0.99", 40_002)),
            ),
        ),
        left(
            "nat return towards a client without a route",
            frame(&Flow::tcp("10.1.0.11", 8080, "203.0.113.9", 1)),
            Reason::ReturnPassed,
        ),
        fwd_as(
            "nat return too big for the client's path, no DF: rewritten, passed to fragment",
            clear_df(frame(&big_back)),
            Reason::ReturnPassed,
            clear_df(env.kept_macs(
                env.nat_back(&big_back, "10.100.0.21", 53, false),
                &frame(&big_back),
            )),
        ),
        left(
            "nat return too big for the client's path, DF set: the kernel's (it tells the backend)",
            frame(&big_back),
            Reason::ReturnPassed,
        ),
    ]);

    // Too big for the path: answered, or not.
    let big = |f: Flow| f.frame(m);
    let mut no_df = big(tcp4("10.100.0.2", 80).payload(1500 - 40));
    no_df[14 + 6] = 0;
    fix_ipv4_csum(&mut no_df[14..]);
    let dsr_big = big(tcp4("10.100.0.1", 80).payload(1500 - 40 + 1));
    let dsr6_big = big(tcp6("fd00:100::1", 80).payload(1500 - 60 + 1));
    let gue6_big = big(tcp6("fd00:100::30", 443).payload(1400));
    let tagged_big = big(tcp4("10.100.0.2", 80).payload(1500 - 40).vlan(9));
    let narrow6_big = big(tcp6("fd00:100::32", 80).payload(1300 - 60));
    v.extend([
        fwd_as(
            "dsr over the egress MTU: the client is told it",
            dsr_big.clone(),
            Reason::TooBig,
            too_big_answer(&dsr_big, 14, 1500),
        ),
        fwd_as(
            "ipv6 dsr over the egress MTU: packet-too-big",
            dsr6_big.clone(),
            Reason::TooBig,
            too_big_answer(&dsr6_big, 14, 1500),
        ),
        fwd_as(
            "ipv6 gue over the egress MTU: packet-too-big with the MTU less 48",
            gue6_big.clone(),
            Reason::TooBig,
            too_big_answer(&gue6_big, 14, 1452),
        ),
        fwd_as(
            "802.1Q-tagged, too big for ipip: answered on the tag",
            tagged_big.clone(),
            Reason::TooBig,
            too_big_answer(&tagged_big, 18, 1480),
        ),
        left(
            "too big without DF: dropped, nothing to answer",
            no_df,
            Reason::FragNeeded,
        ),
        // narrow6: 6in6 over a 1300-byte path, 1260 usable, under IPv6's
        // 1280: told 1280 if larger, dropped if 1280 or less (a client
        // told 1280 again and again would never get through).
        fwd(
            "ipv6 ipip on a path under 1280 once encapsulated: what fits goes",
            big(tcp6("fd00:100::32", 80).payload(1260 - 60)),
            Action::Tx,
            ipip(&tcp6("fd00:100::32", 80).payload(1260 - 60)),
        ),
        fwd_as(
            "ipv6 ipip on a path under 1280 once encapsulated: over 1280 is told 1280",
            narrow6_big.clone(),
            Reason::TooBig,
            too_big_answer(&narrow6_big, 14, 1280),
        ),
        left(
            "ipv6 ipip on a path under 1280 once encapsulated: 1280 itself is dropped",
            big(tcp6("fd00:100::32", 80).payload(1280 - 60)),
            Reason::FragNeeded,
        ),
    ]);

    // ICMP errors about VIP flows go to the flow's backend, in every mode.
    let (router4, router6) = ("10.1.0.254", "fd00:1::fe");
    let cmac = common::packets::CLIENT_MAC;
    let err = |router: &str, to: &str, q: &[u8]| icmp_error(cmac, m, router, to, q, 1400);
    let client_flow = |vip: &str, port: u16| {
        if vip.contains(':') {
            Flow::tcp("2001:db8:c::7", 40_001, vip, port)
        } else {
            Flow::tcp("198.51.100.7", 40_001, vip, port)
        }
    };
    let reply = |vip: &str, port: u16| {
        if vip.contains(':') {
            Flow::tcp(vip, port, "2001:db8:c::7", 40_001).payload(100)
        } else {
            Flow::tcp(vip, port, "198.51.100.7", 40_001).payload(100)
        }
    };
    let routed = |f: &Flow, input: &[u8]| {
        let (smac, dmac) = env.macs_for(env.pick(f).backend);
        let mut out = input.to_vec();
        out[0..6].copy_from_slice(&dmac);
        out[6..12].copy_from_slice(&smac);
        out
    };
    let e_dsr = err(router4, "10.100.0.1", &quote(&reply("10.100.0.1", 80), 28));
    let e_dsr6 = err(
        router6,
        "fd00:100::1",
        &quote(&reply("fd00:100::1", 80), 48),
    );
    let e_ipip = err(
        router4,
        "10.100.0.2",
        &quote(&reply("10.100.0.2", 9999), 48),
    );
    let e_gue6 = err(
        router6,
        "fd00:100::30",
        &quote(&reply("fd00:100::30", 443), 100),
    );
    v.extend([
        fwd(
            "ICMP frag-needed about a dsr flow: to the flow's backend",
            e_dsr.clone(),
            Action::Tx,
            routed(&client_flow("10.100.0.1", 80), &e_dsr),
        ),
        fwd(
            "ICMPv6 packet-too-big about a dsr flow",
            e_dsr6.clone(),
            Action::Tx,
            routed(&client_flow("fd00:100::1", 80), &e_dsr6),
        ),
        fwd(
            "ICMP error about an all-ports ipip flow: encapsulated to its backend",
            e_ipip.clone(),
            Action::Tx,
            env.ipip(&client_flow("10.100.0.2", 9999), &e_ipip),
        ),
        fwd(
            "ICMPv6 error about a gue flow: in GUE, checksum over ICMPv6",
            e_gue6.clone(),
            Action::Tx,
            env.gue(&client_flow("fd00:100::30", 443), &e_gue6),
        ),
        // An error goes to the sender of what it quotes: one addressed
        // elsewhere (here this host) is not the flow's.
        left(
            "ICMP error to this host quoting a dsr VIP's packet: passed",
            err(router4, "10.1.0.1", &quote(&reply("10.100.0.1", 80), 28)),
            Reason::IcmpInner,
        ),
        left(
            "ICMPv6 error to this host quoting a VIP's packet: passed",
            err(router6, "fd00:1::1", &quote(&reply("fd00:100::1", 80), 48)),
            Reason::IcmpInner,
        ),
        // A nat backend's error about a client's packet, sent to another
        // host than that client.
        left(
            "nat backend's ICMP error to another host than the client: passed",
            err(
                "10.1.0.13",
                "198.51.100.99",
                &quote(
                    &Flow::udp("198.51.100.7", 5300, "10.1.0.13", 5353).payload(20),
                    28,
                ),
            ),
            Reason::IcmpInner,
        ),
    ]);
    // nat: the error must reach the backend about the packet the backend
    // really sent (its own address and port), every checksum matching.
    // The backend a client flow of a nat VIP gets, and its port.
    let nat_backend = |cf: &Flow| {
        let backend = env.pick(cf).backend;
        let planned = env
            .plan
            .vips
            .iter()
            .find(|v| v.vip.address == cf.dst)
            .unwrap();
        let bport = planned
            .vip
            .backends
            .iter()
            .find(|b| b.address == backend)
            .map(|b| planned.vip.backend_port(b))
            .unwrap();
        (backend, bport)
    };
    let nat_err = |vip: &str, vport: u16, quote_len: usize, udp: bool| {
        let router = if vip.contains(':') { router6 } else { router4 };
        let mut cf = client_flow(vip, vport);
        let mut rf = reply(vip, vport);
        cf.udp = udp;
        rf.udp = udp;
        let (backend, bport) = nat_backend(&cf);
        let mut sent = rf.clone();
        sent.src = backend;
        sent.sport = bport;
        let input = err(router, vip, &quote(&rf, quote_len));
        let mut want = icmp_error(
            cmac,
            m,
            router,
            &backend.to_string(),
            &quote(&sent, quote_len),
            1400,
        );
        let (smac, dmac) = env.macs_for(backend);
        want[0..6].copy_from_slice(&dmac);
        want[6..12].copy_from_slice(&smac);
        (input, want)
    };
    let (n1, w1) = nat_err("10.100.0.20", 80, 48, false);
    let (n2, w2) = nat_err("10.100.0.21", 53, 28, true);
    let (n3, w3) = nat_err("fd00:100::20", 443, 68, false);
    let (n4, w4) = nat_err("10.100.0.20", 80, 28, false);
    v.extend([
        fwd(
            "ICMP error about a nat flow, TCP header quoted: all checksums follow",
            n1,
            Action::Tx,
            w1,
        ),
        fwd("ICMP error about a nat udp flow", n2, Action::Tx, w2),
        fwd("ICMPv6 error about a nat flow", n3, Action::Tx, w3),
        fwd(
            "ICMP error about a nat flow quoting 8 bytes of TCP",
            n4,
            Action::Tx,
            w4,
        ),
    ]);
    // nat, the other way: an error to a client about a packet a backend
    // received (client -> backend:port) must reach the client about the
    // packet the client sent (client -> VIP:port): from the VIP when the
    // backend itself sent it; a router's own address is kept.
    let nat_return_err = |vip: &str, vport: u16, quote_len: usize, udp: bool, by_backend: bool| {
        let mut cf = client_flow(vip, vport);
        cf.udp = udp;
        let (backend, bport) = nat_backend(&cf);
        let mut got = cf.clone();
        got.dst = backend;
        got.dport = bport;
        let router = if vip.contains(':') { router6 } else { router4 };
        let origin = if by_backend {
            backend.to_string()
        } else {
            router.to_string()
        };
        let client = cf.src.to_string();
        let input = icmp_error(cmac, m, &origin, &client, &quote(&got, quote_len), 1400);
        let from = if by_backend { vip } else { &origin };
        let mut want = icmp_error(cmac, m, from, &client, &quote(&cf, quote_len), 1400);
        let (smac, dmac) = env.macs_for(cf.src);
        want[0..6].copy_from_slice(&dmac);
        want[6..12].copy_from_slice(&smac);
        (input, want)
    };
    let (r1, x1) = nat_return_err("10.100.0.20", 80, 48, false, true);
    let (r2, x2) = nat_return_err("10.100.0.21", 53, 28, true, true);
    let (r3, x3) = nat_return_err("fd00:100::20", 443, 68, false, true);
    let (r4, x4) = nat_return_err("10.100.0.20", 80, 28, false, false);
    let (r5, x5) = nat_return_err("fd00:100::21", 53, 48, true, false);
    v.extend([
        fwd(
            "nat backend's ICMP error to a client: from the VIP, about the client's packet",
            r1,
            Action::Tx,
            x1,
        ),
        fwd(
            "nat backend's ICMP error about a udp packet",
            r2,
            Action::Tx,
            x2,
        ),
        fwd("nat backend's ICMPv6 error to a client", r3, Action::Tx, x3),
        fwd(
            "router's ICMP error about a packet to a nat backend: the router stays the source",
            r4,
            Action::Tx,
            x4,
        ),
        fwd(
            "router's ICMPv6 error about a udp packet to a nat backend",
            r5,
            Action::Tx,
            x5,
        ),
    ]);
    let mut inner_icmp = quote(&reply("10.100.0.1", 80), 28);
    inner_icmp[9] = 1;
    fix_ipv4_csum(&mut inner_icmp);
    let echo = edit(
        err(router4, "10.100.0.1", &quote(&reply("10.100.0.1", 80), 28)),
        |f| {
            f[34] = 8;
            f[35] = 0;
        },
    );
    let time_exceeded = edit(
        err(router4, "10.100.0.1", &quote(&reply("10.100.0.1", 80), 28)),
        |f| f[34] = 11,
    );
    v.extend([
        left(
            "ICMP echo request to a VIP: not routed",
            echo,
            Reason::L4Proto,
        ),
        left(
            "ICMP time-exceeded: not routed",
            time_exceeded,
            Reason::L4Proto,
        ),
        left(
            "ICMP error about an ICMP packet",
            err(router4, "10.100.0.1", &inner_icmp),
            Reason::IcmpInner,
        ),
        left(
            "ICMP error quoting too little",
            err(router4, "10.100.0.1", &quote(&reply("10.100.0.1", 80), 20)),
            Reason::IcmpInner,
        ),
        left(
            "ICMP echo to no VIP: ICMP always takes the full path",
            edit(
                err(
                    router4,
                    "198.51.100.200",
                    &quote(&reply("10.100.0.1", 80), 28),
                ),
                |f| f[34] = 8,
            ),
            Reason::L4Proto,
        ),
        left(
            "ICMP error about a flow of no VIP",
            err(router4, "10.100.0.1", &quote(&reply("10.100.0.1", 81), 28)),
            Reason::NotVip,
        ),
        left(
            "ICMP error too big to forward: no ICMP about ICMP",
            err(
                router4,
                "10.100.0.2",
                &quote(&reply("10.100.0.2", 9999).payload(1500), 1500 - 28),
            ),
            Reason::FragNeeded,
        ),
    ]);

    // A minimal frame padded to Ethernet's 60 bytes: the IP length, not
    // the frame length, defines the inner packet; the padding follows it.
    let small = Flow::udp("198.51.100.7", 7, "10.100.0.1", 53).payload(0);
    let mut padded = frame(&small);
    padded.resize(60, 0);
    let expected = env.ipip(&small, &padded);
    v.push(fwd(
        "ipv4 udp padded to 60 bytes, to ipip VIP: padding kept",
        padded,
        Action::Tx,
        expected,
    ));
    v
}

/// An ICMP error from `router` to `to` quoting `quote` (an invoking
/// packet's first bytes): IPv4 fragmentation-needed or ICMPv6
/// packet-too-big with `mtu`, built by etherparse.
/// The frame with its IP length (IPv4 total, IPv6 payload) one byte more
/// than the frame holds.
fn ip_len_beyond_frame(mut f: Vec<u8>) -> Vec<u8> {
    let (at, counted_from) = if f[12..14] == [0x86, 0xdd] {
        (18, 54)
    } else {
        (16, 14)
    };
    let n = (f.len() - counted_from + 1) as u16;
    f[at..at + 2].copy_from_slice(&n.to_be_bytes());
    f
}

/// The frame as GRE (protocol 47), which the first test leaves to the
/// full path wherever it goes; the IPv4 checksum is not fixed (lengths are
/// checked before it is).
fn gre(f: Vec<u8>) -> Vec<u8> {
    edit(f, |f| {
        let at = if f[12..14] == [0x86, 0xdd] {
            14 + 6
        } else {
            14 + 9
        };
        f[at] = 47;
    })
}

/// A port of `vip`'s address whose port bit (lethe::quick_filter) is clear
/// for `proto`: its packets leave at the first test's second stage.
fn other_port(env: &Env, vip: &str, proto: u8) -> u16 {
    assert_second_stage(env, vip);
    (1024..=u16::MAX)
        .find(|&p| env.plan.quick.port_passes(&ip(vip), p, proto))
        .expect("a port whose bit is clear")
}

/// The premise of the second stage's fixtures: from the fixtures' clients,
/// packets to `vip`'s address reach it (no all-ports mark there).
fn assert_second_stage(env: &Env, vip: &str) {
    for client in ["198.51.100.7", "2001:db8:c::7"] {
        if ip(client).is_ipv4() == ip(vip).is_ipv4() {
            assert!(
                env.plan.quick.second_stage(&ip(client), &ip(vip)),
                "{client} -> {vip}"
            );
        }
    }
}

/// A port of `vip`'s address that is no VIP's but whose port bit a VIP key
/// sets: its packets take the full path, and prove the program computes
/// the port bit the control plane sets.
fn port_sharing_a_bit(env: &Env, vip: &str, proto: u8) -> u16 {
    let vip_ports: Vec<u16> = env
        .plan
        .vips
        .iter()
        .map(|v| v.key())
        .filter(|k| k.address == ip(vip) && k.protocol.number() == proto)
        .map(|k| k.port)
        .collect();
    assert!(
        !vip_ports.contains(&0),
        "an all-ports VIP: every port is its"
    );
    assert_second_stage(env, vip);
    (1024..=u16::MAX)
        .find(|&p| !vip_ports.contains(&p) && !env.plan.quick.port_passes(&ip(vip), p, proto))
        .expect("some port shares a bit")
}

/// An address of no VIP whose quick_filter bit (lethe::quick_filter) is
/// `vip`'s: its packets take the full path, and prove the program computes
/// the bit the control plane sets.
fn sharing_quick_bit(vip: &str) -> String {
    use lethe::quick_filter::quick_bit;
    let want = quick_bit(&ip(vip));
    let found = match ip(vip) {
        // 100.64.0.0/10: 2^22 addresses, each bit ~64 times.
        IpAddr::V4(_) => (0u32..1 << 22)
            .map(|i| IpAddr::V4((0x6440_0000 + i).into()))
            .find(|a| quick_bit(a) == want),
        IpAddr::V6(_) => (0u128..1 << 22)
            .map(|i| IpAddr::V6((0x2001_0db8_000d_u128 << 80 | i).into()))
            .find(|a| quick_bit(a) == want),
    };
    found.expect("some address shares the bit").to_string()
}

fn icmp_error(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    router: &str,
    to: &str,
    quote: &[u8],
    mtu: u16,
) -> Vec<u8> {
    let eth = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut out = Vec::new();
    match (ip(router), ip(to)) {
        (IpAddr::V4(r), IpAddr::V4(t)) => eth
            .ipv4(r.octets(), t.octets(), 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: mtu,
                },
            ))
            .write(&mut out, quote)
            .unwrap(),
        (IpAddr::V6(r), IpAddr::V6(t)) => eth
            .ipv6(r.octets(), t.octets(), 64)
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig {
                mtu: u32::from(mtu),
            })
            .write(&mut out, quote)
            .unwrap(),
        _ => unreachable!(),
    }
    out
}

/// The first `n` bytes of a flow's IP packet: what an ICMP error quotes.
fn quote(f: &Flow, n: usize) -> Vec<u8> {
    f.frame([0; 6])[14..14 + n].to_vec()
}

/// The answer the program must give a too-big packet: built by etherparse,
/// from the VIP to the client, back to the router's MAC, quoting the IP
/// header and 8 bytes; IPv4 without DF.
fn too_big_answer(input: &[u8], l3: usize, mtu: u32) -> Vec<u8> {
    let v4 = input[l3] >> 4 == 4;
    let hl = if v4 { 20 } else { 40 };
    let q = &input[l3..l3 + hl + 8];
    let mut src_mac = [0u8; 6];
    let mut dst_mac = [0u8; 6];
    src_mac.copy_from_slice(&input[0..6]);
    dst_mac.copy_from_slice(&input[6..12]);
    let (from, to) = if v4 {
        (
            IpAddr::from([q[16], q[17], q[18], q[19]]).to_string(),
            IpAddr::from([q[12], q[13], q[14], q[15]]).to_string(),
        )
    } else {
        let a = |at: usize| {
            let mut x = [0u8; 16];
            x.copy_from_slice(&q[at..at + 16]);
            IpAddr::from(x).to_string()
        };
        (a(24), a(8))
    };
    let mut out = if v4 {
        let mut f = icmp_error(src_mac, dst_mac, &from, &to, q, mtu as u16);
        f[14 + 6] = 0; // no DF on the answer
        fix_ipv4_csum(&mut f[14..]);
        f
    } else {
        let eth = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac);
        let mut f = Vec::new();
        eth.ipv6(
            ip(&from)
                .to_string()
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            ip(&to)
                .to_string()
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            64,
        )
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu })
        .write(&mut f, q)
        .unwrap();
        f
    };
    if l3 == 18 {
        out.splice(12..12, input[12..16].iter().copied());
    }
    out
}

/// A UDP frame's checksum set to 0: "no checksum" (over IPv6, only
/// tunnels' receivers accept it: RFC 6935).
fn zero_udp_checksum(frame: &mut [u8]) {
    let l4 = if frame[12..14] == [0x86, 0xdd] {
        assert_eq!(frame[14 + 6], 17);
        14 + 40
    } else {
        assert_eq!(frame[14 + 9], 17);
        14 + 20
    };
    frame[l4 + 6] = 0;
    frame[l4 + 7] = 0;
}

/// Whether a frame is IPv6 UDP with checksum 0.
fn udp6_without_checksum(frame: &[u8]) -> bool {
    frame[12..14] == [0x86, 0xdd]
        && frame[14 + 6] == 17
        && frame[14 + 40 + 6..14 + 40 + 8] == [0, 0]
}

/// The frame with a 4-byte IPv4 option (NOP x4) inserted, lengths and
/// checksum fixed: a valid packet Lethe does not balance.
fn ipv4_with_options(frame: &[u8]) -> Vec<u8> {
    let mut out = frame[..34].to_vec();
    out.extend_from_slice(&[1, 1, 1, 1]);
    out.extend_from_slice(&frame[34..]);
    out[14] = 0x46;
    let tot = u16::from_be_bytes([out[16], out[17]]) + 4;
    out[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_csum(&mut out[14..]);
    out
}

fn counters(dp: &Dataplane) -> Vec<(Reason, Counter)> {
    dp.reason_counters().expect("read reason counters")
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn packet_fixtures() {
    in_new_netns(|| {
        let topo = Topology::create();
        let plan = Plan::new(&fixture_config()).expect("valid config");
        let dp = Dataplane::load().expect("load XDP program");
        dp.allow_tx_port(topo.ifindex("lt2")).unwrap();
        dp.apply(&plan).expect("apply plan");
        let env = Env {
            ingress: topo.ifindex("lt0"),
            lb_mac: topo.iface_mac("lt0"),
            topo,
            plan,
        };

        let table = fixtures(&env);
        println!(
            "\n{:<66} {:<9} {:<14} checksums",
            "fixture", "verdict", "reason"
        );
        let mut failures = Vec::new();
        for fx in &table {
            let before = counters(&dp);
            let run = dp.test_run(&fx.input, env.ingress).expect("test_run");
            let after = counters(&dp);
            let moved: Vec<(Reason, Counter)> = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| b.1 != a.1)
                .map(|(b, a)| {
                    (
                        a.0,
                        Counter {
                            packets: a.1.packets - b.1.packets,
                            bytes: a.1.bytes - b.1.bytes,
                        },
                    )
                })
                .collect();
            let expected_frame = match &fx.output {
                Expect::Untouched => &fx.input,
                Expect::Frame(f) => f,
            };
            let modelled =
                model::process(&env.plan, &env.topo as &dyn Network, env.ingress, &fx.input);
            let mut problems = Vec::new();
            if run.action != Some(fx.action) {
                problems.push(format!(
                    "verdict {:?} (raw {}), want {}",
                    run.action, run.retval, fx.action
                ));
            }
            if moved
                != vec![(
                    fx.reason,
                    Counter {
                        packets: 1,
                        bytes: fx.input.len() as u64,
                    },
                )]
            {
                problems.push(format!(
                    "counted {moved:?}, want one {} of {} bytes",
                    fx.reason,
                    fx.input.len()
                ));
            }
            if run.frame != *expected_frame {
                problems.push(format!(
                    "frame differs:\n  got  {:02x?}\n  want {:02x?}",
                    run.frame, expected_frame
                ));
            }
            if (modelled.action, modelled.reason) != (fx.action, fx.reason)
                || modelled.frame != *expected_frame
            {
                problems.push(format!(
                    "model disagrees: {} {}",
                    modelled.action, modelled.reason
                ));
            }
            // The kernel's own decision record (BPF_PROG_TEST_RUN metadata).
            let traced = dp.trace(&fx.input, env.ingress).expect("trace");
            let model_vip = modelled.vip.map(|i| env.plan.vips[i].key());
            if traced.reason != Some(fx.reason)
                || traced.vip != model_vip
                || traced.backend != modelled.backend
            {
                problems.push(format!(
                    "trace says {:?} vip {:?} backend {:?}; model vip {:?} backend {:?}",
                    traced.reason, traced.vip, traced.backend, model_vip, modelled.backend
                ));
            }
            if traced.frame != run.frame {
                problems.push("traced frame differs from the plain run".into());
            }
            let sums = if udp6_without_checksum(&fx.input) && udp6_without_checksum(&run.frame) {
                // Not a checksum to verify: a tunnel's "none", kept.
                "ipv6, udp (no checksum, as it came)".to_string()
            } else if matches!(fx.action, Action::Tx | Action::Redirect) {
                match check_frame(&run.frame) {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push(e.clone());
                        e
                    }
                }
            } else {
                "-".to_string()
            };
            println!(
                "{} {:<64} {:<9} {:<14} {}",
                if problems.is_empty() { "ok" } else { "NO" },
                fx.name,
                fx.action.name(),
                fx.reason.name(),
                sums
            );
            if !problems.is_empty() {
                failures.push(format!("{}: {}", fx.name, problems.join("; ")));
            }
        }
        println!("{} fixtures, {} failed", table.len(), failures.len());
        assert!(
            failures.is_empty(),
            "fixture failures:\n{}",
            failures.join("\n")
        );
    });
}

/// Frames shorter than an Ethernet header never reach XDP: drivers drop
/// runts, and BPF_PROG_TEST_RUN refuses them. The program still checks
/// (the verifier insists) and the model says what it would do.
#[test]
#[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
fn runt_frames_are_refused_before_the_program() {
    let dp = Dataplane::load().expect("load");
    let err = dp.test_run(&[0u8; 13], 0).expect_err("13-byte frame");
    match err {
        lethe::dataplane::DataplaneError::TestRun(e) => {
            assert!(e.to_string().contains("Invalid argument"), "{e}")
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let plan = Plan::new(&fixture_config()).unwrap();
    struct NoNet;
    impl Network for NoNet {
        fn route(&self, _: &model::FibQuery) -> model::Fib {
            model::Fib::NoRoute
        }
        fn tx_port(&self, _: u32) -> bool {
            false
        }
    }
    let out = model::process(&plan, &NoNet, 1, &[0u8; 13]);
    assert_eq!((out.action, out.reason), (Action::Drop, Reason::TruncEth));
}

/// A sticky VIP sends one client to one backend whatever its source port;
/// a plain VIP spreads the same client's ports over backends.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn sticky_vip_keeps_a_client_on_one_backend() {
    in_new_netns(|| {
        let topo = Topology::create();
        let plan = Plan::new(&fixture_config()).unwrap();
        let dp = Dataplane::load().unwrap();
        dp.apply(&plan).unwrap();
        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        let dmacs = |dst: &str, dport: u16| -> std::collections::HashSet<Vec<u8>> {
            (0..64u16)
                .map(|i| {
                    let f = Flow::tcp("198.51.100.20", 20_000 + i * 17, dst, dport).frame(mac);
                    let run = dp.test_run(&f, lt0).unwrap();
                    assert_eq!(run.action, Some(Action::Tx));
                    run.frame[..6].to_vec()
                })
                .collect()
        };
        assert_eq!(
            dmacs("10.100.0.3", 443).len(),
            1,
            "sticky VIP used several backends"
        );
        assert_eq!(
            dmacs("10.100.0.1", 80).len(),
            3,
            "plain VIP did not spread source ports"
        );
    });
}

/// Per-VIP and per-backend counters move with the packets they count.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn vip_and_backend_counters() {
    in_new_netns(|| {
        let topo = Topology::create();
        let plan = Plan::new(&fixture_config()).unwrap();
        let dp = Dataplane::load().unwrap();
        dp.apply(&plan).unwrap();
        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        let web4 = plan
            .vips
            .iter()
            .find(|v| v.vip.name == "web4")
            .unwrap()
            .key();
        let mut per_backend = std::collections::HashMap::new();
        let mut bytes = 0;
        for i in 0..300u16 {
            let f = Flow::tcp("198.51.100.30", 10_000 + i, "10.100.0.1", 80);
            let frame = f.frame(mac);
            bytes += frame.len() as u64;
            assert_eq!(dp.test_run(&frame, lt0).unwrap().action, Some(Action::Tx));
            let key = FlowKey {
                src: f.src,
                dst: f.dst,
                sport: f.sport,
                dport: f.dport,
                proto: 6,
            };
            *per_backend
                .entry(model::pick(&plan, &key).unwrap().backend)
                .or_insert(0u64) += 1;
        }
        // A non-forwarded VIP packet counts for the VIP only.
        let empty = plan
            .vips
            .iter()
            .find(|v| v.vip.name == "empty4")
            .unwrap()
            .key();
        dp.test_run(
            &Flow::tcp("198.51.100.30", 1, "10.100.0.8", 80).frame(mac),
            lt0,
        )
        .unwrap();
        assert_eq!(dp.vip_counter(&empty).unwrap().unwrap().packets, 1);

        assert_eq!(
            dp.vip_counter(&web4).unwrap(),
            Some(Counter {
                packets: 300,
                bytes
            })
        );
        for (backend, n) in per_backend {
            let c = dp.backend_counter(&web4, backend).unwrap().unwrap();
            assert_eq!(c.packets, n, "backend {backend}");
        }
        // Not a VIP backend: no counter.
        assert_eq!(dp.backend_counter(&web4, ip("10.1.0.99")).unwrap(), None);
    });
}
