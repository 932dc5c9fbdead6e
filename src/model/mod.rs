//! The reference model of the XDP program: (plan, network, frame) ->
//! (verdict, reason, output frame). It follows `bpf/lethe.bpf.c` step by
//! step, with the same hash (`flow_hash`) and the same tables (`plan`), so
//! tests can hold the kernel program to it byte for byte, and `trace` can
//! say which backend a flow gets without sending a packet.

pub mod decap;
mod icmp;
mod parse;
pub mod probe;
mod rewrite;

use std::net::IpAddr;

pub use parse::{parse, Packet, ETH_HLEN, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, VLAN_HLEN};
use parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_HLEN, IPV6_HLEN};
pub use rewrite::encap_len;

use crate::abi::{Action, Mode, Reason, IPPROTO_TCP, IPPROTO_UDP};
use crate::config::Protocol;
use crate::flow_hash::{flow_hash, maglev_slot, FlowKey};
use crate::plan::Plan;
use crate::quick_filter::QuickFilter;

/// What the kernel's FIB answers for a route to the backend
/// (`bpf_fib_lookup`), as far as the program uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fib {
    Forward(Nexthop),
    NoNeigh,
    FwdDisabled,
    /// Larger than the path's MTU (`mtu_result`).
    FragNeeded {
        mtu: u32,
    },
    NoSrcAddr,
    NoRoute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nexthop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// The source address the kernel picks towards the backend.
    pub src: IpAddr,
    /// Whether the backend is reached through a gateway.
    pub via_gateway: bool,
}

/// A route question the program asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FibQuery {
    pub ingress_ifindex: u32,
    pub dst: IpAddr,
    /// L3 length the packet will have on the wire.
    pub tot_len: usize,
}

/// The network the program runs in: routes, neighbours and the tx_ports map.
pub trait Network {
    fn route(&self, query: &FibQuery) -> Fib;
    /// Whether `ifindex` is in tx_ports (the ingress port always may send).
    fn tx_port(&self, ifindex: u32) -> bool;
}

/// The backend a flow gets, and how it was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Index into `Plan::vips`.
    pub vip: usize,
    pub hash: u32,
    pub slot: u32,
    pub backend: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    pub reason: Reason,
    /// The frame as the program leaves it (the input when untouched).
    pub frame: Vec<u8>,
    /// The VIP matched (index into `Plan::vips`), counted in vip_stats.
    pub vip: Option<usize>,
    /// The backend chosen, if the flow got that far. The packet may still
    /// have been passed or dropped (no route, ...); backend_stats counts it
    /// only when `action` forwards.
    pub backend: Option<IpAddr>,
}

/// Which backend `plan` gives a flow to (address, port, protocol), or why
/// none. The choice part of the program, without routes.
pub fn pick(plan: &Plan, key: &FlowKey) -> Result<Pick, Reason> {
    let protocol = Protocol::from_number(key.proto).ok_or(Reason::L4Proto)?;
    let vip = plan
        .find(key.dst, key.dport, protocol)
        .ok_or(Reason::NotVip)?;
    let planned = &plan.vips[vip];
    let hash = flow_hash(key, plan.hash_seed, planned.vip.sticky);
    if planned.table.is_empty() {
        return Err(Reason::NoBackend);
    }
    let slot = maglev_slot(hash, planned.table.size());
    let backend = planned.table.backend_at(slot).ok_or(Reason::NoBackend)?;
    Ok(Pick {
        vip,
        hash,
        slot,
        backend,
    })
}

