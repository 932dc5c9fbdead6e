//! `lethe doctor`: checks what breaks forwarding on a load balancer host
//! (daemon, attached program and its mode, forwarding sysctls, checksum
//! offload and GRO on veth, MTU headroom for encapsulation, next hops) or,
//! with `--backend`, on a backend host (VIPs on lo, rp_filter,
//! arp_ignore/arp_announce, the decap program). One finding per line: ok,
//! WARN or PROBLEM, and every problem names the command that fixes it.
//!
//! It reads; it never changes anything. Everything it reads follows the
//! calling process's network namespace (see [`host`]), so it runs under
//! `nsenter --net=/run/netns/NAME` like the daemon does.

mod host;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::abi::Mode;
use crate::cli::Client;
use crate::config::Config;
use crate::dataplane::{self, pin, PinnedLink, XdpMode};
use crate::store::Store;

pub use host::{Features, Iface, Route};

pub const DEFAULT_API: &str = "http://127.0.0.1:9180";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lethe";
pub const DEFAULT_INSTANCE: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Problem,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Problem => "PROBLEM",
        }
    }
}

/// One line of the diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub status: Status,
    /// What was checked: daemon, xdp, forwarding, offload, mtu, nexthop,
    /// vip, rp_filter, arp, decap.
    pub check: &'static str,
    pub message: String,
    /// The command that fixes it (problems always have one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `load balancer` or `backend`.
    pub role: &'static str,
    pub findings: Vec<Finding>,
}

impl Report {
    fn new(role: &'static str) -> Report {
        Report {
            role,
            findings: Vec::new(),
        }
    }

    fn add(&mut self, status: Status, check: &'static str, message: String, fix: Option<String>) {
        self.findings.push(Finding {
            status,
            check,
            message,
            fix,
        });
    }

    fn ok(&mut self, check: &'static str, message: String) {
        self.add(Status::Ok, check, message, None);
    }

    fn warn(&mut self, check: &'static str, message: String, fix: Option<String>) {
        self.add(Status::Warn, check, message, fix);
    }

    fn problem(&mut self, check: &'static str, message: String, fix: String) {
        self.add(Status::Problem, check, message, Some(fix));
    }

    fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }

    pub fn problems(&self) -> usize {
        self.count(Status::Problem)
    }

    pub fn warnings(&self) -> usize {
        self.count(Status::Warn)
    }

    /// One line per finding, its fix below it, and a summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let _ = writeln!(out, "{:<8} {:<10} {}", f.status.label(), f.check, f.message);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "{:<19}fix: {fix}", "");
            }
        }
        let (p, w) = (self.problems(), self.warnings());
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        if p == 0 && w == 0 {
            let _ = writeln!(out, "{}: no problem found", self.role);
        } else {
            let _ = writeln!(
                out,
                "{}: {}, {}",
                self.role,
                plural(p, "problem"),
                plural(w, "warning")
            );
        }
        out
    }

    /// `{"role", "problems", "warnings", "findings": [{"status", "check",
    /// "message", "fix"}]}`, pretty-printed.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Doc<'a> {
            role: &'a str,
            problems: usize,
            warnings: usize,
            findings: &'a [Finding],
        }
        serde_json::to_string_pretty(&Doc {
            role: self.role,
            problems: self.problems(),
            warnings: self.warnings(),
            findings: &self.findings,
        })
        .expect("findings serialise")
    }
}

fn instance_arg(instance: &str) -> String {
    if instance == DEFAULT_INSTANCE {
        String::new()
    } else {
        format!(" --instance {instance}")
    }
}

/// A command run in a veth peer's namespace.
fn in_ns_cmd(netns: Option<&str>, cmd: &str) -> String {
    match netns {
        Some(ns) => format!("nsenter --net=/run/netns/{ns} {cmd}"),
        None => cmd.to_string(),
    }
}

fn names<T: AsRef<str>>(items: &[T]) -> String {
    items
        .iter()
        .map(|s| s.as_ref())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a veth's peer looks like, read in the peer's namespace.
#[derive(Debug, Clone)]
struct Peer {
    /// Its named namespace (/run/netns), None when it is in this one.
    netns: Option<String>,
    name: String,
    mtu: u32,
    features: Features,
    /// The XDP program on it (0: none).
    xdp_prog: u32,
}

impl Peer {
    fn describe(&self) -> String {
        match &self.netns {
            Some(ns) => format!("peer {} (netns {ns})", self.name),
            None => format!("peer {}", self.name),
        }
    }
}

fn peer_here(ifindex: u32) -> Result<(String, u32, Features, u32), String> {
    let name = host::ifname(ifindex).ok_or_else(|| format!("no ifindex {ifindex}"))?;
    let features = host::features(&name).map_err(|e| format!("{name}: ethtool: {e}"))?;
    let mtu = host::mtu(&name).map_err(|e| format!("{name}: mtu: {e}"))?;
    let xdp = dataplane::xdp_query(ifindex)
        .map(|x| x.prog_id.max(x.native_prog_id).max(x.generic_prog_id))
        .unwrap_or(0);
    Ok((name, mtu, features, xdp))
}

fn peer_of(iface: &Iface, nsids: &HashMap<i64, String>) -> Result<Peer, String> {
    let idx = iface
        .peer_ifindex
        .ok_or_else(|| "the kernel names no peer".to_string())?;
    let (netns, facts) = match iface.peer_nsid {
        None => (None, peer_here(idx)?),
        Some(id) => {
            let ns = nsids.get(&id).ok_or_else(|| {
                format!("it is in network namespace id {id}, which has no name in /run/netns")
            })?;
            let path = PathBuf::from("/run/netns").join(ns);
            let facts = host::in_netns(&path, || peer_here(idx))
                .map_err(|e| format!("{}: {e}", path.display()))??;
            (Some(ns.clone()), facts)
        }
    };
    let (name, mtu, features, xdp_prog) = facts;
    Ok(Peer {
        netns,
        name,
        mtu,
        features,
        xdp_prog,
    })
}

// ---------------------------------------------------------------------------
// Load balancer

/// `lethe doctor` on a load balancer host.
#[derive(Debug, Clone)]
pub struct LbOptions {
    pub instance: String,
    pub api: String,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    /// Interfaces the program must be attached to (default: those the
    /// instance has pinned links for).
    pub ifaces: Vec<String>,
}

/// An interface the instance's pinned link runs on, in this namespace.
#[derive(Debug, Clone)]
struct Attached {
    name: String,
}

struct Lb<'a> {
    opts: &'a LbOptions,
    report: Report,
    /// Interface names of the pinned links (whatever their state).
    pinned: Vec<String>,
}

