//! The controller: owns the desired state and applies every change as one
//! transaction — validate, plan (tables), write the maps, save — or leaves
//! everything as it was. The REST API and the daemon's start-up both go
//! through it; changes are serialised by one lock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{watch, Mutex};

use crate::abi::Reason;
use crate::config::{Config, Protocol};
use crate::dataplane::{Counter, Dataplane, DataplaneError};
use crate::edit::{Change, EditError};
use crate::events::{Event, EventHub};
use crate::flow_hash::FlowKey;
use crate::health::{BackendHealth, CheckSpec, HealthState};
use crate::model::{self, probe, Pick};
use crate::plan::{Down, Plan, VipKey};
use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum ControlError {
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("the configuration changed since the ETag {given} (now {current})")]
    PreconditionFailed { given: String, current: String },
    /// The data plane refused a change, or the task applying it failed;
    /// `restored`: whether the maps were put back as they were.
    #[error("the data plane refused the change; {}", restored_note(*restored))]
    Refused {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        restored: bool,
    },
    /// The change is in the maps but could not be saved; `restored`:
    /// whether the maps were put back as they were.
    #[error("the change could not be saved; {}", restored_note(*restored))]
    Store {
        #[source]
        source: StoreError,
        restored: bool,
    },
    /// The data plane failed to do something other than apply a change
    /// (start, read counters or a table, trace).
    #[error("the data plane failed")]
    Dataplane(#[source] DataplaneError),
    #[error("a data plane task failed: {0}")]
    Task(String),
}

/// What a failed change left in the maps, for its error: a client told
/// "restored" when the restore failed too would trust maps that may hold
/// part of the change.
fn restored_note(restored: bool) -> &'static str {
    if restored {
        "the previous state was restored"
    } else {
        "the previous state could not be restored: the maps may hold part of the change; \
         the next change or a restart puts them right"
    }
}

/// The current desired state and what it was built into.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub config: Config,
    pub plan: Arc<Plan>,
    pub etag: String,
}

/// Control-plane figures for /metrics.
#[derive(Debug, Default)]
pub struct ControlStats {
    pub changes_applied: AtomicU64,
    pub changes_refused: AtomicU64,
    pub changes_failed: AtomicU64,
    /// Last apply: table builds (µs) and map writes (µs).
    pub last_build_us: AtomicU64,
    pub last_sync_us: AtomicU64,
    pub tables_built: AtomicU64,
    /// Health changes the data plane refused to apply (each retried).
    pub health_apply_failures: AtomicU64,
    /// Failed changes whose previous state could not be put back at once
    /// (retried until it is).
    pub restore_failures: AtomicU64,
}

/// Health of every checked backend, by (VIP name, address).
pub type HealthBook = HashMap<(String, IpAddr), BackendHealth>;

pub struct Controller {
    dp: Arc<Dataplane>,
    store: Option<Store>,
    current: Mutex<Snapshot>,
    ready: AtomicBool,
    /// The maps may hold part of a refused change (its restore failed):
    /// not ready until an apply of the current plan succeeds.
    diverged: AtomicBool,
    /// Where `trace` probes enter: the first attached interface (0: none).
    trace_ifindex: AtomicU64,
    pub stats: ControlStats,
    health: std::sync::Mutex<HealthBook>,
    /// Health transitions recorded in the book, and how many of them the
    /// maps reflect: a resync covers every transition recorded before it
    /// read the book, so transitions that queue behind one apply (a backend
    /// of many VIPs going down) are published by one more, not one each.
    health_changes: AtomicU64,
    health_applied: AtomicU64,
    pub events: EventHub,
    config_tx: watch::Sender<Arc<Config>>,
    /// VIP names by key, for naming decision events off the async runtime.
    names: std::sync::RwLock<HashMap<VipKey, String>>,
}

fn names_of(plan: &Plan) -> HashMap<VipKey, String> {
    plan.vips
        .iter()
        .map(|v| (v.key(), v.vip.name.clone()))
        .collect()
}