/// Backend -> client traffic of a nat VIP: the source becomes the VIP;
/// ICMP errors about packets a backend received: the quoted packet becomes
/// the client's. Twin of `nat_return_path` in bpf/lethe.bpf.c.
fn nat_return(
    plan: &Plan,
    net: &dyn Network,
    ingress_ifindex: u32,
    frame: &[u8],
    p: &Packet,
) -> Outcome {
    let proto = Protocol::from_number(p.proto).expect("parsed TCP/UDP");
    let untouched = |reason: Reason, vip: Option<usize>| Outcome {
        action: reason.implied_action(),
        reason,
        frame: frame.to_vec(),
        vip,
        backend: None,
    };
    let Some(idx) = plan.find_nat_return(p.src, p.sport, proto) else {
        return untouched(Reason::NotVip, None);
    };
    let vip = &plan.vips[idx].vip;
    let rewrite_back = || {
        if p.icmp {
            rewrite::nat_icmp(frame, p, rewrite::Side::Src, vip.address, vip.port)
        } else {
            rewrite::nat(frame, p, rewrite::Side::Src, vip.address, vip.port)
        }
    };
    let hop = match net.route(&FibQuery {
        ingress_ifindex,
        dst: p.dst,
        tot_len: p.l3_len,
    }) {
        Fib::Forward(hop) => hop,
        // Towards an unresolved next hop: rewritten, for the kernel to
        // resolve and forward.
        Fib::NoNeigh => {
            return Outcome {
                action: Action::Pass,
                reason: Reason::NoNeigh,
                frame: rewrite_back(),
                vip: Some(idx),
                backend: None,
            }
        }
        // Larger than the path to the client but fragmentable (IPv4
        // without DF): rewritten too, for the kernel to fragment.
        Fib::FragNeeded { .. } if p.dst.is_ipv4() && !p.df && !p.icmp => {
            return Outcome {
                action: Action::Pass,
                reason: Reason::ReturnPassed,
                frame: rewrite_back(),
                vip: Some(idx),
                backend: None,
            }
        }
        // What a backend sends that Lethe cannot forward itself (e.g. to
        // this host: answers to health checks) is the kernel's.
        _ => return untouched(Reason::ReturnPassed, Some(idx)),
    };
    if hop.ifindex != ingress_ifindex && !net.tx_port(hop.ifindex) {
        return untouched(Reason::ReturnPassed, Some(idx));
    }
    let out = rewrite::with_macs(rewrite_back(), &hop);
    let (action, reason) = if hop.ifindex == ingress_ifindex {
        (Action::Tx, Reason::FwdTx)
    } else {
        (Action::Redirect, Reason::FwdRedirect)
    };
    Outcome {
        action,
        reason,
        frame: out,
        vip: Some(idx),
        backend: None,
    }
}

/// The program's first test and its second stage (`quick_not_vip` and
/// `quick_port_test` in bpf/lethe.bpf.c): whether the frame is passed as
/// no VIP's before it is parsed. An IPv4 header without options (the frame
/// at least 34 bytes) or an IPv6 header (54), carrying anything but ICMP,
/// whose destination's VIP bit and source's nat bit are clear in `quick`;
/// or, with the destination's bit set and the source's nat bit and the
/// destination's all-ports mark clear, TCP or UDP (not an IPv4 fragment,
/// the destination port in the frame) whose (destination, port) bit is
/// clear. Its lengths and the rest of its transport header are not read:
/// a malformed packet that passes here is not_vip, not its flaw.
pub fn quick_not_vip(quick: &QuickFilter, frame: &[u8]) -> bool {
    if frame.len() < ETH_HLEN + IPV4_HLEN {
        return false;
    }
    let ip = &frame[ETH_HLEN..];
    let (src, dst, proto, fragment, l4) = match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IP => {
            if ip[0] != 0x45 || ip[9] == IPPROTO_ICMP {
                return false;
            }
            let addr = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&ip[at..at + 4]).unwrap());
            // MF or a fragment offset.
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            (addr(12), addr(16), ip[9], fragment, IPV4_HLEN)
        }
        ETH_P_IPV6 => {
            if frame.len() < ETH_HLEN + IPV6_HLEN || ip[0] >> 4 != 6 || ip[6] == IPPROTO_ICMPV6 {
                return false;
            }
            let addr = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap());
            (addr(8), addr(24), ip[6], false, IPV6_HLEN)
        }
        _ => return false,
    };
    if quick.passes(&src, &dst) {
        return true;
    }
    if !quick.second_stage(&src, &dst) || fragment || (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
    {
        return false;
    }
    match ip.get(l4 + 2..l4 + 4) {
        Some(dport) => quick.port_passes(&dst, u16::from_be_bytes([dport[0], dport[1]]), proto),
        None => false,
    }
}

