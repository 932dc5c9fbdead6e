//! `lethe serve`: the daemon. Loads the program with its maps pinned under
//! /sys/fs/bpf/lethe/<instance>/ (reusing and adopting what an earlier
//! daemon left; one daemon per instance, by a lock on that directory),
//! attaches (or upgrades the program on the pinned links in place),
//! restores the saved configuration, then serves the API.
//!
//! Stopping the daemon — SIGTERM, or kill -9 — detaches nothing: the pinned
//! links keep the program running on the pinned maps. `lethe down` detaches.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio_util::sync::CancellationToken;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::api::{self, ApiState};
use crate::control::Controller;
use crate::dataplane::{pin, AttachMode, Dataplane, LinkOutcome, XdpMode};
use crate::store::Store;
use crate::{events, health, neighbours, route_watch};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub ifaces: Vec<String>,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub instance: String,
    pub token: Option<String>,
    pub generic: bool,
    pub bpffs: PathBuf,
}

pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name).context("interface name")?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("no interface named {name:?}");
    }
    Ok(idx)
}

/// Instance names become directory names: keep them plain.
pub fn check_instance(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        bail!("instance name {name:?}: use 1-32 characters from [A-Za-z0-9_-]");
    }
    Ok(())
}

/// Resolves at the first SIGTERM or SIGINT (or when `cancel` is), and
/// cancels `cancel`. SIGHUP is logged and otherwise ignored: the
/// configuration changes over the API, and a hangup (a closed terminal)
/// must not stop the daemon as its default action would.
async fn shutdown_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => tracing::info!(
                "SIGHUP ignored: there is nothing to reload (change the configuration over the API)"
            ),
            _ = cancel.cancelled() => break,
        }
    }
    cancel.cancel();
}

/// How long a stopping daemon waits for open requests to finish (a
/// client stalled half-way through a body would hold it forever).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// After `cancel`: SHUTDOWN_GRACE, cut short by a second SIGTERM or SIGINT.
async fn grace_over(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    cancel.cancelled().await;
    // Made now, it hears only signals after the one that began the stop.
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Holds the instance's lock for the daemon's life: one daemon per
/// instance. A second one would load its own program and move the pinned
/// links onto it, and its copies of the settings and filters (global data,
/// never pinned) would be the ones no daemon updates after it exits.
fn lock_instance(dir: &std::path::Path, instance: &str) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    try_lock(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another `lethe serve` runs instance {instance:?} (it holds the lock on {}); \
             stop it first, or pick another --instance",
            dir.display()
        )
    })
}

/// The instance directory's lock (flock, exclusive, not waiting): None
/// while a daemon holds it.
fn try_lock(dir: &std::path::Path) -> Result<Option<std::fs::File>> {
    let f = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: a valid open fd.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(e).with_context(|| format!("locking {}", dir.display()));
    }
    Ok(Some(f))
}