impl Lb<'_> {
    /// The `lethe serve` command for this instance, on `ifaces`.
    fn serve_cmd(&self, extra: Option<&str>) -> String {
        let mut ifaces: Vec<String> = if self.opts.ifaces.is_empty() {
            self.pinned.clone()
        } else {
            self.opts.ifaces.clone()
        };
        if let Some(e) = extra {
            if !ifaces.iter().any(|i| i == e) {
                ifaces.push(e.to_string());
            }
        }
        if ifaces.is_empty() {
            ifaces.push("IFACE".into());
        }
        let mut cmd = "lethe serve".to_string();
        for i in &ifaces {
            cmd += &format!(" --iface {i}");
        }
        cmd += &instance_arg(&self.opts.instance);
        if self.opts.state_dir != Path::new(DEFAULT_STATE_DIR) {
            cmd += &format!(" --state-dir {}", self.opts.state_dir.display());
        }
        let listen = self
            .opts
            .api
            .trim_start_matches("http://")
            .trim_end_matches('/');
        if listen != DEFAULT_API.trim_start_matches("http://") && !listen.contains('/') {
            cmd += &format!(" --listen {listen}");
        }
        cmd
    }

    fn daemon(&mut self) -> Option<(Config, String)> {
        let client = Client::new(&self.opts.api, None).with_timeout(Duration::from_secs(5));
        let store = Store::new(self.opts.state_dir.join(&self.opts.instance));
        let up = match client.ready() {
            Ok(()) => true,
            Err(e) => {
                self.report.problem(
                    "daemon",
                    format!(
                        "{} does not answer /ready ({e:#}){}",
                        client.base(),
                        if self.pinned.is_empty() {
                            ""
                        } else {
                            ": the pinned program keeps forwarding with the tables it has, but \
                             nothing updates them (no API, health checks or neighbour warming)"
                        }
                    ),
                    self.serve_cmd(None),
                );
                false
            }
        };
        let from_api = if up {
            match client.config() {
                Ok(c) => Some(c),
                Err(e) => {
                    self.report.warn(
                        "daemon",
                        format!("GET /v1/config failed ({e:#}); reading the saved file"),
                        None,
                    );
                    None
                }
            }
        } else {
            None
        };
        let config = match from_api {
            Some(c) => Some((c, "GET /v1/config".to_string())),
            None => match store.load() {
                Ok(Some(c)) => Some((c, format!("saved in {}", store.path().display()))),
                Ok(None) => {
                    self.report.warn(
                        "daemon",
                        format!(
                            "no configuration to check VIPs against: none from the API, none \
                             saved in {} (--state-dir, --instance)",
                            store.path().display()
                        ),
                        None,
                    );
                    None
                }
                Err(e) => {
                    self.report.warn(
                        "daemon",
                        format!("no configuration to check VIPs against: {e}"),
                        None,
                    );
                    None
                }
            },
        };
        if up {
            let what = config
                .as_ref()
                .map(|(c, _)| format!("; {} VIPs", c.vips.len()))
                .unwrap_or_default();
            self.report
                .ok("daemon", format!("{} is ready{what}", client.base()));
        } else if let Some((c, from)) = &config {
            self.report.ok(
                "daemon",
                format!("checking the configuration {from}: {} VIPs", c.vips.len()),
            );
        }
        config
    }

    fn links(&mut self) -> Vec<Attached> {
        let dir = pin::instance_dir(&self.opts.bpffs, &self.opts.instance);
        if !pin::is_bpffs(&self.opts.bpffs) {
            self.report.problem(
                "xdp",
                format!(
                    "no bpffs at {}: pinned links are invisible (`ip netns exec` remounts /sys \
                     and hides them)",
                    self.opts.bpffs.display()
                ),
                format!(
                    "run the doctor under `nsenter --net=/run/netns/NAME` instead of `ip netns \
                     exec`, or mount it: mount -t bpf bpf {}",
                    self.opts.bpffs.display()
                ),
            );
            return Vec::new();
        }
        let pins = pin::links(&dir);
        if pins.is_empty() {
            self.report.problem(
                "xdp",
                format!(
                    "instance {:?} has no pinned link in {}: the program is not attached, \
                     nothing is balanced",
                    self.opts.instance,
                    dir.display()
                ),
                self.serve_cmd(None),
            );
        }
        if let pin::Pins::Other { stamp } = pin::pins(&dir) {
            self.report.warn(
                "xdp",
                format!(
                    "the maps pinned in {} are in another layout ({}) than this lethe's \
                     ({:016x}): a daemon of another build pinned them; this build's \
                     `lethe serve` moves the instance to fresh maps, without a gap \
                     (counters restart)",
                    dir.display(),
                    stamp.map_or("no stamp".to_string(), |s| format!("{s:016x}")),
                    pin::LAYOUT
                ),
                Some(self.serve_cmd(None)),
            );
        }
        // The program the instance's daemon loaded last: every link should
        // run it (an older one runs settings and filters nobody updates).
        let current = dataplane::pinned_prog_id(&pin::prog_path(&dir))
            .ok()
            .flatten();
        let mut attached = Vec::new();
        for (ifname, path) in &pins {
            match dataplane::pinned_link(path) {
                Err(e) => self.report.problem(
                    "xdp",
                    format!("{}: cannot open the pinned link: {e}", path.display()),
                    self.serve_cmd(None),
                ),
                Ok(None) => {}
                Ok(Some(link)) if link.ifindex == 0 => self.report.problem(
                    "xdp",
                    format!(
                        "{ifname}: the pinned link is defunct (its interface is gone): \
                         nothing runs there"
                    ),
                    self.serve_cmd(None),
                ),
                Ok(Some(link)) if current.is_some_and(|p| p != link.prog_id) => {
                    self.report.problem(
                        "xdp",
                        format!(
                            "{ifname}: the link runs program {}, not the instance's current \
                             program {}: its settings and filters are no daemon's any more",
                            link.prog_id,
                            current.unwrap_or_default()
                        ),
                        self.serve_cmd(None),
                    )
                }
                Ok(Some(link)) => {
                    if self.link_mode(ifname, &link) {
                        attached.push(Attached {
                            name: ifname.clone(),
                        });
                    }
                }
            }
        }
        for want in &self.opts.ifaces {
            if !self.pinned.contains(want) {
                self.report.problem(
                    "xdp",
                    format!("{want}: the program is not attached (no pinned link)"),
                    self.serve_cmd(Some(want)),
                );
            }
        }
        attached
    }

    /// Reports how the link of `ifname` runs; true when it runs here.
    fn link_mode(&mut self, ifname: &str, link: &PinnedLink) -> bool {
        let here = host::ifname(link.ifindex);
        if here.as_deref() != Some(ifname) {
            self.report.warn(
                "xdp",
                format!(
                    "{ifname}: the pinned link runs on ifindex {}, which is {} in this network \
                     namespace: run the doctor in the daemon's namespace",
                    link.ifindex,
                    here.map_or("no interface".to_string(), |h| format!("{h:?}"))
                ),
                Some("nsenter --net=/run/netns/NAME lethe doctor ...".into()),
            );
            return false;
        }
        let state = match dataplane::xdp_query(link.ifindex) {
            Ok(s) => s,
            Err(e) => {
                self.report
                    .warn("xdp", format!("{ifname}: cannot query XDP: {e}"), None);
                return true;
            }
        };
        let ids = format!("program {}, link {}", link.prog_id, link.link_id);
        match state.mode {
            XdpMode::Native if state.native_prog_id == link.prog_id => {
                self.report
                    .ok("xdp", format!("{ifname}: attached in native mode ({ids})"));
            }
            XdpMode::Generic if state.generic_prog_id == link.prog_id => self.report.warn(
                "xdp",
                format!(
                    "{ifname}: attached in generic (SKB) mode ({ids}): every packet pays for an \
                     skb, several times slower than native"
                ),
                Some(format!(
                    "lethe down{} && {}   (without --generic; needs a driver with native XDP)",
                    instance_arg(&self.opts.instance),
                    self.serve_cmd(None)
                )),
            ),
            XdpMode::Offloaded | XdpMode::Multi => self.report.warn(
                "xdp",
                format!("{ifname}: XDP in mode {:?} ({ids})", state.mode),
                None,
            ),
            _ => self.report.warn(
                "xdp",
                format!(
                    "{ifname}: the interface runs XDP program {} ({:?}), not the link's ({ids}): \
                     another namespace's interface?",
                    state.prog_id, state.mode
                ),
                None,
            ),
        }
        true
    }

    /// What the kernel does with packets to a VIP that the program passes
    /// (fragments, pings, other protocols, an unresolved next hop): VIPs
    /// are routed to this host, and if the host routes them back out of
    /// an attached interface, each such packet loops between it and the
    /// router until its TTL runs out.
    fn vip_routes(&mut self, attached: &[Attached], config: &Config) {
        let mut addrs: Vec<IpAddr> = config.vips.iter().map(|v| v.address).collect();
        addrs.sort();
        addrs.dedup();
        let mut looping = Vec::new();
        for a in &addrs {
            // No route, blackhole, unreachable, prohibit: `ip route get`
            // fails, and the kernel drops them. Local: delivered here.
            let Ok(route) = host::route_get(*a) else {
                continue;
            };
            let kind = route.kind.as_deref().unwrap_or("unicast");
            if kind == "unicast" && attached.iter().any(|p| p.name == route.dev) {
                looping.push((*a, route.dev));
            }
        }
        if looping.is_empty() {
            if !addrs.is_empty() {
                self.report.ok(
                    "vip-route",
                    format!(
                        "packets passed to the kernel for the {} VIP addresses stay on this host",
                        addrs.len()
                    ),
                );
            }
            return;
        }
        let fix: Vec<String> = looping
            .iter()
            .map(|(a, _)| match a {
                IpAddr::V4(_) => format!("ip route add blackhole {a}/32"),
                IpAddr::V6(_) => format!("ip -6 route add blackhole {a}/128"),
            })
            .collect();
        let list: Vec<String> = looping
            .iter()
            .map(|(a, d)| format!("{a} (out of {d})"))
            .collect();
        self.report.warn(
            "vip-route",
            format!(
                "VIP addresses routed back out of an attached interface: {}. What Lethe passes \
                 to the kernel for them (fragments, pings, other protocols) goes back to the \
                 router, which sends it here again, until its TTL runs out; blackhole them \
                 (or put them on lo)",
                list.join(", ")
            ),
            Some(fix.join(" && ")),
        );
    }

    fn forwarding(&mut self, attached: &[Attached], config: &Config) {
        let families = backend_families(config);
        if families.0 {
            let mut off = Vec::new();
            for a in attached {
                if host::conf("ipv4", &a.name, "forwarding") == Some(0) {
                    off.push(a.name.clone());
                }
            }
            if off.is_empty() {
                if !attached.is_empty() {
                    let list: Vec<&str> = attached.iter().map(|a| a.name.as_str()).collect();
                    self.report
                        .ok("forwarding", format!("IPv4 forwarding on {}", names(&list)));
                }
            } else {
                let sets: Vec<String> = off
                    .iter()
                    .map(|d| format!("{}=1", host::conf_name("ipv4", d, "forwarding")))
                    .collect();
                self.report.problem(
                    "forwarding",
                    format!(
                        "IPv4 forwarding off on {}: the kernel's FIB lookup refuses, packets to \
                         IPv4 backends are passed (fwd_disabled)",
                        names(&off)
                    ),
                    format!("sysctl -w {}", sets.join(" ")),
                );
            }
        }
        if families.1 {
            match host::conf("ipv6", "all", "forwarding") {
                Some(0) => self.report.problem(
                    "forwarding",
                    "IPv6 forwarding off: the kernel's FIB lookup refuses, packets to IPv6 \
                     backends are passed (fwd_disabled)"
                        .into(),
                    "sysctl -w net.ipv6.conf.all.forwarding=1".into(),
                ),
                Some(_) => self.report.ok("forwarding", "IPv6 forwarding on".into()),
                None => {}
            }
        }
    }

    fn offloads(
        &mut self,
        links: &[Iface],
        attached: &[Attached],
        peers: &HashMap<String, Result<Peer, String>>,
    ) {
        for l in links.iter().filter(|l| l.is_veth()) {
            let is_attached = attached.iter().any(|a| a.name == l.name);
            let f = match host::features(&l.name) {
                Ok(f) => f,
                Err(e) => {
                    self.report.warn(
                        "offload",
                        format!("{} (veth): cannot read its features: {e}", l.name),
                        None,
                    );
                    continue;
                }
            };
            let mut fine = vec![format!(
                "{} (veth): tx checksumming {}",
                l.name,
                if f.tx_csum { "on" } else { "off" }
            )];
            let mut bad = false;
            if f.tx_csum {
                let why = "every veth on a path through native XDP needs it off: XDP \
                           redirect/TX loses \"checksum not yet computed\", and receivers drop \
                           segments with bad checksums";
                let fix = format!("ethtool -K {} tx off", l.name);
                if is_attached {
                    self.report
                        .problem("offload", format!("{}: {why}", fine[0]), fix);
                } else {
                    self.report.warn(
                        "offload",
                        format!("{} (not attached; a problem if its peer runs native XDP that redirects): {why}", fine[0]),
                        Some(fix),
                    );
                }
                bad = true;
            }
            if !is_attached {
                if !bad {
                    self.report.ok("offload", fine.remove(0));
                }
                continue;
            }
            match peers.get(&l.name) {
                Some(Ok(p)) => {
                    let who = p.describe();
                    if p.features.tx_csum {
                        self.report.problem(
                            "offload",
                            format!(
                                "{who} of {}: tx checksumming on: it sends into XDP, which loses \
                                 \"checksum not yet computed\" when it redirects or transmits: \
                                 receivers drop those segments",
                                l.name
                            ),
                            in_ns_cmd(p.netns.as_deref(), &format!("ethtool -K {} tx off", p.name)),
                        );
                        bad = true;
                    } else {
                        fine.push(format!("{who}: tx checksumming off"));
                    }
                    // Frames redirected (or sent with XDP_TX) into a veth
                    // are delivered only if its peer has NAPI: an XDP
                    // program, or GRO (enough for redirect, not for TX).
                    let one_armed = attached.len() == 1;
                    if p.xdp_prog != 0 {
                        fine.push("XDP program on it".into());
                    } else if one_armed {
                        self.report.problem(
                            "offload",
                            format!(
                                "{who} of {} has no XDP program: frames the program sends back \
                                 out of {} (XDP_TX) stall in the peer's ring",
                                l.name, l.name
                            ),
                            in_ns_cmd(
                                p.netns.as_deref(),
                                &format!(
                                    "lethe decap attach {}   (or any XDP program that passes)",
                                    p.name
                                ),
                            ),
                        );
                        bad = true;
                    } else if !p.features.gro {
                        self.report.problem(
                            "offload",
                            format!(
                                "{who} of {}: GRO off and no XDP program: frames XDP redirects \
                                 into {} are dropped",
                                l.name, l.name
                            ),
                            in_ns_cmd(p.netns.as_deref(), &format!("ethtool -K {} gro on", p.name)),
                        );
                        bad = true;
                    } else {
                        fine.push("GRO on".into());
                    }
                }
                Some(Err(e)) => {
                    self.report.warn(
                        "offload",
                        format!(
                            "{} (veth): its peer was not checked ({e}): it needs tx checksumming \
                             off, and GRO on or an XDP program",
                            l.name
                        ),
                        None,
                    );
                    bad = true;
                }
                None => {}
            }
            if !bad {
                self.report.ok("offload", fine.join(", "));
            }
        }
    }

    fn paths(
        &mut self,
        config: &Config,
        links: &[Iface],
        attached: &[Attached],
        peers: &HashMap<String, Result<Peer, String>>,
    ) {
        // Every backend in the table, with the VIPs that use it.
        let mut backends: BTreeMap<IpAddr, Vec<(String, Mode)>> = BTreeMap::new();
        let mut drained = 0;
        for v in &config.vips {
            for b in &v.backends {
                if b.weight == 0 {
                    drained += 1;
                    continue;
                }
                backends
                    .entry(b.address)
                    .or_default()
                    .push((v.name.clone(), v.mode));
            }
        }
        if backends.is_empty() {
            self.report.ok(
                "nexthop",
                format!(
                    "no backend in any table ({} VIPs, {drained} drained backends)",
                    config.vips.len()
                ),
            );
            return;
        }
        let routes: BTreeMap<IpAddr, Result<Route, String>> =
            backends.keys().map(|&a| (a, host::route_get(a))).collect();
        self.mtu(config, links, attached, peers, &routes);
        self.nexthops(&backends, &routes, attached);
    }

    fn mtu(
        &mut self,
        config: &Config,
        links: &[Iface],
        attached: &[Attached],
        peers: &HashMap<String, Result<Peer, String>>,
        routes: &BTreeMap<IpAddr, Result<Route, String>>,
    ) {
        if attached.is_empty() {
            // Which side clients are on is unknown (the missing link is
            // reported): --iface names it.
            return;
        }
        let mtu_of = |name: &str| links.iter().find(|l| l.name == name).map(|l| l.mtu);
        // Per egress device: (VIP, overhead) pairs.
        let mut by_dev: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
        let mut route_mtu: HashMap<String, u32> = HashMap::new();
        for v in &config.vips {
            let gue = match v.mode {
                Mode::Ipip => false,
                Mode::Gue => true,
                _ => continue,
            };
            for b in v.backends.iter().filter(|b| b.weight > 0) {
                let Some(Ok(r)) = routes.get(&b.address) else {
                    continue;
                };
                if r.kind.is_some() {
                    continue;
                }
                let overhead = crate::model::encap_len(&b.address, gue) as u32;
                by_dev
                    .entry(r.dev.clone())
                    .or_default()
                    .push((v.name.clone(), overhead));
                if let Some(m) = r.mtu {
                    let e = route_mtu.entry(r.dev.clone()).or_insert(m);
                    *e = (*e).min(m);
                }
            }
        }
        for (dev, uses) in by_dev {
            let Some(dev_mtu) = mtu_of(&dev) else {
                continue;
            };
            let path_mtu = route_mtu.get(&dev).map_or(dev_mtu, |&m| m.min(dev_mtu));
            // Client packets arrive on the other attached interfaces; with
            // one interface (one-armed), on this one.
            let client = attached
                .iter()
                .filter(|a| a.name != dev)
                .filter_map(|a| mtu_of(&a.name).map(|m| (a.name.clone(), m)))
                .max_by_key(|&(_, m)| m);
            let one_armed = client.is_none();
            let (client_dev, client_mtu) = client.unwrap_or((dev.clone(), dev_mtu));
            let verdict = mtu_verdict(path_mtu, client_mtu, &uses);
            let vips: Vec<&str> = {
                let mut v: Vec<&str> = uses.iter().map(|(n, _)| n.as_str()).collect();
                v.dedup();
                v
            };
            let limited_by = if path_mtu < dev_mtu {
                format!("route mtu {path_mtu}")
            } else {
                format!("mtu {dev_mtu}")
            };
            if verdict.fits {
                self.report.ok(
                    "mtu",
                    format!(
                        "{dev} ({limited_by}) carries {} encapsulated: room for {client_mtu}-byte \
                         client packets from {client_dev} (needs {})",
                        names(&vips),
                        verdict.needed
                    ),
                );
            } else {
                let over: Vec<String> = verdict
                    .limits
                    .iter()
                    .map(|(vip, n)| format!("{n} ({vip})"))
                    .collect();
                let message = format!(
                    "{dev} ({limited_by}) is too small for encapsulation: client packets over {} \
                     bytes are answered with ICMP too big (clients on {client_dev}, mtu \
                     {client_mtu}, need {})",
                    over.join(", "),
                    verdict.needed
                );
                if one_armed {
                    self.report.warn(
                        "mtu",
                        format!(
                            "{message}; one-armed: raising {dev}'s mtu raises the clients' too, \
                             so lower the MTU on the client side or rely on path MTU discovery"
                        ),
                        None,
                    );
                } else if path_mtu < dev_mtu {
                    self.report.problem(
                        "mtu",
                        message,
                        format!(
                            "ip route change ROUTE dev {dev} mtu {}   (the route `ip route get \
                             BACKEND` shows)",
                            verdict.needed
                        ),
                    );
                } else {
                    self.report.problem(
                        "mtu",
                        message,
                        format!(
                            "ip link set dev {dev} mtu {}   (and every hop to the backends)",
                            verdict.needed
                        ),
                    );
                }
            }
            // A veth drops frames larger than its peer's MTU.
            if let Some(Ok(p)) = peers.get(&dev) {
                if p.mtu < verdict.needed {
                    self.report.problem(
                        "mtu",
                        format!(
                            "{} of {dev} has mtu {}: encapsulated frames over it ({} bytes) \
                             are dropped",
                            p.describe(),
                            p.mtu,
                            verdict.needed
                        ),
                        in_ns_cmd(
                            p.netns.as_deref(),
                            &format!("ip link set dev {} mtu {}", p.name, verdict.needed),
                        ),
                    );
                }
            }
        }
    }

    fn nexthops(
        &mut self,
        backends: &BTreeMap<IpAddr, Vec<(String, Mode)>>,
        routes: &BTreeMap<IpAddr, Result<Route, String>>,
        attached: &[Attached],
    ) {
        // Next hop (gateway or the backend itself) and device -> backends.
        let mut hops: BTreeMap<(IpAddr, String), Vec<IpAddr>> = BTreeMap::new();
        for (addr, uses) in backends {
            let vips: Vec<&str> = uses.iter().map(|(n, _)| n.as_str()).collect();
            let r = match &routes[addr] {
                Ok(r) => r,
                Err(e) => {
                    self.report.problem(
                        "nexthop",
                        format!(
                            "backend {addr} ({}): no route ({e}): its packets are dropped \
                             (no_route)",
                            names(&vips)
                        ),
                        format!("ip route add {addr} via GATEWAY   (a router that reaches it)"),
                    );
                    continue;
                }
            };
            match r.kind.as_deref() {
                None | Some("unicast") => {}
                Some("local") => {
                    self.report.warn(
                        "nexthop",
                        format!(
                            "backend {addr} ({}) is an address of this host",
                            names(&vips)
                        ),
                        None,
                    );
                    continue;
                }
                Some(kind) => {
                    self.report.problem(
                        "nexthop",
                        format!(
                            "backend {addr} ({}): the route is {kind}: its packets are dropped",
                            names(&vips)
                        ),
                        format!("ip route replace {addr} via GATEWAY"),
                    );
                    continue;
                }
            }
            if !attached.is_empty() && !attached.iter().any(|a| a.name == r.dev) {
                self.report.problem(
                    "nexthop",
                    format!(
                        "backend {addr} ({}) is reached through {}, which the program may not \
                         send out of: its packets are dropped (no_tx_port)",
                        names(&vips),
                        r.dev
                    ),
                    self.serve_cmd(Some(&r.dev)),
                );
            }
            let dsr: Vec<&str> = uses
                .iter()
                .filter(|(_, m)| *m == Mode::Dsr)
                .map(|(n, _)| n.as_str())
                .collect();
            if let (Some(gw), false) = (r.gateway, dsr.is_empty()) {
                self.report.problem(
                    "nexthop",
                    format!(
                        "backend {addr} of dsr VIP {} is behind gateway {gw}: dsr only reaches \
                         backends on the same L2 segment (not_adjacent, dropped)",
                        names(&dsr)
                    ),
                    format!(
                        "curl -s -X PATCH {}/v1/vips/{} -H 'Content-Type: application/json' -d \
                         '{{\"mode\": \"ipip\"}}'   (or put {addr} on {}'s segment)",
                        self.opts.api.trim_end_matches('/'),
                        dsr[0],
                        r.dev
                    ),
                );
            }
            hops.entry((r.gateway.unwrap_or(*addr), r.dev.clone()))
                .or_default()
                .push(*addr);
        }
        for ((nh, dev), addrs) in hops {
            let whom = if addrs == [nh] {
                let vips: Vec<&str> = backends[&nh].iter().map(|(n, _)| n.as_str()).collect();
                format!("backend {nh} ({})", names(&vips))
            } else {
                let a: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                format!("gateway {nh} (for backends {})", names(&a))
            };
            match host::neighbour_state(nh, &dev) {
                Err(e) => self.report.warn(
                    "nexthop",
                    format!("{whom} on {dev}: cannot read the neighbour table: {e}"),
                    None,
                ),
                Ok(states) => match neighbour_verdict(&states) {
                    Ok(state) => self
                        .report
                        .ok("nexthop", format!("{whom} on {dev}: neighbour {state}")),
                    Err(state) => self.report.problem(
                        "nexthop",
                        format!(
                            "{whom} on {dev}: neighbour {state}: the program passes its packets \
                             to the kernel (no_neigh), which does not resolve it from them"
                        ),
                        format!(
                            "ping -c 1 -I {dev} {nh}   (resolves it; if it stays FAILED, {nh} is \
                             down or not on {dev}'s segment: check it and its link)"
                        ),
                    ),
                },
            }
        }
    }
}