/// Runs the program on one frame received on `ingress_ifindex`.
pub fn process(plan: &Plan, net: &dyn Network, ingress_ifindex: u32, frame: &[u8]) -> Outcome {
    let untouched = |reason: Reason, vip: Option<usize>| Outcome {
        action: reason.implied_action(),
        reason,
        frame: frame.to_vec(),
        vip,
        backend: None,
    };
    if quick_not_vip(&plan.quick, frame) {
        return untouched(Reason::NotVip, None);
    }
    // After the pick, exits name the chosen backend.
    let left = |reason: Reason, vip: Option<usize>, backend: IpAddr| Outcome {
        backend: Some(backend),
        ..untouched(reason, vip)
    };
    let p = match parse(frame) {
        Ok(p) => p,
        Err(reason) => return untouched(reason, None),
    };
    let key = FlowKey {
        src: p.src,
        dst: p.dst,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
    };
    let chosen = match pick(plan, &key) {
        Ok(c) => c,
        Err(Reason::NotVip) if !plan.nat_returns.is_empty() => {
            return nat_return(plan, net, ingress_ifindex, frame, &p)
        }
        Err(Reason::NotVip) => return untouched(Reason::NotVip, None),
        Err(reason) => {
            let vip =
                Protocol::from_number(p.proto).and_then(|proto| plan.find(p.dst, p.dport, proto));
            return untouched(reason, vip);
        }
    };
    let vip = Some(chosen.vip);
    let backend = chosen.backend;
    let mode = plan.vips[chosen.vip].mode();

    let outer_len = match mode {
        Mode::Dsr if backend.is_ipv4() != p.dst.is_ipv4() => {
            return left(Reason::BadBackend, vip, backend)
        }
        Mode::Dsr => 0,
        Mode::Ipip | Mode::Gue if backend.is_ipv4() && p.dst.is_ipv6() => {
            return left(Reason::BadBackend, vip, backend)
        }
        Mode::Ipip | Mode::Gue => rewrite::encap_len(&backend, mode == Mode::Gue),
        Mode::Nat if backend.is_ipv4() != p.dst.is_ipv4() => {
            return left(Reason::BadBackend, vip, backend)
        }
        Mode::Nat => 0,
    };
    let query = FibQuery {
        ingress_ifindex,
        dst: backend,
        tot_len: p.l3_len + outer_len,
    };
    let nat_rewrite = || {
        let planned = &plan.vips[chosen.vip].vip;
        let port = planned
            .backends
            .iter()
            .find(|b| b.address == backend)
            .map_or(0, |b| planned.backend_port(b));
        if p.icmp {
            rewrite::nat_icmp(frame, &p, rewrite::Side::Dst, backend, port)
        } else {
            rewrite::nat(frame, &p, rewrite::Side::Dst, backend, port)
        }
    };
    let hop = match net.route(&query) {
        Fib::Forward(hop) => hop,
        // nat: rewritten, the kernel resolves the neighbour and forwards it.
        Fib::NoNeigh if mode == Mode::Nat => {
            return Outcome {
                action: Action::Pass,
                reason: Reason::NoNeigh,
                frame: nat_rewrite(),
                vip,
                backend: Some(backend),
            }
        }
        Fib::NoNeigh => return left(Reason::NoNeigh, vip, backend),
        Fib::FwdDisabled => return left(Reason::FwdDisabled, vip, backend),
        Fib::FragNeeded { mtu } => {
            // answer_too_big in bpf/icmp.h: IPv6 at or under its minimum
            // MTU cannot be told to shrink.
            let mtu = mtu.saturating_sub(outer_len as u32);
            if p.icmp
                || (p.dst.is_ipv4() && !p.df)
                || (p.dst.is_ipv6() && mtu < 1280 && p.l3_len <= 1280)
            {
                return left(Reason::FragNeeded, vip, backend);
            }
            return Outcome {
                action: Action::Tx,
                reason: Reason::TooBig,
                frame: icmp::too_big(frame, &p, mtu),
                vip,
                backend: Some(backend),
            };
        }
        Fib::NoSrcAddr => return left(Reason::NoSrcAddr, vip, backend),
        Fib::NoRoute => return left(Reason::NoRoute, vip, backend),
    };
    if hop.ifindex != ingress_ifindex && !net.tx_port(hop.ifindex) {
        return left(Reason::NoTxPort, vip, backend);
    }
    let out = match mode {
        Mode::Dsr if hop.via_gateway => return left(Reason::NotAdjacent, vip, backend),
        Mode::Dsr => rewrite::dsr(frame, &hop),
        Mode::Nat => rewrite::with_macs(nat_rewrite(), &hop),
        Mode::Gue => rewrite::encap(frame, &p, &hop, backend, chosen.hash, plan.gue_port),
        Mode::Ipip => rewrite::encap(frame, &p, &hop, backend, chosen.hash, 0),
    };
    let (action, reason) = if hop.ifindex == ingress_ifindex {
        (Action::Tx, Reason::FwdTx)
    } else {
        (Action::Redirect, Reason::FwdRedirect)
    };
    Outcome {
        action,
        reason,
        frame: out,
        vip,
        backend: Some(backend),
    }
}
