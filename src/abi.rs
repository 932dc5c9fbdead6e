//! The constants and enums of `bpf/abi.h`, on the Rust side.
//!
//! The structs themselves are the skeleton's generated types (see
//! `dataplane`). `tests/abi.rs` reads the compiled object's BTF and checks
//! every value here against it, so the two cannot drift.

use std::fmt;

pub const ABI_VERSION: u32 = 1;
pub const MAX_VIPS: u32 = 1024;
pub const MAX_TABLES: u32 = 2 * MAX_VIPS;
/// Tables of this many slots live in `tables_fixed` (see bpf/abi.h).
pub const FIXED_TABLE_SIZE: u32 = 65_537;
pub const MAX_BACKENDS: u32 = 65_536;
pub const MAX_TX_PORTS: u32 = 64;

/// `struct lethe_trace.magic`: "LETH".
pub const TRACE_MAGIC: u32 = 0x4c45_5448;
/// `LETHE_NONE`: no VIP, no backend.
pub const NONE: u32 = u32::MAX;

/// `LETHE_EVENT_VERSION`: the decision event layout readers understand.
pub const EVENT_VERSION: u8 = 1;
/// `event_stats` indexes.
pub const EVENTS_SENT: u32 = 0;
pub const EVENTS_DROPPED: u32 = 1;

/// `lethe_config.flags`: some VIP is nat; look return traffic up.
pub const CFG_F_NAT: u32 = 1 << 0;
/// `lethe_backend.flags`: backend_srcs holds the outer source address.
pub const BACKEND_F_SRC: u8 = 1 << 0;
/// addr_filter (see bpf/abi.h): bits per bitmap, words per bitmap, and the
/// first word of each bitmap.
pub const FILTER_BITS: u32 = 65_536;
pub const FILTER_WORDS: u32 = FILTER_BITS / 64;
pub const FILTER_VIP: u32 = 0;
pub const FILTER_NAT: u32 = FILTER_WORDS;
/// quick_filter (see bpf/abi.h and `quick_filter`): bits per bitmap, words
/// per bitmap, the first word of each bitmap, and how many there are.
pub const QUICK_BITS: u32 = 65_536;
pub const QUICK_WORDS: u32 = QUICK_BITS / 64;
pub const QUICK_VIP: u32 = 0;
pub const QUICK_NAT: u32 = QUICK_WORDS;
pub const QUICK_PORT: u32 = 2 * QUICK_WORDS;
pub const QUICK_MAPS: u32 = 3;

/// vip_index (see bpf/abi.h): entries per half, how far from its home
/// entry a key may sit, and the half flag that sends misses to `vips`.
pub const VIP_SLOT_BITS: u32 = 12;
pub const VIP_SLOTS: u32 = 1 << VIP_SLOT_BITS;
pub const VIP_PROBES: u32 = 8;
pub const VIP_HALF_F_OVERFLOW: u32 = 1 << 0;

/// `struct lethe_vip.flags`: the hash leaves the source port out.
pub const VIP_F_STICKY: u8 = 1 << 0;
/// `struct lethe_vip.flags`: the table id is in `tables_fixed`.
pub const VIP_F_FIXED_TABLE: u8 = 1 << 1;