/// (any IPv4 backend, any IPv6 backend) in a table.
fn backend_families(config: &Config) -> (bool, bool) {
    let mut f = (false, false);
    for b in config.vips.iter().flat_map(|v| &v.backends) {
        if b.weight == 0 {
            continue;
        }
        if b.address.is_ipv4() {
            f.0 = true;
        } else {
            f.1 = true;
        }
    }
    f
}

/// Whether encapsulated client packets fit an egress device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuVerdict {
    pub fits: bool,
    /// The MTU the egress path needs: client MTU + the largest overhead.
    pub needed: u32,
    /// Per VIP, the largest client packet that fits, smallest first.
    pub limits: Vec<(String, u32)>,
}

/// Pure: the egress path's MTU, the largest client-side MTU, and the
/// (VIP, encapsulation overhead) pairs that leave through it.
pub fn mtu_verdict(path_mtu: u32, client_mtu: u32, uses: &[(String, u32)]) -> MtuVerdict {
    let mut worst: BTreeMap<&str, u32> = BTreeMap::new();
    for (vip, o) in uses {
        let e = worst.entry(vip).or_insert(*o);
        *e = (*e).max(*o);
    }
    let max_overhead = worst.values().copied().max().unwrap_or(0);
    let needed = client_mtu + max_overhead;
    let mut limits: Vec<(String, u32)> = worst
        .into_iter()
        .map(|(v, o)| (v.to_string(), path_mtu.saturating_sub(o)))
        .collect();
    limits.sort_by_key(|(v, n)| (*n, v.clone()));
    MtuVerdict {
        fits: path_mtu >= needed,
        needed,
        limits,
    }
}