/// Attaches to (or upgrades the program on) every --iface, and upgrades
/// the instance's other pinned links. The link handles are only fds: the
/// links are pinned and stay attached when these are dropped. If an
/// interface fails, the links this call attached anew are detached again:
/// a start that fails must not leave interfaces balanced by no daemon.
fn attach_all(
    dp: &Dataplane,
    dir: &std::path::Path,
    opts: &ServeOptions,
    indexes: &[u32],
) -> Result<Vec<crate::dataplane::XdpLink>> {
    let mode = if opts.generic {
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    let mut links = Vec::new();
    let mut attached_now: Vec<String> = Vec::new();
    for (name, &idx) in opts.ifaces.iter().zip(indexes) {
        let (link, outcome) = match dp.attach_pinned(dir, name, idx, mode) {
            Ok(attached) => attached,
            Err(e) => {
                for undo in &attached_now {
                    if let Err(e) = pin::detach_link(dir, undo) {
                        tracing::error!(iface = %undo, error = %e, "detaching after a failed start");
                    }
                }
                let hint = match (&e, mode) {
                    (crate::dataplane::DataplaneError::Attach { source, .. }, AttachMode::Native)
                        if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                    {
                        " (its driver has no native XDP: --generic runs it in the network stack, slower)"
                    }
                    _ => "",
                };
                return Err(anyhow::Error::new(e).context(format!("attaching to {name}{hint}")));
            }
        };
        let (link_id, prog_id) = link.ids()?;
        match outcome {
            LinkOutcome::Attached => {
                attached_now.push(name.clone());
                tracing::info!(iface = %name, ?mode, link_id, prog_id, "attached")
            }
            LinkOutcome::Kept => {
                tracing::info!(iface = %name, link_id, prog_id, "already attached")
            }
            LinkOutcome::Upgraded { previous_prog_id } => {
                tracing::info!(iface = %name, link_id, prog_id, previous_prog_id, "program upgraded in place")
            }
        }
        warn_about_mode(name, idx, mode);
        links.push(link);
    }
    for (name, outcome) in dp
        .upgrade_other_links(dir, &opts.ifaces)
        .context("upgrading the instance's other links")?
    {
        tracing::warn!(
            iface = %name,
            ?outcome,
            "still attached though not in --iface: it runs this daemon's program \
             (`lethe down` detaches every interface)"
        );
    }
    Ok(links)
}

/// The --ifaces as the daemon last attached them, by index: an interface
/// deleted and made again (a driver reload, a re-created veth or bond)
/// comes back with another index, and its link went with the old one.
struct Ifaces {
    indexes: Vec<u32>,
}

impl Ifaces {
    /// Attaches again every --iface whose index changed (or that is back),
    /// allows its new index as an egress port and moves `trace` to it;
    /// false while one is missing (the daemon is then not ready).
    fn relink(
        &mut self,
        dp: &Dataplane,
        control: &Controller,
        dir: &std::path::Path,
        opts: &ServeOptions,
    ) -> bool {
        let mode = if opts.generic {
            AttachMode::Generic
        } else {
            AttachMode::Native
        };
        let mut all = true;
        for (i, name) in opts.ifaces.iter().enumerate() {
            let Ok(now) = ifindex(name) else {
                if self.indexes[i] != 0 {
                    tracing::warn!(iface = %name, "interface gone: not ready until it is back");
                    self.indexes[i] = 0;
                }
                all = false;
                continue;
            };
            if now == self.indexes[i] {
                continue;
            }
            let attached = dp
                .allow_tx_port(now)
                .and_then(|()| dp.attach_pinned(dir, name, now, mode));
            match attached {
                Ok((link, outcome)) => {
                    tracing::info!(iface = %name, ifindex = now, ?outcome, ids = ?link.ids().ok(),
                        "interface back: attached again");
                    self.indexes[i] = now;
                    if i == 0 {
                        control.set_trace_ifindex(now);
                    }
                }
                Err(e) => {
                    tracing::error!(iface = %name, error = %e, "attaching to an interface that came back");
                    all = false;
                }
            }
        }
        all
    }
}

/// Says how the program really runs on an interface: a kept or upgraded
/// link keeps the mode it was attached in, whatever this start asked for.
fn warn_about_mode(name: &str, ifindex: u32, asked: AttachMode) {
    let running = match crate::dataplane::xdp_query(ifindex) {
        Ok(state) => state.mode,
        Err(e) => {
            tracing::warn!(iface = %name, error = %e, "cannot tell the XDP mode");
            return;
        }
    };
    match (running, asked) {
        (XdpMode::Generic, AttachMode::Generic) => tracing::warn!(
            iface = %name,
            "generic (SKB) mode: every packet pays for an skb; use native mode in production"
        ),
        (XdpMode::Generic, AttachMode::Native) => tracing::warn!(
            iface = %name,
            "runs in generic (SKB) mode, as attached by an earlier start with --generic, though \
             native was asked for: a link keeps its mode (traffic keeps flowing); to change \
             it, `lethe down` and start again"
        ),
        (XdpMode::Native, AttachMode::Generic) => tracing::warn!(
            iface = %name,
            "runs in native mode, as attached by an earlier start, though --generic was asked \
             for: a link keeps its mode (traffic keeps flowing); to change it, `lethe down` \
             and start again"
        ),
        _ => {}
    }
}

pub async fn serve(opts: ServeOptions) -> Result<()> {
    check_instance(&opts.instance)?;
    let indexes = opts
        .ifaces
        .iter()
        .map(|i| ifindex(i))
        .collect::<Result<Vec<_>>>()?;
    let mounting = !pin::is_bpffs(&opts.bpffs);
    pin::ensure_bpffs(&opts.bpffs)?;
    if mounting && pin::private_mount_namespace() {
        tracing::warn!(
            bpffs = %opts.bpffs.display(),
            "mounted a BPF filesystem in a mount namespace of this process's own (as under \
             `ip netns exec`): the pins go with that namespace, so the program stops \
             forwarding when the daemon stops; enter only the network namespace \
             (`nsenter --net=/run/netns/NAME`)"
        );
    }
    let dir = pin::instance_dir(&opts.bpffs, &opts.instance);
    let _lock = lock_instance(&dir, &opts.instance)?;
    // Before anything changes: a daemon that cannot serve its API must
    // not take the links over.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    // The saved configuration is what the maps are made to hold: with none
    // (a first start, or the wrong --state-dir), pinned VIPs that forward
    // traffic now would all be removed. Not without the operator's say.
    let store = Store::new(opts.state_dir.join(&opts.instance));
    let saved = store.load()?;
    // Checked before anything changes: a configuration an earlier version
    // accepted and this one refuses (a rule added since) would stop the
    // start half-way, after the links moved to this program.
    if let Some(config) = &saved {
        config.validate().with_context(|| {
            format!(
                "the saved configuration {} is refused by this version (the pinned program \
                 keeps forwarding as it is): correct the file, or start the version that \
                 wrote it and change it over the API",
                store.path().display()
            )
        })?;
    }
    if saved.is_none() {
        let pinned = pin::pinned_vips(&dir).context("counting the pinned VIPs")?;
        if pinned > 0 {
            bail!(
                "{} holds no saved configuration, but the maps pinned in {} hold {pinned} \
                 VIPs that are being balanced: starting would remove them all. Start with \
                 the --state-dir that holds instance {:?}'s configuration; or, to start \
                 empty, `lethe down --instance {}` first (it stops balancing)",
                store.path().display(),
                dir.display(),
                opts.instance,
                opts.instance,
            );
        }
    }

    // Pins in another layout (an upgrade that changed what a map holds):
    // never read. This program gets maps of its own, filled from the saved
    // configuration while the old program forwards on the old maps; the
    // links move over, then the pins are replaced (pin.rs).
    let pins = pin::pins(&dir);
    let migrate = matches!(pins, pin::Pins::Other { .. });
    let dp = if let pin::Pins::Other { stamp } = pins {
        tracing::warn!(
            pins = %dir.display(),
            theirs = %stamp.map_or("none".to_string(), |s| format!("{s:016x}")),
            ours = %format!("{:016x}", pin::LAYOUT),
            "the pinned maps are in another layout: moving the instance to fresh maps \
             (traffic keeps flowing; counters restart)"
        );
        Dataplane::load().context("loading the XDP program")?
    } else {
        Dataplane::load_pinned(&dir).with_context(|| {
            format!(
                "loading the XDP program with maps pinned in {}",
                dir.display()
            )
        })?
    };
    let dp = Arc::new(dp);
    for &idx in &indexes {
        dp.allow_tx_port(idx)?;
    }

    // Links already pinned (a restart, an upgrade): move them to this
    // program before the saved configuration is applied. It already
    // decides as the old one did on the adopted maps, and what the apply
    // rewrites is then read only by the program that knows its layout.
    // None (first start, or after a reboot), or a move to fresh maps:
    // apply first, so the first packet finds the VIPs.
    let upgrading = !migrate && !pin::links(&dir).is_empty();
    let mut links = if upgrading {
        attach_all(&dp, &dir, &opts, &indexes)?
    } else {
        Vec::new()
    };
    let saved = saved.unwrap_or_default();
    let restored = saved.vips.len();
    let control = Arc::new(Controller::start(dp.clone(), Some(store), saved).await?);
    tracing::info!(vips = restored, pins = %dir.display(), "configuration restored");
    if !upgrading {
        links = attach_all(&dp, &dir, &opts, &indexes)?;
    }
    if migrate {
        dp.take_over_pins(&dir)
            .with_context(|| format!("pinning the fresh maps in {}", dir.display()))?;
        tracing::info!(pins = %dir.display(), "moved to fresh maps; the old ones are freed");
    }
    if let Some(&first) = indexes.first() {
        control.set_trace_ifindex(first);
    }
    // Addresses and routes may have changed while no daemon listened:
    // resolve the outer sources again before declaring ready.
    control.refresh_sources().await;
    control.set_ready(true);

    let cancel = CancellationToken::new();
    let checks = tokio::spawn(health::supervise(control.clone(), cancel.clone()));
    // Now (the restored configuration) and every 30 s.
    let neighbours = tokio::spawn(neighbours::keep_warm(
        control.clone(),
        Duration::from_secs(30),
        cancel.clone(),
    ));
    // Address and route changes: outer sources resolved again, one refresh
    // at a time, bursts coalesced.
    let sources_changed = Arc::new(tokio::sync::Notify::new());
    let route_watch = tokio::spawn(route_watch::watch(
        dp.clone(),
        {
            let n = sources_changed.clone();
            move || n.notify_one()
        },
        cancel.clone(),
    ));
    let refresher = {
        let (control, cancel, dp) = (control.clone(), cancel.clone(), dp.clone());
        let (dir, opts) = (dir.clone(), opts.clone());
        let mut ifaces = Ifaces {
            indexes: indexes.clone(),
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = sources_changed.notified() => {
                        // Link messages come this way too.
                        let ready = ifaces.relink(&dp, &control, &dir, &opts);
                        control.set_ready(ready);
                        control.refresh_sources().await;
                    }
                }
            }
        })
    };
    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = {
        let control = control.clone();
        events::spawn_decision_reader(dp.clone(), stop_reader.clone(), move |raw| {
            control.publish_decision(raw)
        })
        .context("starting the decision event reader")?
    };
    let app = api::router(ApiState {
        control: control.clone(),
        token: opts.token.as_deref().map(Arc::from),
        shutdown: cancel.clone(),
    });
    tracing::info!(listen = %opts.listen, auth = opts.token.is_some(), "serving the API");
    // On a worker, not on the thread that blocks on `serve`: connections
    // are spawned from where they are accepted, and from the block_on
    // thread every one went through the runtime's global queue and a
    // wake-up of a parked worker (~0.1-0.3 ms in a VM whose idle vCPU is
    // halted) before its request was read.
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal(cancel.clone()))
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        served = &mut server => served
            .context("the API server task")?
            .context("serving the API")?,
        _ = grace_over(cancel.clone()) => {
            server.abort();
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "requests still open when stopping: their connections are closed"
            );
        }
    }
    cancel.cancel();
    // A change under way (its client gone, or a health change) runs to
    // its end, saved, before the process exits; none starts after.
    let _quiet = control.quiesce().await;
    stop_reader.store(true, Ordering::Relaxed);
    let _ = checks.await;
    let _ = neighbours.await;
    let _ = route_watch.await;
    let _ = refresher.await;
    let _ = reader.join();
    drop(links);
    tracing::info!("stopped; the program stays attached (`lethe down` detaches)");
    Ok(())
}

