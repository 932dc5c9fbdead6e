//! The `lethe` binary: the daemon (`serve`, `down`), the client of its API
//! (`vip`, `backend`, `config`, `stats`, `trace`), and offline tools on a
//! configuration file (`plan`, `trace --config`, `run`, `openapi`), and
//! `doctor`, which checks a load balancer or backend host.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use lethe::abi::Mode;
use lethe::cli::{self, Client};
use lethe::config::{Config, Protocol};
use lethe::dataplane::{AttachMode, Dataplane};
use lethe::flow_hash::FlowKey;
use lethe::plan::Plan;
use lethe::serve::{self, ServeOptions};

#[derive(Parser)]
#[command(name = "lethe", version, about = "A stateless L4 load balancer on XDP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ApiArgs {
    /// The daemon's API.
    #[arg(
        long,
        global = true,
        env = "LETHE_API",
        default_value = "http://127.0.0.1:9180"
    )]
    api: String,
    /// Bearer token for changes (when the daemon runs with --token).
    #[arg(long, global = true, env = "LETHE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ApiArgs {
    fn client(&self) -> Client {
        Client::new(&self.api, self.token.clone())
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: load and pin, restore the saved configuration,
    /// attach, serve the REST API.
    Serve {
        /// Interface to attach to (repeatable); also an allowed egress port.
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        #[arg(long, default_value = "127.0.0.1:9180")]
        listen: SocketAddr,
        /// The configuration is saved in <state-dir>/<instance>/config.json.
        #[arg(long, default_value = "/var/lib/lethe")]
        state_dir: PathBuf,
        /// Pins live in <bpffs>/lethe/<instance>/.
        #[arg(long, default_value = "default")]
        instance: String,
        /// Require `Authorization: Bearer <token>` on every change.
        #[arg(long, env = "LETHE_SERVE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Attach in generic (SKB) mode instead of native (slow; warned).
        #[arg(long)]
        generic: bool,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        #[arg(long, default_value = "/sys/fs/bpf", hide = true)]
        bpffs: PathBuf,
    },
    /// Detach an instance from its interfaces and remove its pins.
    Down {
        #[arg(long, default_value = "default")]
        instance: String,
        #[arg(long, default_value = "/sys/fs/bpf", hide = true)]
        bpffs: PathBuf,
    },
    /// VIPs of the running daemon.
    Vip {
        #[command(subcommand)]
        command: VipCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Backends of a VIP of the running daemon.
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The whole configuration of the running daemon.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Counters of the running daemon: per reason, VIP, backend.
    Stats {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Which backend one flow gets, and why: asks the daemon (model and
    /// kernel), or with --config the model alone, offline.
    Trace {
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
        /// Answer from this configuration file instead of the daemon.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Follow the running daemon's events: sampled decisions (set a VIP's
    /// event_sample_rate), health transitions, changes. Reconnects when the
    /// daemon restarts.
    Tail {
        #[arg(long)]
        vip: Option<String>,
        #[arg(long)]
        backend: Option<IpAddr>,
        /// tx, redirect, pass, drop
        #[arg(long)]
        verdict: Option<String>,
        /// decision, health, fail_open, config
        #[arg(long)]
        kind: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Stop after this many events (1 or more; without it, follow until
        /// interrupted).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// On a backend host: strip the ipip and gue encapsulations the load
    /// balancer adds, for hosts without tunnel modules.
    Decap {
        #[command(subcommand)]
        command: DecapCommand,
        #[arg(long, default_value = "/sys/fs/bpf", hide = true, global = true)]
        bpffs: PathBuf,
        /// Pins live in <bpffs>/lethe-decap[-<instance>]/.
        #[arg(long, default_value = "default", global = true)]
        instance: String,
    },
    /// Check this host for what breaks forwarding, and say how to fix it.
    ///
    /// One line per check (ok, WARN, PROBLEM), each problem with the command
    /// that fixes it. On a load balancer: the daemon, the attached program and its mode,
    /// forwarding, checksum offload and GRO on veths, MTU headroom for
    /// ipip/gue, next hops of every backend. With --backend: VIPs on lo,
    /// rp_filter, arp_ignore/arp_announce, the decap program. Exit status: 0
    /// without problems (warnings allowed), 1 with any. Run it in the
    /// namespace of what it checks, with `nsenter --net=/run/netns/NAME`
    /// (not `ip netns exec`, which hides /sys/fs/bpf).
    Doctor(DoctorArgs),
    /// Validate a configuration file and show each VIP's table shares.
    Plan { config: PathBuf },
    /// Forward in the foreground from a configuration file, without the API
    /// or pins: attach, print counters, detach on SIGINT/SIGTERM.
    Run {
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        generic: bool,
        /// Print counters every N seconds (0: only at exit).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
    },
    /// Print the OpenAPI document of the REST API (api/openapi.json).
    Openapi,
}

#[derive(Args)]
struct DoctorArgs {
    /// Check a backend host instead of a load balancer.
    #[arg(long)]
    backend: bool,
    /// The daemon's instance (pins in <bpffs>/lethe/<instance>/, saved
    /// configuration in <state-dir>/<instance>/); with --backend, the
    /// decap program's (`lethe decap --instance`).
    #[arg(long, default_value = lethe::doctor::DEFAULT_INSTANCE)]
    instance: String,
    /// Load balancer: interfaces the program must be attached to
    /// (default: those it has links for). Backend: interfaces traffic
    /// arrives on (default: every interface that is up, but lo).
    /// Repeatable.
    #[arg(long = "iface")]
    ifaces: Vec<String>,
    /// Load balancer: the daemon's API, asked for /ready and the
    /// configuration (VIPs and backends).
    #[arg(long, env = "LETHE_API", default_value = lethe::doctor::DEFAULT_API)]
    api: String,
    /// Load balancer: where the daemon saves its configuration; read
    /// when the API does not answer.
    #[arg(long, default_value = lethe::doctor::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Backend: a VIP this host serves, which must be on lo. Repeatable.
    /// (arp_ignore/arp_announce are checked whenever an IPv4 address is on
    /// lo.)
    #[arg(long = "vip", requires = "backend")]
    vips: Vec<IpAddr>,
    /// Backend: ipip or gue VIPs send to this host, so the decap
    /// program must be attached (`lethe decap attach`).
    #[arg(long, requires = "backend")]
    encap: bool,
    /// Where bpffs is mounted (the pins).
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// One JSON document (role, problems, warnings, findings) instead of
    /// lines.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum VipCommand {
    List {
        #[arg(long)]
        json: bool,
    },
    Add {
        name: String,
        #[arg(long)]
        address: IpAddr,
        /// 0: every port.
        #[arg(long)]
        port: u16,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Proto,
        #[arg(long, value_enum, default_value = "dsr")]
        mode: ModeArg,
        #[arg(long)]
        sticky: bool,
        #[arg(long)]
        table_size: Option<u32>,
    },
    Del {
        name: String,
    },
}

#[derive(Subcommand)]
enum BackendCommand {
    List {
        vip: String,
        #[arg(long)]
        json: bool,
    },
    Add {
        vip: String,
        address: IpAddr,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[arg(long)]
        port: Option<u16>,
    },
    /// Change a backend's weight (0 drains it) or port.
    Set {
        vip: String,
        address: IpAddr,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long)]
        port: Option<u16>,
    },
    Del {
        vip: String,
        address: IpAddr,
    },
}

#[derive(Subcommand)]
enum DecapCommand {
    /// Attach (or upgrade in place) the decap program on IFACE; it stays
    /// attached after this command returns.
    Attach {
        iface: String,
        /// GUE destination port to strip (0: no GUE).
        #[arg(long, default_value_t = lethe::config::DEFAULT_GUE_PORT)]
        gue_port: u16,
        #[arg(long)]
        generic: bool,
    },
    /// Detach the decap program from IFACE (and unpin it when no interface
    /// is left).
    Detach { iface: String },
    /// Where it is attached and what it did.
    Status,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the configuration (JSON); its ETag goes to stderr.
    Get,
    /// Replace the whole configuration with FILE, as one transaction.
    Apply {
        file: PathBuf,
        /// Apply only if the daemon's configuration still has this ETag.
        #[arg(long)]
        if_match: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
}

impl From<Proto> for Protocol {
    fn from(p: Proto) -> Protocol {
        match p {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Dsr,
    Ipip,
    Gue,
    Nat,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Dsr => Mode::Dsr,
            ModeArg::Ipip => Mode::Ipip,
            ModeArg::Gue => Mode::Gue,
            ModeArg::Nat => Mode::Nat,
        }
    }
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
            "\n{} {}/{} mode {}{} table {} slots",
            c.name,
            SocketAddr::new(c.address, c.port),
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
        } else {
            println!("  digest {}", v.table.digest());
        }
    }
}

fn trace_offline(plan: &Plan, key: &FlowKey) -> Result<()> {
    match lethe::model::pick(plan, key) {
        Ok(p) => {
            let v = &plan.vips[p.vip].vip;
            println!(
                "{} {} -> {} matches VIP {} ({}/{}, mode {})",
                Protocol::from_number(key.proto).map_or("?".into(), |p| p.to_string()),
                SocketAddr::new(key.src, key.sport),
                SocketAddr::new(key.dst, key.dport),
                v.name,
                SocketAddr::new(v.address, v.port),
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
        .map(|i| serve::ifindex(i))
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

/// `lethe doctor`: exit status 1 when a problem is found, 2 when the
/// diagnosis could not run.
fn doctor(args: DoctorArgs) -> ExitCode {
    let DoctorArgs {
        backend,
        instance,
        ifaces,
        api,
        state_dir,
        vips,
        encap,
        bpffs,
        json,
    } = args;
    if let Err(e) = serve::check_instance(&instance) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let report = if backend {
        lethe::doctor::diagnose_backend(&lethe::doctor::BackendOptions {
            instance,
            bpffs,
            vips,
            encap,
            ifaces,
        })
    } else {
        lethe::doctor::diagnose_lb(&lethe::doctor::LbOptions {
            instance,
            api,
            state_dir,
            bpffs,
            ifaces,
        })
    };
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.problems() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never in files or journals.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Serve {
            ifaces,
            listen,
            state_dir,
            instance,
            token,
            generic,
            log_format,
            bpffs,
        } => {
            init_logging(log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(serve::serve(ServeOptions {
                ifaces,
                listen,
                state_dir,
                instance,
                token,
                generic,
                bpffs,
            }))
        }
        Command::Down { instance, bpffs } => serve::down(&bpffs, &instance),
        Command::Vip { command, api } => {
            let c = api.client();
            match command {
                VipCommand::List { json } => cli::vip_list(&c, json),
                VipCommand::Add {
                    name,
                    address,
                    port,
                    protocol,
                    mode,
                    sticky,
                    table_size,
                } => cli::vip_add(
                    &c,
                    cli::NewVip {
                        name,
                        address,
                        port,
                        protocol: protocol.into(),
                        mode: mode.into(),
                        sticky,
                        table_size,
                    },
                ),
                VipCommand::Del { name } => cli::vip_del(&c, &name),
            }
        }
        Command::Backend { command, api } => {
            let c = api.client();
            match command {
                BackendCommand::List { vip, json } => cli::backend_list(&c, &vip, json),
                BackendCommand::Add {
                    vip,
                    address,
                    weight,
                    port,
                } => cli::backend_add(&c, &vip, address, weight, port),
                BackendCommand::Set {
                    vip,
                    address,
                    weight,
                    port,
                } => cli::backend_set(&c, &vip, address, weight, port),
                BackendCommand::Del { vip, address } => cli::backend_del(&c, &vip, address),
            }
        }
        Command::Config { command, api } => {
            let c = api.client();
            match command {
                ConfigCommand::Get => cli::config_get(&c),
                ConfigCommand::Apply { file, if_match } => {
                    cli::config_apply(&c, &file, if_match.as_deref())
                }
            }
        }
        Command::Stats { json, api } => cli::stats(&api.client(), json),
        Command::Tail {
            vip,
            backend,
            verdict,
            kind,
            json,
            count,
            api,
        } => cli::tail(
            &api.api,
            &cli::TailFilter {
                vip,
                backend,
                verdict,
                kind,
            },
            json,
            // --count is at least 1 (its value parser).
            count.and_then(NonZeroU64::new),
        ),
        Command::Trace {
            src,
            sport,
            dst,
            dport,
            proto,
            config,
            api,
        } => match config {
            Some(path) => {
                let plan = read_plan(&path)?;
                let proto = Protocol::from(proto).number();
                trace_offline(
                    &plan,
                    &FlowKey {
                        src,
                        dst,
                        sport,
                        dport,
                        proto,
                    },
                )
            }
            None => cli::trace(&api.client(), src, sport, dst, dport, proto.into()),
        },
        Command::Decap {
            command,
            bpffs,
            instance,
        } => match command {
            DecapCommand::Attach {
                iface,
                gue_port,
                generic,
            } => lethe::decap::attach(&bpffs, &instance, &iface, gue_port, generic),
            DecapCommand::Detach { iface } => lethe::decap::detach(&bpffs, &instance, &iface),
            DecapCommand::Status => lethe::decap::status(&bpffs, &instance),
        },
        Command::Doctor(_) => unreachable!("main runs the doctor"),
        Command::Plan { config } => read_plan(&config).map(|p| show_plan(&p)),
        Command::Run {
            ifaces,
            config,
            generic,
            stats_interval,
        } => run(&ifaces, &config, generic, stats_interval),
        Command::Openapi => {
            print!("{}", lethe::api::openapi_json());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Like any Unix filter: `lethe plan x | head` ends quietly.
    // SAFETY: restoring the default disposition of one signal at start-up.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let command = Cli::parse().command;
    if let Command::Doctor(args) = command {
        return doctor(args);
    }
    match dispatch(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