/// Pure: a neighbour entry's states -> Ok(usable state) or Err(what is
/// wrong). STALE, DELAY and PROBE still have a MAC the program uses.
pub fn neighbour_verdict(states: &[String]) -> Result<String, String> {
    const USABLE: [&str; 6] = ["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"];
    if states.is_empty() {
        return Err("missing (never resolved)".into());
    }
    let joined = states.join(",");
    if states.iter().any(|s| USABLE.contains(&s.as_str())) {
        Ok(joined)
    } else {
        Err(joined)
    }
}

/// Diagnoses a load balancer host.
pub fn diagnose_lb(opts: &LbOptions) -> Report {
    let mut lb = Lb {
        opts,
        report: Report::new("load balancer"),
        pinned: Vec::new(),
    };
    // The daemon's fix names the interfaces it has links for.
    let dir = pin::instance_dir(&opts.bpffs, &opts.instance);
    lb.pinned = pin::links(&dir).into_iter().map(|(i, _)| i).collect();
    let config = lb.daemon();
    let attached = lb.links();

    let links = match host::links() {
        Ok(l) => l,
        Err(e) => {
            lb.report.problem(
                "host",
                format!("cannot list interfaces: {e}"),
                "apt-get install -y iproute2".into(),
            );
            return lb.report;
        }
    };
    let nsids = host::netns_ids();
    let peers: HashMap<String, Result<Peer, String>> = links
        .iter()
        .filter(|l| {
            l.is_veth()
                && (attached.iter().any(|a| a.name == l.name) || opts.ifaces.contains(&l.name))
        })
        .map(|l| (l.name.clone(), peer_of(l, &nsids)))
        .collect();
    // Not attached (yet): check against the interfaces it should run on.
    let ports: Vec<Attached> = if attached.is_empty() {
        opts.ifaces
            .iter()
            .map(|i| Attached { name: i.clone() })
            .collect()
    } else {
        attached.clone()
    };
    if let Some((config, _)) = &config {
        lb.forwarding(&ports, config);
        lb.vip_routes(&ports, config);
    }
    lb.offloads(&links, &ports, &peers);
    if let Some((config, _)) = &config {
        lb.paths(config, &links, &ports, &peers);
    }
    lb.report
}