/// Family codes of the ABI (not the kernel's AF_* numbers).
pub const FAMILY_INET: u8 = 4;
pub const FAMILY_INET6: u8 = 6;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// How a VIP forwards (`enum lethe_mode`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Mode {
    /// L2 direct server return: MACs rewritten, IP untouched.
    Dsr = 1,
    /// L3 DSR: IPv4/IPv6 encapsulated in IPv4/IPv6 to the backend.
    Ipip = 2,
    /// L3 DSR in UDP (GUE variant 1).
    Gue = 3,
    /// Stateless NAT both ways: destination rewritten on the way in,
    /// source rewritten on the way back.
    Nat = 4,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Dsr, Mode::Ipip, Mode::Gue, Mode::Nat];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Dsr => "dsr",
            Mode::Ipip => "ipip",
            Mode::Gue => "gue",
            Mode::Nat => "nat",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An XDP verdict (`enum xdp_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Action {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Action {
    pub fn from_raw(v: u32) -> Option<Action> {
        Some(match v {
            0 => Action::Aborted,
            1 => Action::Drop,
            2 => Action::Pass,
            3 => Action::Tx,
            4 => Action::Redirect,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Aborted => "aborted",
            Action::Drop => "drop",
            Action::Pass => "pass",
            Action::Tx => "tx",
            Action::Redirect => "redirect",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! reasons {
    ($($variant:ident = $value:literal => $name:literal: $doc:literal,)*) => {
        /// Why a packet left the program as it did (`enum lethe_reason`).
        /// Every exit counts exactly one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum Reason {
            $(#[doc = $doc] $variant = $value,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The metric label: the C name, lowercase, without `LETHE_R_`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }

            pub fn describe(self) -> &'static str {
                match self {
                    $(Reason::$variant => $doc,)*
                }
            }
        }
    };
}

reasons! {
    FwdTx = 0 => "fwd_tx": "rewritten, sent back out of the ingress port",
    FwdRedirect = 1 => "fwd_redirect": "rewritten, redirected to another port",
    NotIp = 2 => "not_ip": "EtherType is neither IPv4 nor IPv6 (passed)",
    NotVip = 3 => "not_vip": "no VIP for (address, port, protocol) (passed)",
    L4Proto = 4 => "l4_proto": "IP protocol other than TCP or UDP (passed)",
    Ipv4Options = 5 => "ipv4_options": "IPv4 header with options (passed)",
    Fragment = 6 => "fragment": "IP fragment (passed)",
    Ipv6Ext = 7 => "ipv6_ext": "IPv6 extension header before L4 (passed)",
    NoNeigh = 8 => "no_neigh": "next hop has no resolved neighbour (passed)",
    FwdDisabled = 9 => "fwd_disabled": "forwarding disabled on the ingress port (passed)",
    TruncEth = 10 => "trunc_eth": "shorter than an Ethernet header",
    TruncVlan = 11 => "trunc_vlan": "802.1Q tag cut short",
    TruncIp = 12 => "trunc_ip": "shorter than the fixed IP header",
    BadIpVersion = 13 => "bad_ip_version": "IP version does not match the EtherType",
    BadIhl = 14 => "bad_ihl": "IPv4 IHL below 5",
    BadIpLen = 15 => "bad_ip_len": "IP length beyond the frame or below the header",
    TruncL4 = 16 => "trunc_l4": "TCP/UDP header cut short",
    NoBackend = 17 => "no_backend": "VIP without a backend",
    BadBackend = 18 => "bad_backend": "backend family cannot carry this packet",
    NoRoute = 19 => "no_route": "no route to the backend",
    NotAdjacent = 20 => "not_adjacent": "dsr backend is behind a gateway",
    FragNeeded = 21 => "frag_needed": "larger than the egress MTU",
    NoSrcAddr = 22 => "no_src_addr": "no source address towards the backend",
    NoTxPort = 23 => "no_tx_port": "egress port not allowed (tx_ports)",
    EncapFailed = 24 => "encap_failed": "no headroom for the outer header",
    ModeUnsupported = 25 => "mode_unsupported": "VIP mode not forwarded by this program",
    Internal = 26 => "internal": "a map that always exists did not",
    IcmpInner = 27 => "icmp_inner": "ICMP error whose inner packet names no flow (passed)",
    TooBig = 28 => "too_big": "too big for the path: answered with ICMP",
    ReturnPassed = 29 => "return_passed": "from a nat backend, not forwardable here, e.g. to this host (passed)",
}

/// What the backend-side decap program did with a packet
/// (`enum lethe_decap_reason`). It never drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum DecapReason {
    Ipip = 0,
    Ip6ip6 = 1,
    Ip4in6 = 2,
    Gue4 = 3,
    Gue6 = 4,
    NotEncap = 5,
    NotLocal = 6,
    Fragment = 7,
    Malformed = 8,
}

impl DecapReason {
    pub const ALL: [DecapReason; 9] = [
        DecapReason::Ipip,
        DecapReason::Ip6ip6,
        DecapReason::Ip4in6,
        DecapReason::Gue4,
        DecapReason::Gue6,
        DecapReason::NotEncap,
        DecapReason::NotLocal,
        DecapReason::Fragment,
        DecapReason::Malformed,
    ];

    /// The C name, lowercase, without `LETHE_D_`.
    pub fn name(self) -> &'static str {
        match self {
            DecapReason::Ipip => "ipip",
            DecapReason::Ip6ip6 => "ip6ip6",
            DecapReason::Ip4in6 => "ip4in6",
            DecapReason::Gue4 => "gue4",
            DecapReason::Gue6 => "gue6",
            DecapReason::NotEncap => "not_encap",
            DecapReason::NotLocal => "not_local",
            DecapReason::Fragment => "fragment",
            DecapReason::Malformed => "malformed",
        }
    }

    /// Whether the packet was stripped (else passed untouched).
    pub fn stripped(self) -> bool {
        (self as u32) <= DecapReason::Gue6 as u32
    }
}

/// `LETHE_R_MAX`: the number of reasons.
pub const REASON_COUNT: u32 = 30;

impl Reason {
    pub fn from_raw(v: u32) -> Option<Reason> {
        Reason::ALL.get(v as usize).copied()
    }

    /// The verdict a non-forwarding reason implies (`reason_action()` in C).
    pub fn implied_action(self) -> Action {
        match self {
            Reason::FwdTx | Reason::TooBig => Action::Tx,
            Reason::FwdRedirect => Action::Redirect,
            Reason::IcmpInner | Reason::ReturnPassed => Action::Pass,
            r if (Reason::NotIp as u32..Reason::TruncEth as u32).contains(&(r as u32)) => {
                Action::Pass
            }
            _ => Action::Drop,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_dense_and_in_order() {
        assert_eq!(Reason::ALL.len() as u32, REASON_COUNT);
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert_eq!(Reason::from_raw(i as u32), Some(*r));
        }
        assert_eq!(Reason::from_raw(REASON_COUNT), None);
    }

    #[test]
    fn pass_and_drop_groups() {
        assert_eq!(Reason::NotVip.implied_action(), Action::Pass);
        assert_eq!(Reason::FwdDisabled.implied_action(), Action::Pass);
        assert_eq!(Reason::TruncEth.implied_action(), Action::Drop);
        assert_eq!(Reason::NoBackend.implied_action(), Action::Drop);
    }
}