/// `lethe down`: detaches the instance's links and removes its pins.
/// Refused while a daemon serves the instance: it would go on answering
/// ready and accepting changes for links that are gone, and its lock would
/// be on a removed directory, letting a second daemon start beside it.
pub fn down(bpffs: &std::path::Path, instance: &str) -> Result<()> {
    check_instance(instance)?;
    if !pin::is_bpffs(bpffs) {
        // Under `ip netns exec` (a mount namespace of its own, /sys
        // remounted) the pins are out of sight, not absent.
        bail!(
            "{} is not a BPF filesystem here, so the instance's pins cannot be seen{}",
            bpffs.display(),
            if pin::private_mount_namespace() {
                " (this runs in a mount namespace of its own, as under `ip netns exec`: \
                 run `lethe down` outside it)"
            } else {
                " (none is mounted: nothing can be pinned)"
            }
        );
    }
    let dir = pin::instance_dir(bpffs, instance);
    if !dir.exists() {
        println!(
            "nothing pinned for instance {instance:?} ({})",
            dir.display()
        );
        return Ok(());
    }
    // Held until the directory is gone: no daemon starts halfway.
    let Some(_lock) = try_lock(&dir)? else {
        bail!(
            "a `lethe serve` runs instance {instance:?} (it holds the lock on {}): stop it \
             first (SIGTERM leaves the program attached), then `lethe down`",
            dir.display()
        );
    };
    let removed = pin::remove_instance(&dir)?;
    for l in &removed.links {
        println!("detached {l}");
    }
    println!("removed {} pins and {}", removed.files, dir.display());
    Ok(())
}