// ---------------------------------------------------------------------------
// Backend

/// `lethe doctor --backend`.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// The decap program's instance (`lethe decap --instance`).
    pub instance: String,
    pub bpffs: PathBuf,
    /// VIPs this host serves: each must be on lo.
    pub vips: Vec<IpAddr>,
    /// ipip or gue VIPs send to this host: the decap program must run.
    pub encap: bool,
    /// Interfaces the traffic arrives on (default: every interface that is
    /// up, but lo).
    pub ifaces: Vec<String>,
}

/// Pure: rp_filter on `dev`: the kernel uses max(all, dev); 1 (strict)
/// drops DSR traffic whose reply route differs. Some(sysctl settings that
/// fix it) when it is strict.
pub fn rp_filter_fix(dev: &str, all: i64, on_dev: i64) -> Option<Vec<String>> {
    if all.max(on_dev) != 1 {
        return None;
    }
    let mut sets = Vec::new();
    if all == 1 {
        sets.push("net.ipv4.conf.all.rp_filter=0".to_string());
    }
    if on_dev == 1 {
        sets.push(format!("{}=0", host::conf_name("ipv4", dev, "rp_filter")));
    }
    Some(sets)
}

/// Diagnoses a backend host.
pub fn diagnose_backend(opts: &BackendOptions) -> Report {
    let mut r = Report::new("backend");
    let links = match host::links() {
        Ok(l) => l,
        Err(e) => {
            r.problem(
                "host",
                format!("cannot list interfaces: {e}"),
                "apt-get install -y iproute2".into(),
            );
            return r;
        }
    };
    let ifaces: Vec<String> = if opts.ifaces.is_empty() {
        links
            .iter()
            .filter(|l| l.up && l.name != "lo")
            .map(|l| l.name.clone())
            .collect()
    } else {
        for i in &opts.ifaces {
            if !links.iter().any(|l| &l.name == i) {
                r.problem(
                    "host",
                    format!("no interface {i} in this network namespace"),
                    "give --iface an interface `ip link show` lists, or run the doctor in the \
                     backend's namespace: nsenter --net=/run/netns/NAME lethe doctor --backend ..."
                        .into(),
                );
            }
        }
        opts.ifaces.clone()
    };

    // VIPs on lo.
    let on_lo = host::addresses("lo").unwrap_or_default();
    for vip in &opts.vips {
        if on_lo.contains(vip) {
            r.ok("vip", format!("{vip} is on lo"));
        } else {
            let (fam, len) = if vip.is_ipv4() {
                ("", 32)
            } else {
                (" -6", 128)
            };
            r.problem(
                "vip",
                format!(
                    "{vip} is not on lo: packets to it (DSR, or decapsulated) are not for this \
                     host and are dropped or forwarded"
                ),
                format!("ip{fam} addr add {vip}/{len} dev lo"),
            );
        }
    }
    if opts.vips.is_empty() {
        let global: Vec<IpAddr> = on_lo.iter().copied().filter(|a| !a.is_loopback()).collect();
        if global.is_empty() {
            r.warn(
                "vip",
                "no --vip given and no VIP on lo: if this host serves DSR, ipip or gue VIPs, \
                 each must be on lo"
                    .into(),
                Some("ip addr add VIP/32 dev lo".into()),
            );
        } else {
            let list: Vec<String> = global.iter().map(|a| a.to_string()).collect();
            r.ok(
                "vip",
                format!("on lo (no --vip given to check): {}", names(&list)),
            );
        }
    }
    // Any IPv4 address on lo but loopback's is answered for in ARP unless
    // arp_ignore/arp_announce say otherwise.
    let lo_v4: Vec<IpAddr> = on_lo
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() && !a.is_loopback())
        .collect();

    // rp_filter, arp_ignore, arp_announce: the kernel uses max(all, dev).
    let all = |key| host::conf("ipv4", "all", key);
    for dev in &ifaces {
        let (Some(a), Some(d)) = (all("rp_filter"), host::conf("ipv4", dev, "rp_filter")) else {
            continue;
        };
        match rp_filter_fix(dev, a, d) {
            None => r.ok(
                "rp_filter",
                format!(
                    "{dev}: {} (all {a}, {dev} {d})",
                    if a.max(d) == 0 { "off" } else { "loose" }
                ),
            ),
            Some(sets) => r.problem(
                "rp_filter",
                format!(
                    "{dev}: strict (all {a}, {dev} {d}): packets are dropped unless this host \
                     would route their source back out of {dev} (asymmetric paths, DSR)"
                ),
                format!("sysctl -w {}", sets.join(" ")),
            ),
        }
    }
    if !lo_v4.is_empty() {
        let list: Vec<String> = lo_v4.iter().map(|a| a.to_string()).collect();
        for dev in &ifaces {
            let (Some(ai), Some(di)) = (all("arp_ignore"), host::conf("ipv4", dev, "arp_ignore"))
            else {
                continue;
            };
            let (Some(aa), Some(da)) =
                (all("arp_announce"), host::conf("ipv4", dev, "arp_announce"))
            else {
                continue;
            };
            let mut ok = true;
            if ai.max(di) < 1 {
                ok = false;
                r.problem(
                    "arp",
                    format!(
                        "{dev}: arp_ignore {} (all {ai}, {dev} {di}): this host answers ARP for \
                         the VIP{} on lo ({}) and steals the load balancer's traffic",
                        ai.max(di),
                        if list.len() > 1 { "s" } else { "" },
                        names(&list)
                    ),
                    "sysctl -w net.ipv4.conf.all.arp_ignore=1".into(),
                );
            }
            if aa.max(da) < 2 {
                ok = false;
                r.problem(
                    "arp",
                    format!(
                        "{dev}: arp_announce {} (all {aa}, {dev} {da}): ARP requests from this \
                         host may carry a VIP as their source, teaching neighbours to send the \
                         VIP here",
                        aa.max(da)
                    ),
                    "sysctl -w net.ipv4.conf.all.arp_announce=2".into(),
                );
            }
            if ok {
                r.ok(
                    "arp",
                    format!(
                        "{dev}: arp_ignore {}, arp_announce {}",
                        ai.max(di),
                        aa.max(da)
                    ),
                );
            }
        }
    }

    decap(&mut r, opts, &ifaces);

    // Replies leave through veths too; nat replies pass a load balancer's
    // XDP program, which loses "checksum not yet computed".
    for l in links
        .iter()
        .filter(|l| l.is_veth() && ifaces.contains(&l.name))
    {
        if let Ok(f) = host::features(&l.name) {
            if f.tx_csum {
                r.warn(
                    "offload",
                    format!(
                        "{} (veth): tx checksumming on: packets it sends lose \"checksum not yet \
                         computed\" where native XDP redirects them (nat replies through the \
                         load balancer)",
                        l.name
                    ),
                    Some(format!("ethtool -K {} tx off", l.name)),
                );
            }
        }
    }
    r
}