/// The ETag of a configuration: a digest of its canonical JSON.
pub fn etag(config: &Config) -> String {
    let json = serde_json::to_vec(config).expect("configs serialise");
    let sum = Sha256::digest(&json);
    let hex: String = sum.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::Task(e.to_string()))
}

/// Counters of one VIP and its backends.
#[derive(Debug, Clone)]
pub struct VipStats {
    pub name: String,
    pub vip: Counter,
    /// nat VIPs: the return path (backend -> client).
    pub returned: Counter,
    pub backends: Vec<(IpAddr, Counter)>,
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub reasons: Vec<(Reason, Counter)>,
    pub vips: Vec<VipStats>,
    /// Decision events written to the ring, and lost to a full ring.
    pub events_sent: u64,
    pub events_lost: u64,
}

/// The answer to "which backend does this flow get?", from both sides.
#[derive(Debug, Clone)]
pub struct TraceReport {
    pub flow: FlowKey,
    /// The plan the model answered from (names the VIPs of both sides:
    /// a change may land while the kernel is probed).
    pub plan: Arc<Plan>,
    pub model: Result<Pick, Reason>,
    pub kernel: crate::dataplane::Traced,
}

impl Controller {
    /// Applies `initial` (the saved configuration) to the data plane. With
    /// pinned maps that already hold it, nothing is written. Checked
    /// backends the kernel's tables leave out (down when the previous daemon
    /// stopped) start down, so a restart does not send them traffic again.
    pub async fn start(
        dp: Arc<Dataplane>,
        store: Option<Store>,
        initial: Config,
    ) -> Result<Controller, ControlError> {
        // Saved health: for VIPs whose tables the maps do not hold.
        let saved_down = match store.as_ref().map(Store::load_down).transpose() {
            Ok(list) => list.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "reading the saved health: every checked backend starts up");
                Vec::new()
            }
        };
        let d = dp.clone();
        let config = initial.clone();
        let book = blocking(move || adopt_health(&d, &config, &saved_down)).await?;
        let down = down_set(&book);
        let plan = Arc::new(
            Plan::default()
                .update(&initial, &down)
                .map_err(EditError::from)?,
        );
        let started = Instant::now();
        let (d, p) = (dp.clone(), plan.clone());
        blocking(move || d.apply(&p))
            .await?
            .map_err(ControlError::Dataplane)?;
        let stats = ControlStats::default();
        stats
            .last_build_us
            .store(plan.build_time.as_micros() as u64, Ordering::Relaxed);
        stats
            .last_sync_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        stats
            .tables_built
            .store(plan.tables_built as u64, Ordering::Relaxed);
        let (config_tx, _) = watch::channel(Arc::new(initial.clone()));
        let names = std::sync::RwLock::new(names_of(&plan));
        Ok(Controller {
            dp,
            store,
            current: Mutex::new(Snapshot {
                etag: etag(&initial),
                config: initial,
                plan,
            }),
            ready: AtomicBool::new(false),
            diverged: AtomicBool::new(false),
            trace_ifindex: AtomicU64::new(0),
            stats,
            health: std::sync::Mutex::new(book),
            health_changes: AtomicU64::new(0),
            health_applied: AtomicU64::new(0),
            events: EventHub::default(),
            config_tx,
            names,
        })
    }

    /// Publishes a decision event read from the data plane, named. Skipped
    /// when nobody listens.
    pub fn publish_decision(&self, raw: &crate::dataplane::events::RawEvent) {
        if self.events.readers() == 0 {
            return;
        }
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        let event = crate::events::decision(&self.dp, &|k| names.get(k).cloned(), raw);
        drop(names);
        self.events.publish(event);
    }

    /// Every configuration the controller accepts, from the current one on.
    pub fn subscribe_config(&self) -> watch::Receiver<Arc<Config>> {
        self.config_tx.subscribe()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, HealthBook> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of every checked backend's health.
    pub fn health(&self) -> HealthBook {
        self.book().clone()
    }

    /// Drops the health of backends no longer checked.
    pub fn forget_health(&self, keep: impl Fn(&(String, IpAddr)) -> bool) {
        self.book().retain(|k, _| keep(k));
    }

    /// Counts one probe result; when the backend turns up or down, rebuilds
    /// that VIP's table and swaps it in.
    pub async fn report_health(self: &Arc<Self>, spec: &CheckSpec, result: Result<(), String>) {
        let key = (spec.vip.clone(), spec.backend);
        let (transition, error, change) = {
            let mut book = self.book();
            // A result of a check the configuration no longer asks for
            // (its task aborted while probing) must not bring its entry
            // back after the supervisor forgot it: read under the book's
            // lock, the configuration is replaced before that forgetting.
            let wanted = self.config_tx.borrow().vip(&spec.vip).is_some_and(|v| {
                v.health_check.timing().is_some()
                    && v.backends.iter().any(|b| b.address == spec.backend)
            });
            if !wanted {
                return;
            }
            let h = book.entry(key).or_insert_with(BackendHealth::up);
            let t = h.record(spec.probe(), &result, spec.timing.rise, spec.timing.fall);
            let error = h.last_error.clone();
            // Counted under the book's lock: a resync that reads the book
            // and this count together sees this transition in the book.
            let change = t.map(|_| self.health_changes.fetch_add(1, Ordering::SeqCst) + 1);
            (t, error, change)
        };
        let (Some(state), Some(change)) = (transition, change) else {
            return;
        };
        match state {
            HealthState::Down => {
                tracing::warn!(vip = %spec.vip, backend = %spec.backend, error = ?error, "backend down")
            }
            HealthState::Up => {
                tracing::info!(vip = %spec.vip, backend = %spec.backend, "backend up")
            }
        }
        self.events.publish(Event::Health {
            time: crate::events::now(),
            vip: spec.vip.clone(),
            backend: spec.backend,
            state: match state {
                HealthState::Up => "up",
                HealthState::Down => "down",
            }
            .to_string(),
            error: (state == HealthState::Down).then_some(error).flatten(),
        });
        // On a task of its own, as `change`: the check's task may be
        // aborted (its check changed) while the maps are being written.
        let this = self.clone();
        if let Err(e) = tokio::spawn(async move { this.resync(change).await }).await {
            tracing::error!(error = %e, "applying a health change");
        }
    }

    /// `try_resync`; when the data plane refuses, again and again on a task
    /// of its own (0.5 s, doubling to 30 s) until it is published: else a
    /// backend found dead would keep its slots until some other change.
    async fn resync(self: &Arc<Self>, change: u64) {
        if self.try_resync(change).await {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                tokio::time::sleep(delay).await;
                if this.try_resync(change).await {
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(30));
                tracing::warn!(
                    retry_in_s = delay.as_secs_f64(),
                    "health change still not applied"
                );
            }
        });
    }

    /// Rebuilds the plan from the current configuration and health, and
    /// applies it — unless a resync since health transition `change` was
    /// recorded has published it already. False when the data plane
    /// refused it.
    async fn try_resync(&self, change: u64) -> bool {
        let mut current = self.current.lock().await;
        if self.health_applied.load(Ordering::SeqCst) >= change {
            return true;
        }
        let (down, seen) = {
            let book = self.book();
            (down_set(&book), self.health_changes.load(Ordering::SeqCst))
        };
        let started = std::time::Instant::now();
        let plan = match current.plan.update(&current.config, &down) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // Not the data plane's: retrying would fail the same way.
                tracing::error!(error = %error_chain(&e), "rebuilding tables after a health change");
                return true;
            }
        };
        let (dp, p) = (self.dp.clone(), plan.clone());
        match blocking(move || dp.apply(&p)).await {
            Ok(Ok(())) => {
                self.diverged.store(false, Ordering::Release);
                self.announce_fail_open(&current.plan, &plan);
                current.plan = plan;
                self.health_applied.fetch_max(seen, Ordering::SeqCst);
                self.save_down(&down);
                tracing::info!(
                    changes = seen,
                    apply_ms = started.elapsed().as_secs_f64() * 1e3,
                    "health published"
                );
                true
            }
            Ok(Err(e)) => {
                self.stats
                    .health_apply_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %error_chain(&e), "applying a health change");
                false
            }
            Err(e) => {
                self.stats
                    .health_apply_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "applying a health change");
                false
            }
        }
    }

    /// Saves the down backends (`Store::save_down`); a failure only warns:
    /// the tables are right, only a restart onto fresh maps would miss it.
    fn save_down(&self, down: &Down) {
        let Some(store) = &self.store else {
            return;
        };
        let mut list: Vec<(String, IpAddr)> = down.iter().cloned().collect();
        list.sort();
        if let Err(e) = store.save_down(&list) {
            tracing::warn!(error = %error_chain(&e), "saving the down backends");
        }
    }

    /// Resolves every encapsulating backend's outer source again and
    /// republishes the backends whose source changed: for when the host's
    /// addresses or routes change (src/route_watch.rs).
    pub async fn refresh_sources(&self) {
        let current = self.current.lock().await;
        let (dp, p) = (self.dp.clone(), current.plan.clone());
        match blocking(move || dp.refresh_sources(&p)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                backends = n,
                "outer source addresses changed: backends republished"
            ),
            Ok(Err(e)) => tracing::error!(error = %error_chain(&e), "re-resolving outer sources"),
            Err(e) => tracing::error!(error = %e, "re-resolving outer sources"),
        }
    }

    fn announce_fail_open(&self, before: &Plan, after: &Plan) {
        for v in &after.vips {
            let was = before
                .vip_by_name(&v.vip.name)
                .is_some_and(|b| b.failed_open);
            if v.failed_open != was {
                if v.failed_open {
                    tracing::warn!(vip = %v.vip.name, "every backend is down: failing open (all stay in the table)");
                } else {
                    tracing::info!(vip = %v.vip.name, "no longer failing open");
                }
                self.events.publish(Event::FailOpen {
                    time: crate::events::now(),
                    vip: v.vip.name.clone(),
                    failed_open: v.failed_open,
                });
            }
        }
        // A VIP removed (or renamed) while failing open: its fail open ends
        // too, or a reader would wait for that end forever.
        for v in before
            .vips
            .iter()
            .filter(|v| v.failed_open && after.vip_by_name(&v.vip.name).is_none())
        {
            tracing::info!(vip = %v.vip.name, "removed while failing open");
            self.events.publish(Event::FailOpen {
                time: crate::events::now(),
                vip: v.vip.name.clone(),
                failed_open: false,
            });
        }
    }

    /// Waits for the change under way, if any, to end (applied and saved,
    /// or undone), and holds off every later one while the guard lives: a
    /// stopping daemon holds it until it exits.
    pub async fn quiesce(&self) -> tokio::sync::MutexGuard<'_, Snapshot> {
        self.current.lock().await
    }

    pub fn dataplane(&self) -> &Arc<Dataplane> {
        &self.dp
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Attached (the daemon says so) and the maps hold the current plan.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.diverged.load(Ordering::Acquire)
    }

    pub fn set_trace_ifindex(&self, ifindex: u32) {
        self.trace_ifindex
            .store(u64::from(ifindex), Ordering::Relaxed);
    }

    pub async fn snapshot(&self) -> Snapshot {
        self.current.lock().await.clone()
    }

    /// Applies one change as a transaction. `if_match`: the ETag the client
    /// based the change on (`*` or absent: any). Returns the new snapshot;
    /// a change that changes nothing returns the current one untouched.
    ///
    /// The change runs on a task of its own, to the end: a caller dropped
    /// half-way (an HTTP client that hung up) must not leave the maps
    /// holding a change the controller never recorded, saved or announced.
    pub async fn change(
        self: &Arc<Self>,
        change: Change,
        if_match: Option<&str>,
    ) -> Result<Snapshot, ControlError> {
        let this = self.clone();
        let if_match = if_match.map(str::to_owned);
        tokio::spawn(async move {
            let result = this.change_inner(&change, if_match.as_deref()).await;
            let counter = match &result {
                Ok(_) => &this.stats.changes_applied,
                Err(ControlError::Edit(_) | ControlError::PreconditionFailed { .. }) => {
                    &this.stats.changes_refused
                }
                Err(_) => &this.stats.changes_failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            result
        })
        .await
        .map_err(|e| ControlError::Task(e.to_string()))?
    }

    async fn change_inner(
        self: &Arc<Self>,
        change: &Change,
        if_match: Option<&str>,
    ) -> Result<Snapshot, ControlError> {
        let mut current = self.current.lock().await;
        if let Some(given) = if_match {
            if !if_match_allows(given, &current.etag) {
                return Err(ControlError::PreconditionFailed {
                    given: given.to_string(),
                    current: current.etag.clone(),
                });
            }
        }
        let next = change.apply_to(&current.config)?;
        if next == current.config {
            return Ok(current.clone());
        }
        let down = down_set(&self.book());
        let plan = Arc::new(current.plan.update(&next, &down).map_err(EditError::from)?);

        let started = Instant::now();
        let (dp, new_plan) = (self.dp.clone(), plan.clone());
        // A panic in the apply (a task error) may have left it half-done,
        // as a refusal may: restored alike.
        let failure: Option<Box<dyn std::error::Error + Send + Sync>> =
            match blocking(move || dp.apply(&new_plan)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(Box::new(e)),
                Err(e) => Some(Box::new(e)),
            };
        if let Some(source) = failure {
            let restored = self.restore(&current.plan).await;
            return Err(ControlError::Refused { source, restored });
        }
        let sync = started.elapsed();
        // Whatever an earlier failed restore left, the maps hold a plan now.
        self.diverged.store(false, Ordering::Release);
        // New backends: have the kernel resolve their next hops now, before
        // their first packet.
        let fresh: Vec<IpAddr> = crate::neighbours::backends(&plan)
            .difference(&crate::neighbours::backends(&current.plan))
            .copied()
            .collect();
        if !fresh.is_empty() {
            tokio::task::spawn_blocking(move || crate::neighbours::warm(fresh));
        }
        if let Some(store) = &self.store {
            if let Err(source) = store.save(&next) {
                let restored = self.restore(&current.plan).await;
                return Err(ControlError::Store { source, restored });
            }
        }
        // The saved down backends, less those this change took out of
        // checking (VIP deleted, backend removed, check off): kept, a VIP
        // made again with one of them would start with it down after a
        // restart onto fresh maps. Written only then: most changes leave
        // the set as it is, and a save costs an fsync.
        let still: Down = down
            .iter()
            .filter(|(vip, addr)| {
                next.vip(vip).is_some_and(|v| {
                    v.health_check.timing().is_some()
                        && v.backends.iter().any(|b| b.address == *addr)
                })
            })
            .cloned()
            .collect();
        if still.len() != down.len() {
            self.save_down(&still);
        }
        self.stats
            .last_build_us
            .store(plan.build_time.as_micros() as u64, Ordering::Relaxed);
        self.stats
            .last_sync_us
            .store(sync.as_micros() as u64, Ordering::Relaxed);
        self.stats
            .tables_built
            .fetch_add(plan.tables_built as u64, Ordering::Relaxed);
        // A change can start or end failing open too: the last healthy
        // backend removed, a healthy one added.
        self.announce_fail_open(&current.plan, &plan);
        *current = Snapshot {
            etag: etag(&next),
            config: next,
            plan,
        };
        tracing::info!(
            change = %change.describe(),
            vips = current.config.vips.len(),
            tables_built = current.plan.tables_built,
            build_ms = ms(current.plan.build_time),
            sync_ms = ms(sync),
            etag = %current.etag,
            "change applied"
        );
        self.events.publish(Event::Config {
            time: crate::events::now(),
            change: change.describe(),
            etag: current.etag.clone(),
        });
        self.config_tx
            .send_replace(Arc::new(current.config.clone()));
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = names_of(&current.plan);
        Ok(current.clone())
    }

    /// Puts the maps back as `plan` says, after a failed change. False
    /// when that failed too: the failed change's error says so.
    async fn restore(self: &Arc<Self>, plan: &Arc<Plan>) -> bool {
        let (dp, plan) = (self.dp.clone(), plan.clone());
        let failed = match blocking(move || dp.apply(&plan)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => error_chain(&e),
            Err(e) => error_chain(&e),
        };
        tracing::error!(error = %failed, "restoring the previous state failed; retrying, not ready meanwhile");
        self.stats.restore_failures.fetch_add(1, Ordering::Relaxed);
        self.diverged.store(true, Ordering::Release);
        self.keep_restoring();
        false
    }

    /// After a failed restore: applies the current plan again (0.5 s,
    /// doubling to 30 s) until the maps hold it, or a change or a health
    /// update has put them right meanwhile.
    fn keep_restoring(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                tokio::time::sleep(delay).await;
                let current = this.current.lock().await;
                if !this.diverged.load(Ordering::Acquire) {
                    return;
                }
                let (dp, plan) = (this.dp.clone(), current.plan.clone());
                if let Ok(Ok(())) = blocking(move || dp.apply(&plan)).await {
                    this.diverged.store(false, Ordering::Release);
                    tracing::info!("the maps hold the current configuration again");
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(30));
                tracing::warn!(
                    retry_in_s = delay.as_secs_f64(),
                    "the maps still do not hold the current configuration"
                );
            }
        });
    }

    /// Every counter: reasons, VIPs, backends.
    pub async fn stats(&self) -> Result<Stats, ControlError> {
        let plan = self.current.lock().await.plan.clone();
        let dp = self.dp.clone();
        blocking(move || -> Result<Stats, DataplaneError> {
            let reasons = dp.reason_counters()?;
            let mut vips = Vec::new();
            for v in &plan.vips {
                let key = v.key();
                let vip = dp.vip_counter(&key)?.unwrap_or_default();
                let mut backends = Vec::new();
                for b in &v.vip.backends {
                    backends.push((
                        b.address,
                        dp.backend_counter(&key, b.address)?.unwrap_or_default(),
                    ));
                }
                vips.push(VipStats {
                    name: v.vip.name.clone(),
                    vip,
                    returned: dp.return_counter(&key)?.unwrap_or_default(),
                    backends,
                });
            }
            let (events_sent, events_lost) = dp.event_counters()?;
            Ok(Stats {
                reasons,
                vips,
                events_sent,
                events_lost,
            })
        })
        .await?
        .map_err(ControlError::Dataplane)
    }

    /// Which backend a flow gets: from the model, and from the kernel
    /// program running a probe frame (BPF_PROG_TEST_RUN).
    pub async fn trace(&self, flow: FlowKey) -> Result<TraceReport, ControlError> {
        let plan = self.current.lock().await.plan.clone();
        let model = model::pick(&plan, &flow);
        let dp = self.dp.clone();
        let ifindex = self.trace_ifindex.load(Ordering::Relaxed) as u32;
        let frame = probe::frame(&flow);
        let kernel = blocking(move || dp.trace(&frame, ifindex))
            .await?
            .map_err(ControlError::Dataplane)?;
        Ok(TraceReport {
            flow,
            plan,
            model,
            kernel,
        })
    }

    /// The table of a VIP as the kernel holds it, as a digest.
    pub async fn published_digest(&self, key: VipKey) -> Result<Option<String>, ControlError> {
        let dp = self.dp.clone();
        let table = blocking(move || dp.published_table(&key))
            .await?
            .map_err(ControlError::Dataplane)?;
        Ok(table.map(|t| crate::maglev::digest(t.into_iter())))
    }
}

