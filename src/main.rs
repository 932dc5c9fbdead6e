//! The `lethe` binary: for now the foreground forwarder (`run`) and the
//! offline tools on a configuration file (`plan`, `trace`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use lethe::config::{Config, Protocol};
use lethe::dataplane::{AttachMode, Dataplane};
use lethe::flow_hash::FlowKey;
use lethe::plan::Plan;

#[derive(Parser)]
#[command(name = "lethe", version, about = "A stateless L4 load balancer on XDP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP program, apply CONFIG, attach to each interface and
    /// forward until SIGINT/SIGTERM; then detach.
    Run {
        /// Interface to attach to (repeatable). Each one is also allowed as
        /// an egress port.
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Configuration file (JSON, the shape of GET /v1/config).
        #[arg(long)]
        config: PathBuf,
        /// Attach in generic (SKB) mode instead of native: slower, for
        /// drivers without XDP support.
        #[arg(long)]
        generic: bool,
        /// Print counters every N seconds (0: only at exit).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
    },
    /// Validate CONFIG and show each VIP's table: size and every backend's share.
    Plan { config: PathBuf },
    /// Which backend CONFIG gives one flow, and why (the reference model).
    Trace {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        src: IpAddr,
        #[arg(long)]
        sport: u16,
        #[arg(long)]
        dst: IpAddr,
        #[arg(long)]
        dport: u16,
        #[arg(long, value_enum, default_value = "tcp")]
        proto: Proto,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Proto {
    Tcp,
    Udp,
}

fn read_plan(path: &Path) -> Result<Plan> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: Config = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid configuration", path.display()))?;
    Plan::new(&config).with_context(|| format!("{} cannot be applied", path.display()))
}

fn show_plan(plan: &Plan) {
    println!("hash seed {:#x}, {} VIPs", plan.hash_seed, plan.vips.len());
    for v in &plan.vips {
        let c = &v.vip;
        println!(
            "\n{} {}:{}/{} mode {}{} table {} slots",
            c.name,
            c.address,
            c.port,
            c.protocol,
            c.mode,
            if c.sticky { " sticky" } else { "" },
            c.table_size
        );
        let counts = v.table.slot_counts();
        for b in &c.backends {
            let slots = v
                .table
                .backends
                .iter()
                .position(|a| *a == b.address)
                .map_or(0, |i| counts[i]);
            println!(
                "  {:<40} weight {:>5}  slots {:>7}  share {:>6.2}%",
                b.address,
                b.weight,
                slots,
                100.0 * f64::from(slots) / f64::from(c.table_size)
            );
        }
        if v.table.is_empty() {
            println!("  (no backend in the table: packets to this VIP are dropped)");
        }
    }
}

fn trace(plan: &Plan, key: &FlowKey) -> Result<()> {
    match lethe::model::pick(plan, key) {
        Ok(p) => {
            let v = &plan.vips[p.vip].vip;
            println!(
                "{} {}:{} -> {}:{} matches VIP {} ({}:{}/{}, mode {})",
                Protocol::from_number(key.proto).map_or("?".into(), |p| p.to_string()),
                key.src,
                key.sport,
                key.dst,
                key.dport,
                v.name,
                v.address,
                v.port,
                v.protocol,
                v.mode
            );
            println!(
                "hash {:#010x}{} -> slot {} of {} -> backend {}",
                p.hash,
                if v.sticky {
                    " (sticky: source port ignored)"
                } else {
                    ""
                },
                p.slot,
                v.table_size,
                p.backend
            );
            Ok(())
        }
        Err(reason) => bail!("no backend: {} ({})", reason.name(), reason.describe()),
    }
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name).context("interface name")?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("no interface named {name:?}");
    }
    Ok(idx)
}

fn print_counters(dp: &Dataplane, plan: &Plan) -> Result<()> {
    let mut line = Vec::new();
    for (reason, c) in dp.reason_counters()? {
        if c.packets > 0 {
            line.push(format!("{}={}", reason.name(), c.packets));
        }
    }
    println!(
        "reasons: {}",
        if line.is_empty() {
            "no packets yet".into()
        } else {
            line.join(" ")
        }
    );
    for v in &plan.vips {
        if let Some(c) = dp.vip_counter(&v.key())? {
            println!(
                "  vip {:<20} packets {:>12} bytes {:>15}",
                v.vip.name, c.packets, c.bytes
            );
        }
    }
    Ok(())
}

/// Blocks SIGINT and SIGTERM so they can be waited for with a timeout.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `timeout` for a blocked signal; true if one arrived.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: set and ts are valid for the call; info may be null.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) > 0 }
}

fn run(ifaces: &[String], config: &Path, generic: bool, stats_interval: u64) -> Result<()> {
    let plan = read_plan(config)?;
    let signals = block_signals();
    let dp = Dataplane::load().context("loading the XDP program (are you root?)")?;
    let indexes = ifaces
        .iter()
        .map(|i| ifindex(i))
        .collect::<Result<Vec<_>>>()?;
    for &idx in &indexes {
        dp.allow_tx_port(idx)?;
    }
    dp.apply(&plan)?;
    let mode = if generic {
        eprintln!("warning: generic (SKB) mode: every packet pays for an skb; use native mode in production");
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    let mut links = Vec::new();
    for (name, &idx) in ifaces.iter().zip(&indexes) {
        links.push(
            dp.attach(idx, mode)
                .with_context(|| format!("attaching to {name}"))?,
        );
        println!("attached to {name} (ifindex {idx}, {mode:?} mode)");
    }
    println!(
        "forwarding {} VIPs; SIGINT or SIGTERM stops and detaches",
        plan.vips.len()
    );
    let tick = if stats_interval == 0 {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(stats_interval)
    };
    while !wait_signal(&signals, tick) {
        if stats_interval > 0 {
            print_counters(&dp, &plan)?;
        }
    }
    print_counters(&dp, &plan)?;
    drop(links);
    println!("detached");
    Ok(())
}

fn main() -> ExitCode {
    // Like any Unix filter: `lethe plan x | head` ends quietly.
    // SAFETY: restoring the default disposition of one signal at start-up.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            ifaces,
            config,
            generic,
            stats_interval,
        } => run(&ifaces, &config, generic, stats_interval),
        Command::Plan { config } => read_plan(&config).map(|p| show_plan(&p)),
        Command::Trace {
            config,
            src,
            sport,
            dst,
            dport,
            proto,
        } => read_plan(&config).and_then(|plan| {
            let proto = match proto {
                Proto::Tcp => Protocol::Tcp,
                Proto::Udp => Protocol::Udp,
            };
            trace(
                &plan,
                &FlowKey {
                    src,
                    dst,
                    sport,
                    dport,
                    proto: proto.number(),
                },
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