fn decap(r: &mut Report, opts: &BackendOptions, ifaces: &[String]) {
    let dir = crate::decap::pin_dir(&opts.bpffs, &opts.instance);
    let attach_cmd =
        |dev: &str| format!("lethe decap attach {dev}{}", instance_arg(&opts.instance));
    let pins = pin::links(&dir);
    if opts.encap && !pin::is_bpffs(&opts.bpffs) {
        r.problem(
            "decap",
            format!(
                "no bpffs at {}: the decap program's pins are invisible (`ip netns exec` \
                 remounts /sys)",
                opts.bpffs.display()
            ),
            "run the doctor under `nsenter --net=/run/netns/NAME` instead of `ip netns exec`"
                .into(),
        );
        return;
    }
    let mut running = Vec::new();
    for (ifname, path) in &pins {
        match dataplane::pinned_link(path) {
            Ok(Some(link)) if link.ifindex != 0 => {
                let here = host::ifname(link.ifindex);
                if here.as_deref() != Some(ifname.as_str()) {
                    r.warn(
                        "decap",
                        format!(
                            "{ifname}: the decap link runs on ifindex {}, not {ifname} in this \
                             network namespace: run the doctor in the backend's namespace",
                            link.ifindex
                        ),
                        None,
                    );
                    continue;
                }
                let state = dataplane::xdp_query(link.ifindex);
                let ids = format!("program {}, link {}", link.prog_id, link.link_id);
                match state {
                    Ok(s) if s.mode == XdpMode::Native && s.native_prog_id == link.prog_id => {
                        r.ok(
                            "decap",
                            format!("{ifname}: decap attached in native mode ({ids})"),
                        );
                        running.push(ifname.clone());
                    }
                    Ok(s) if s.mode == XdpMode::Generic && s.generic_prog_id == link.prog_id => {
                        r.warn(
                            "decap",
                            format!("{ifname}: decap attached in generic (SKB) mode ({ids}): slower than native"),
                            Some(format!(
                                "lethe decap detach {ifname}{inst} && lethe decap attach {ifname}{inst}",
                                inst = instance_arg(&opts.instance)
                            )),
                        );
                        running.push(ifname.clone());
                    }
                    Ok(s) => r.warn(
                        "decap",
                        format!(
                            "{ifname}: runs XDP program {} ({:?}), not the decap link's ({ids})",
                            s.prog_id, s.mode
                        ),
                        None,
                    ),
                    Err(e) => r.warn("decap", format!("{ifname}: cannot query XDP: {e}"), None),
                }
            }
            Ok(_) => {
                let msg =
                    format!("{ifname}: the pinned decap link is defunct (its interface is gone)");
                if opts.encap {
                    r.problem("decap", msg, attach_cmd(ifname));
                } else {
                    r.warn("decap", msg, Some(attach_cmd(ifname)));
                }
            }
            Err(e) => r.warn(
                "decap",
                format!("{}: cannot open the pinned link: {e}", path.display()),
                None,
            ),
        }
    }
    if !opts.encap {
        if running.is_empty() {
            r.ok(
                "decap",
                "no decap program (--encap not given: no ipip/gue VIP sends here)".into(),
            );
        }
        return;
    }
    let wanted: Vec<&String> = if opts.ifaces.is_empty() {
        Vec::new()
    } else {
        ifaces.iter().collect()
    };
    for w in &wanted {
        if !running.contains(w) {
            r.problem(
                "decap",
                format!(
                    "{w}: no decap program: ipip and gue packets from the load balancer arrive \
                     encapsulated and are not delivered (no tunnel module strips them)"
                ),
                attach_cmd(w),
            );
        }
    }
    if wanted.is_empty() && running.is_empty() {
        let dev = ifaces.first().map_or("IFACE", |s| s.as_str());
        r.problem(
            "decap",
            format!(
                "no decap program attached ({}): ipip and gue packets from the load balancer \
                 arrive encapsulated and are not delivered (no tunnel module strips them)",
                dir.display()
            ),
            attach_cmd(dev),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_fits_or_names_the_limit_per_vip() {
        let uses = vec![
            ("ipip4".to_string(), 20),
            ("ipip6".to_string(), 40),
            ("gue6".to_string(), 48),
            ("gue4".to_string(), 28),
            ("ipip4".to_string(), 20),
        ];
        let v = mtu_verdict(1600, 1500, &uses);
        assert!(v.fits);
        assert_eq!(v.needed, 1548);
        let v = mtu_verdict(1500, 1500, &uses);
        assert!(!v.fits);
        assert_eq!(
            v.limits,
            vec![
                ("gue6".to_string(), 1452),
                ("ipip6".to_string(), 1460),
                ("gue4".to_string(), 1472),
                ("ipip4".to_string(), 1480)
            ]
        );
        assert!(mtu_verdict(1520, 1500, &[("a".into(), 20)]).fits);
        assert!(!mtu_verdict(1519, 1500, &[("a".into(), 20)]).fits);
    }

    #[test]
    fn neighbour_states() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(neighbour_verdict(&s(&["REACHABLE"])).is_ok());
        assert!(neighbour_verdict(&s(&["STALE"])).is_ok());
        assert!(neighbour_verdict(&s(&["PERMANENT"])).is_ok());
        assert!(neighbour_verdict(&s(&["FAILED"])).is_err());
        assert!(neighbour_verdict(&s(&["INCOMPLETE"])).is_err());
        assert_eq!(
            neighbour_verdict(&[]).unwrap_err(),
            "missing (never resolved)"
        );
    }

    #[test]
    fn rp_filter_is_the_max_of_all_and_dev() {
        assert_eq!(rp_filter_fix("eth0", 0, 0), None);
        assert_eq!(rp_filter_fix("eth0", 2, 1), None);
        assert_eq!(rp_filter_fix("eth0", 0, 2), None);
        assert_eq!(
            rp_filter_fix("eth0", 1, 0),
            Some(vec!["net.ipv4.conf.all.rp_filter=0".to_string()])
        );
        assert_eq!(
            rp_filter_fix("eth0", 1, 1),
            Some(vec![
                "net.ipv4.conf.all.rp_filter=0".to_string(),
                "net.ipv4.conf.eth0.rp_filter=0".to_string()
            ])
        );
        assert_eq!(
            rp_filter_fix("eth0", 0, 1),
            Some(vec!["net.ipv4.conf.eth0.rp_filter=0".to_string()])
        );
    }

    #[test]
    fn text_has_a_line_per_finding_and_the_fix_below() {
        let mut r = Report::new("backend");
        r.ok("vip", "10.100.0.1 is on lo".into());
        r.problem("arp", "eth0: arp_ignore 0".into(), "sysctl -w x=1".into());
        let t = r.text();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ok       vip"), "{t}");
        assert!(lines[1].starts_with("PROBLEM  arp"), "{t}");
        assert!(
            lines[2].trim_start().starts_with("fix: sysctl -w x=1"),
            "{t}"
        );
        assert_eq!(lines[3], "backend: 1 problem, 0 warnings");
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["problems"], 1);
        assert_eq!(j["findings"][1]["status"], "problem");
        assert_eq!(j["findings"][1]["fix"], "sysctl -w x=1");
    }
}