/// The backends out of their tables for health.
fn down_set(book: &HealthBook) -> Down {
    book.iter()
        .filter(|(_, h)| h.state == HealthState::Down)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Health as the kernel's tables left it: a checked backend of non-zero
/// weight that holds no slot was down when the previous daemon stopped.
/// Rounding cannot leave one out: validation refuses a backend whose share
/// is under one slot (`Vip::check_shares`), and a share only grows as
/// others go down, so every table built (all backends, or the healthy
/// ones) gives each such backend a slot. Weight 0: out of every table,
/// never down for it.
/// For a VIP the maps hold no table of (fresh maps: a move to another
/// layout, a reboot), the down backends saved last (`saved_down`).
fn adopt_health(dp: &Dataplane, config: &Config, saved_down: &[(String, IpAddr)]) -> HealthBook {
    let mut book = HealthBook::new();
    for v in &config.vips {
        if v.health_check.timing().is_none() {
            continue;
        }
        let key = VipKey {
            address: v.address,
            port: v.port,
            protocol: v.protocol,
        };
        // The published table's backends; None: no table to read.
        let present: Option<std::collections::HashSet<IpAddr>> = match dp.published_table(&key) {
            Ok(Some(table)) => Some(table.into_iter().collect()),
            _ => None,
        };
        let down = |a: IpAddr| match &present {
            Some(p) => !p.contains(&a),
            None => saved_down.iter().any(|(n, b)| *n == v.name && *b == a),
        };
        for b in v.backends.iter().filter(|b| b.weight > 0) {
            if down(b.address) {
                book.insert(
                    (v.name.clone(), b.address),
                    BackendHealth::down("down before the daemon restarted"),
                );
            }
        }
    }
    book
}

/// Whether `If-Match: value` lets a change through when the
/// configuration's ETag is `current` (RFC 9110 13.1.1): `*`, or a list of
/// entity tags one of which is `current`, compared strongly (a weak tag,
/// `W/"..."`, never matches). A value that is no such list, or holds
/// anything but visible ASCII (obs-text, which the API decodes lossily),
/// matches nothing: a precondition that cannot be read is not met.
pub fn if_match_allows(value: &str, current: &str) -> bool {
    const OWS: [char; 2] = [' ', '\t'];
    let value = value.trim_matches(OWS);
    if value == "*" {
        return true;
    }
    let mut matched = false;
    // The list rule allows empty elements: `"a", , "b"`.
    let mut rest = value.trim_start_matches([' ', '\t', ',']);
    while !rest.is_empty() {
        let (weak, tagged) = match rest.strip_prefix("W/") {
            Some(t) => (true, t),
            None => (false, rest),
        };
        let Some(body) = tagged.strip_prefix('"') else {
            return false;
        };
        let Some(end) = body.find('"') else {
            return false;
        };
        // etagc, without obs-text.
        if !body[..end]
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
        {
            return false;
        }
        matched |= !weak && tagged[..end + 2] == *current;
        let after = body[end + 1..].trim_start_matches(OWS);
        if !(after.is_empty() || after.starts_with(',')) {
            return false;
        }
        rest = after.trim_start_matches([' ', '\t', ',']);
    }
    matched
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An error and its sources, "a: b: c".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Whether a trace's two answers agree on the backend.
pub fn agrees(report: &TraceReport) -> bool {
    match &report.model {
        Ok(p) => report.kernel.backend == Some(p.backend),
        Err(r) => report.kernel.backend.is_none() && report.kernel.reason == Some(*r),
    }
}

/// A flow key from the parts of a trace query.
pub fn flow(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: Protocol) -> FlowKey {
    FlowKey {
        src,
        dst,
        sport,
        dport,
        proto: proto.number(),
    }
}
