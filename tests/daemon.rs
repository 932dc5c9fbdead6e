//! `lethe serve` as an operator runs it, in a network namespace with a
//! veth: it attaches, a VIP created with curl makes a real frame come back
//! rewritten, kill -9 leaves the link attached and the maps working, a
//! restart restores the same configuration and table digest without
//! detaching (the program is upgraded in place; frames sent all through
//! the restart all come back), and `lethe down` detaches and unpins.
//!
//! Privileged: needs root (BPF, bpffs, a network namespace). The instance
//! name, pin directory and state directory are unique to the run and
//! removed at the end, also on failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libbpf_rs::Link;
use serde_json::{json, Value};

use lethe::dataplane::{pin, AttachMode, PassProgram};

use common::netns::{ifindex, in_new_netns, sh};
use common::packets::Flow;
use common::rawsock::RawSocket;
use common::topology::Topology;

const API: &str = "http://127.0.0.1:9180";

struct Daemon {
    child: Option<Child>,
    instance: String,
    state_dir: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Not started yet: an instance, state directory and log unique to
    /// this run, removed when it is dropped.
    fn named(prefix: &str) -> Daemon {
        let instance = format!("{prefix}-{}", std::process::id());
        let tmp = std::env::temp_dir();
        Daemon {
            child: None,
            state_dir: tmp.join(format!("lethe-state-{instance}")),
            log: tmp.join(format!("lethe-log-{instance}")),
            instance,
        }
    }

    fn start(instance: &str, state_dir: &Path, log: &Path) -> Child {
        Self::start_on(instance, state_dir, log, &["lt0"], "127.0.0.1:9180")
    }

    fn start_on(
        instance: &str,
        state_dir: &Path,
        log: &Path,
        ifaces: &[&str],
        listen: &str,
    ) -> Child {
        let mut args = Vec::new();
        for i in ifaces {
            args.extend(["--iface", i]);
        }
        args.extend(["--listen", listen]);
        Self::spawn(instance, state_dir, log, &args)
    }

    /// `lethe serve --instance .. --state-dir .. <args>`, its stderr
    /// appended to `log`.
    fn spawn(instance: &str, state_dir: &Path, log: &Path, args: &[&str]) -> Child {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_lethe"))
            .arg("serve")
            .args(args)
            .args(["--instance", instance])
            .arg("--state-dir")
            .arg(state_dir)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn lethe serve")
    }

    /// Starts the daemon on lt0 (at 127.0.0.1:9180) and waits until it is
    /// ready.
    fn run(&mut self) {
        self.child = Some(Self::start(&self.instance, &self.state_dir, &self.log));
        wait_ready(self);
    }

    /// kill -9, and reaped.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("a running daemon");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pin_dir(&self) -> PathBuf {
        pin::instance_dir(Path::new(pin::BPFFS), &self.instance)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = pin::remove_instance(&self.pin_dir());
        let _ = std::fs::remove_dir_all(&self.state_dir);
        if std::thread::panicking() {
            eprintln!("daemon log:\n{}", self.logs());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn curl(args: &[&str], body: Option<&Value>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    // A bounded wait: the API listens before the daemon is ready, so a
    // daemon stuck starting would hold a request (and the test) forever.
    cmd.args(["-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args);
    if let Some(b) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &b.to_string(),
        ]);
    }
    let out = cmd.output().expect("curl (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn get(path: &str) -> Value {
    let (code, body) = curl(&[&format!("{API}{path}")], None);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_ready(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if curl(&[&format!("{API}/ready")], None).0 == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("daemon not ready in 20 s:\n{}", d.logs());
}

/// The pinned link's id and the id of the program it runs.
fn link_ids(dir: &Path) -> (u32, u32) {
    link_ids_of(dir, "lt0")
}

fn link_ids_of(dir: &Path, iface: &str) -> (u32, u32) {
    let mut link = Link::open(pin::link_path(dir, iface)).expect("pinned link");
    let info = link.info().unwrap();
    link.disconnect();
    (info.id, info.prog_id)
}

fn xdp_attached(dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-d", "link", "show", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// The fixture topology, with lt1 (lt0's peer) made to receive what the
/// program sends back out of lt0 (an XDP program there, see
/// ENVIRONMENT.md; tx checksumming off) and a raw socket on it.
struct Wire {
    topo: Topology,
    sock: RawSocket,
    lb_mac: [u8; 6],
    _peer: lethe::dataplane::XdpLink,
    _pass: PassProgram,
}

impl Wire {
    fn new() -> Wire {
        let topo = Topology::create();
        let pass = PassProgram::load().unwrap();
        let peer = pass.attach(ifindex("lt1"), AttachMode::Native).unwrap();
        sh("ethtool -K lt1 tx off >/dev/null");
        Wire {
            sock: RawSocket::bind(ifindex("lt1")).unwrap(),
            lb_mac: topo.iface_mac("lt0"),
            topo,
            _peer: peer,
            _pass: pass,
        }
    }
}

/// Starts `daemon`, creates the dsr VIP `web` (10.100.0.1:80, backends
/// 10.1.0.11-13) with curl, and returns the backend MAC a probe frame came
/// back with.
fn start_with_web(daemon: &mut Daemon, wire: &Wire) -> [u8; 6] {
    daemon.run();
    let vip = json!({"name": "web", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "mode": "dsr",
                     "backends": [{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13"}]});
    let (code, body) = curl(&["-X", "POST", &format!("{API}/v1/vips")], Some(&vip));
    assert_eq!(code, 201, "{body}");
    probe_vip(&wire.sock, wire.lb_mac, 1001).expect("the frame came back rewritten")
}

/// How a daemon expected to give up exited (within 20 s, or it is killed
/// and the test fails).
fn exit_of(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one frame to the dsr VIP 10.100.0.1:80 from lt1's socket; the
/// backend MAC it came back with.
fn probe_vip(sock: &RawSocket, lb_mac: [u8; 6], sport: u16) -> Option<[u8; 6]> {
    let frame = Flow::tcp("198.51.100.1", sport, "10.100.0.1", 80).frame(lb_mac);
    sock.drain();
    sock.send(&frame).unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while let Some(got) = sock
        .recv(deadline.saturating_duration_since(Instant::now()))
        .unwrap()
    {
        if got.len() == frame.len() && got[6..12] == lb_mac && got[12..] == frame[12..] {
            return Some(got[..6].try_into().unwrap());
        }
    }
    None
}

/// Sends frames of new flows to the dsr VIP 10.100.0.1:80 from lt1, one
/// at a time, each waited for (500 ms), from 100 ms before `during` until
/// 100 ms after: (sent, came back rewritten).
fn frames_through(lb_mac: [u8; 6], during: impl FnOnce()) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, back) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let lt1 = ifindex("lt1");
    let traffic = {
        let (stop, sent, back) = (stop.clone(), sent.clone(), back.clone());
        std::thread::spawn(move || {
            let s = RawSocket::bind(lt1).unwrap();
            let mut port = 30_000u16;
            while !stop.load(Ordering::Relaxed) {
                let frame = Flow::tcp("198.51.100.2", port, "10.100.0.1", 80).frame(lb_mac);
                s.send(&frame).unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
                let deadline = Instant::now() + Duration::from_millis(500);
                while let Some(got) = s
                    .recv(deadline.saturating_duration_since(Instant::now()))
                    .unwrap()
                {
                    if got[12..] == frame[12..] && got[6..12] == lb_mac {
                        back.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                port = port.wrapping_add(1).max(30_000);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    during();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    (sent.load(Ordering::Relaxed), back.load(Ordering::Relaxed))
}

#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn serve_curl_kill_restart_down() {
    let mut daemon = Daemon::named("t-daemon");
    in_new_netns(move || {
        let wire = Wire::new();
        let (topo, sock, lb_mac) = (&wire.topo, &wire.sock, wire.lb_mac);
        let backend_macs: Vec<[u8; 6]> = (11..=13)
            .map(|i| {
                topo.neighbour_mac(format!("10.1.0.{i}").parse().unwrap())
                    .unwrap()
            })
            .collect();
        let probe = |sport: u16| probe_vip(sock, lb_mac, sport);

        // First on two interfaces; restarted below on lt0 alone.
        daemon.child = Some(Daemon::start_on(
            &daemon.instance,
            &daemon.state_dir,
            &daemon.log,
            &["lt0", "lt2"],
            "127.0.0.1:9180",
        ));
        wait_ready(&daemon);
        assert!(xdp_attached("lt0"));
        assert!(xdp_attached("lt2"));
        assert_eq!(
            probe(1000),
            None,
            "no VIP yet: the frame must not come back"
        );

        // An operator creates a VIP with curl.
        let vip = json!({"name": "web", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "mode": "dsr",
                         "backends": [{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13"}]});
        let (code, body) = curl(&["-X", "POST", &format!("{API}/v1/vips")], Some(&vip));
        assert_eq!(code, 201, "{body}");
        let trace = get("/v1/trace?src=198.51.100.1&sport=1001&dst=10.100.0.1&dport=80");
        assert_eq!(trace["agree"], true, "{trace}");
        let chosen: std::net::IpAddr = trace["kernel"]["backend"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let mac = probe(1001).expect("the frame came back rewritten");
        assert_eq!(
            Some(mac),
            topo.neighbour_mac(chosen),
            "rewritten for another backend than traced"
        );
        let spread: std::collections::HashSet<[u8; 6]> = (2000..2060).filter_map(probe).collect();
        assert_eq!(spread.len(), 3, "60 flows should reach all three backends");
        assert!(spread.iter().all(|m| backend_macs.contains(m)));

        let config = get("/v1/config");
        let table = get("/v1/vips/web/table");
        assert_eq!(table["digest"], table["published_digest"]);
        let dir = daemon.pin_dir();
        let (link_id, first_prog) = link_ids(&dir);

        // kill -9: the link stays, the maps keep working.
        daemon.kill9();
        assert!(xdp_attached("lt0"), "kill -9 detached the program");
        assert_eq!(probe(1001), Some(mac), "no forwarding without the daemon");

        // Frames all through the restart: every one must come back.
        let (sent, back) = frames_through(lb_mac, || {
            daemon.child = Some(Daemon::start(
                &daemon.instance,
                &daemon.state_dir,
                &daemon.log,
            ));
            wait_ready(&daemon);
        });
        println!("frames sent while the daemon restarted: {sent}, came back rewritten: {back}");
        assert!(sent > 50, "too few frames to say anything: {sent}");
        assert_eq!(back, sent, "frames lost while the daemon restarted");

        // Same configuration, same digest, same link: only the program is new.
        assert_eq!(get("/v1/config"), config);
        let again = get("/v1/vips/web/table");
        assert_eq!(again["digest"], table["digest"]);
        assert_eq!(again["published_digest"], table["digest"]);
        let (same_link, second_prog) = link_ids(&dir);
        assert_eq!(
            same_link, link_id,
            "the restart replaced the link (a detach)"
        );
        assert_ne!(
            second_prog, first_prog,
            "the new daemon's program is not the one running"
        );
        assert!(
            daemon.logs().contains("program upgraded in place"),
            "{}",
            daemon.logs()
        );
        assert_eq!(probe(1001), Some(mac));
        // lt2, left out of --iface this time, stays attached but runs the
        // new program: the old one's settings and filters (its own global
        // data) would be frozen.
        assert_eq!(link_ids_of(&dir, "lt2").1, second_prog);
        assert!(
            daemon
                .logs()
                .contains("still attached though not in --iface"),
            "{}",
            daemon.logs()
        );

        // A second daemon for the same instance is refused before it
        // touches anything.
        let second_log = daemon.log.with_extension("second");
        let mut second = Daemon::start_on(
            &daemon.instance,
            &daemon.state_dir,
            &second_log,
            &["lt0"],
            "127.0.0.1:9181",
        );
        let status = exit_of(&mut second, "a second daemon for the instance");
        let said = std::fs::read_to_string(&second_log).unwrap_or_default();
        let _ = std::fs::remove_file(&second_log);
        assert!(!status.success(), "{said}");
        assert!(
            said.contains("another `lethe serve` runs instance"),
            "{said}"
        );
        assert_eq!(link_ids(&dir), (same_link, second_prog));
        assert_eq!(get("/v1/config"), config);
        assert_eq!(probe(1001), Some(mac));

        // lethe down is refused while the daemon runs: it would leave a
        // ready daemon balancing nothing, its lock on a removed directory.
        let (ok, _, err) = lethe(&["down", "--instance", &daemon.instance]);
        assert!(!ok, "lethe down beside a running daemon succeeded");
        assert!(err.contains("a `lethe serve` runs instance"), "{err}");
        assert!(xdp_attached("lt0"));
        assert_eq!(link_ids(&dir), (same_link, second_prog));
        assert_eq!(probe(1001), Some(mac));

        // SIGHUP (a closed terminal): logged, nothing else.
        let pid = daemon.child.as_ref().unwrap().id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(curl(&[&format!("{API}/ready")], None).0, 200);
        assert!(
            daemon.logs().contains("SIGHUP ignored"),
            "{}",
            daemon.logs()
        );

        // SIGTERM: a clean exit, still attached, though a client stalls
        // half-way through a request body.
        let mut stalled = std::net::TcpStream::connect("127.0.0.1:9180").unwrap();
        std::io::Write::write_all(
            &mut stalled,
            b"PUT /v1/config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"vips\": ",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut child = daemon.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let stopping = Instant::now();
        // It gives the open request its grace (5 s)...
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            child.try_wait().unwrap().is_none(),
            "stopped without the grace for the open request"
        );
        // ... which a second SIGTERM cuts short.
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = exit_of(&mut child, "a daemon told to stop, a request open");
        assert!(
            stopping.elapsed() < Duration::from_millis(4500),
            "a second SIGTERM did not cut the grace short: {:?}",
            stopping.elapsed()
        );
        assert!(status.success(), "{status:?}\n{}", daemon.logs());
        assert!(
            daemon.logs().contains("requests still open when stopping"),
            "{}",
            daemon.logs()
        );
        drop(stalled);
        assert!(xdp_attached("lt0"));

        // lethe down: detached and unpinned.
        let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .args(["down", "--instance", &daemon.instance])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("detached lt0"));
        assert!(!xdp_attached("lt0"), "still attached after lethe down");
        assert!(!dir.exists());
        assert_eq!(probe(1001), None);
    });
}

fn lethe(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The CLI client drives the daemon's API: every command once, and the
/// API's problems come through as clear errors with a failing exit code.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn cli_commands_drive_the_daemon() {
    let mut daemon = Daemon::named("t-cli");
    in_new_netns(move || {
        let _topo = Topology::create();
        daemon.run();

        let ok = |args: &[&str], want: &str| {
            let (success, out, err) = lethe(args);
            assert!(success, "lethe {args:?} failed: {err}");
            assert!(out.contains(want), "lethe {args:?}: {want:?} not in\n{out}");
            out
        };
        let fails = |args: &[&str], want: &str| {
            let (success, out, err) = lethe(args);
            assert!(!success, "lethe {args:?} succeeded: {out}");
            assert!(err.contains(want), "lethe {args:?}: {want:?} not in\n{err}");
        };

        ok(
            &[
                "vip",
                "add",
                "web",
                "--address",
                "10.100.0.1",
                "--port",
                "80",
            ],
            "added VIP web",
        );
        ok(
            &["backend", "add", "web", "10.1.0.11"],
            "added backend 10.1.0.11",
        );
        ok(
            &["backend", "add", "web", "10.1.0.12", "--weight", "2"],
            "weight 2",
        );
        // Every mode is reachable from the CLI.
        for (name, mode, port) in [
            ("w-ipip", "ipip", "81"),
            ("w-gue", "gue", "82"),
            ("w-nat", "nat", "83"),
        ] {
            ok(
                &[
                    "vip",
                    "add",
                    name,
                    "--address",
                    "10.100.0.1",
                    "--port",
                    port,
                    "--mode",
                    mode,
                ],
                &format!("added VIP {name}"),
            );
        }
        let list = ok(&["vip", "list"], "web");
        assert!(
            list.contains("10.100.0.1") && list.contains("dsr"),
            "{list}"
        );
        for mode in ["ipip", "gue", "nat"] {
            assert!(list.contains(mode), "{mode} not in\n{list}");
        }
        for name in ["w-ipip", "w-gue", "w-nat"] {
            ok(&["vip", "del", name], name);
        }
        let backends = ok(&["backend", "list", "web"], "10.1.0.12");
        assert!(
            backends.contains("43691"),
            "weight 2 of 3 holds 43691 slots:\n{backends}"
        );
        ok(
            &["backend", "set", "web", "10.1.0.11", "--weight", "0"],
            "updated backend 10.1.0.11",
        );
        assert!(ok(&["backend", "list", "web"], "10.1.0.11").contains("65537"));
        ok(
            &[
                "trace",
                "--src",
                "192.0.2.1",
                "--sport",
                "999",
                "--dst",
                "10.100.0.1",
                "--dport",
                "80",
            ],
            "agree",
        );
        ok(&["stats"], "web");
        let config = ok(&["config", "get"], "\"web\"");
        assert!(serde_json::from_str::<Value>(&config).is_ok());

        // Conflicts and invalid values come back as the API said them.
        fails(
            &[
                "vip",
                "add",
                "web",
                "--address",
                "10.100.0.9",
                "--port",
                "81",
            ],
            "409",
        );
        fails(
            &["backend", "set", "web", "10.1.0.11", "--weight", "70000"],
            "422",
        );
        fails(
            &["backend", "del", "nope", "10.1.0.11"],
            "no VIP named \"nope\"",
        );
        fails(&["backend", "add", "web", "not-an-ip"], "invalid value");

        // A whole configuration from a file, guarded by an ETag.
        let file = daemon.state_dir.join("new.json");
        std::fs::create_dir_all(&daemon.state_dir).unwrap();
        std::fs::write(
            &file,
            json!({"vips": [{"name": "dns", "address": "10.100.0.2", "port": 53, "protocol": "udp",
                              "backends": [{"address": "10.1.0.13"}]}]})
            .to_string(),
        )
        .unwrap();
        let f = file.to_str().unwrap();
        fails(
            &["config", "apply", f, "--if-match", "\"0000000000000000\""],
            "412",
        );
        ok(&["config", "apply", f], "applied");
        ok(&["vip", "list"], "dns");
        ok(&["vip", "del", "dns"], "deleted VIP dns");
        assert!(!ok(&["vip", "list"], "NAME").contains("dns"));

        // With no daemon there, the error says so.
        let (success, _, err) = lethe(&["vip", "list", "--api", "http://127.0.0.1:1"]);
        assert!(
            !success && err.contains("is `lethe serve` running there?"),
            "{err}"
        );
    });
}

/// A TCP connection whose receive buffer is tiny (set before the handshake,
/// so the advertised window stays small): a reader that stalls for real
/// instead of being absorbed by megabytes of loopback buffers.
fn small_buffer_connect(addr: std::net::SocketAddrV4) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a new fd, checked; the fd is handed to
    // TcpStream, which owns it from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 2048;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(addr.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        std::net::TcpStream::from_raw_fd(fd)
    }
}

/// Decision events from real frames reach `lethe tail` and filtered SSE
/// readers; a reader that stops reading loses events (told when it reads
/// again, and counted) while the others get every one; `lethe tail`
/// reconnects when the daemon restarts.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn events_reach_tail_and_sse_and_a_stalled_reader_slows_nobody() {
    use std::io::{BufRead, BufReader, Read, Write};

    let mut daemon = Daemon::named("t-events");
    in_new_netns(move || {
        let topo = Topology::create();
        let pass = PassProgram::load().unwrap();
        let _peer = pass.attach(ifindex("lt1"), AttachMode::Native).unwrap();
        let sock = RawSocket::bind(ifindex("lt1")).unwrap();
        let lb_mac = topo.iface_mac("lt0");
        daemon.run();
        let vip = json!({"name": "web", "address": "10.100.0.1", "port": 80, "protocol": "tcp",
                         "event_sample_rate": 1,
                         "backends": [{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13"}]});
        assert_eq!(
            curl(&["-X", "POST", &format!("{API}/v1/vips")], Some(&vip)).0,
            201
        );
        let send = |from: u16, n: u16, pace: bool| {
            for i in 0..n {
                sock.send(&Flow::tcp("198.51.100.5", from + i, "10.100.0.1", 80).frame(lb_mac))
                    .unwrap();
                // About 2,500 events a second: what a live reader keeps up
                // with on two cores shared with everything else here.
                if pace && i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };

        // lethe tail, a filtered SSE reader, and one that never reads.
        // Bounded (timeout(1)): a tail that never gets its 40 events must
        // fail the test, not hang it.
        let tail = Command::new("timeout")
            .args(["60", env!("CARGO_BIN_EXE_lethe")])
            .args(["tail", "--vip", "web", "--count", "40"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut sse = Command::new("curl")
            .args([
                "-sN",
                "--max-time",
                "60",
                &format!("{API}/v1/events?kind=decision&verdict=tx&vip=web"),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stalled = small_buffer_connect("127.0.0.1:9180".parse().unwrap());
        stalled
            .write_all(b"GET /v1/events HTTP/1.1\r\nHost: lethe\r\n\r\n")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while get("/v1/stats")["events"]["readers"].as_u64().unwrap() < 3 {
            assert!(Instant::now() < deadline, "readers did not connect");
            std::thread::sleep(Duration::from_millis(20));
        }

        send(1000, 40, false);
        let out = tail.wait_with_output().unwrap();
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 40, "{lines:?}");
        for l in &lines {
            assert!(
                l.contains("tcp 198.51.100.5:") && l.contains("→ web (10.100.0.1:80) ⇒ 10.1.0.1"),
                "{l}"
            );
            assert!(l.ends_with("dsr lt0 fwd_tx"), "{l}");
        }

        // A burst larger than the channel (4096 events) plus what socket
        // buffers absorb (the server's send buffer grows to 4 MiB): the
        // stalled reader falls behind; a live reader, read as it comes,
        // gets every event.
        let burst = 24_000u16;
        let expected = 40 + u32::from(burst);
        let live = {
            let stdout = sse.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let (mut decisions, mut lost) = (0u32, Vec::new());
                let mut line = String::new();
                while decisions < expected {
                    line.clear();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        break;
                    }
                    if let Some(data) = line.strip_prefix("data:") {
                        let v: Value = serde_json::from_str(data.trim()).unwrap();
                        match v["kind"].as_str() {
                            Some("decision") if v["verdict"] == "tx" => decisions += 1,
                            _ => lost.push(v),
                        }
                    }
                }
                (decisions, lost)
            })
        };
        send(10_000, burst, true);
        let (decisions, other) = live.join().unwrap();
        assert_eq!(
            decisions, expected,
            "the live reader missed events: {other:?}"
        );
        assert!(other.is_empty(), "{other:?}");
        let _ = sse.kill();
        let _ = sse.wait();

        // The stalled reader, reading at last, is told what it lost.
        stalled
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 65536];
        while !seen.contains("event: lost") {
            let n = stalled.read(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "the stalled reader got no lost notice ({e}); stats {}; it last read: {}",
                    get("/v1/stats")["events"],
                    &seen[seen.len().saturating_sub(600)..]
                )
            });
            assert!(n > 0, "stream closed before a lost notice");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.len() > 4 << 20 {
                seen.drain(..seen.len() - 4096);
            }
        }
        let stats = get("/v1/stats");
        assert!(
            stats["events"]["lost_by_slow_readers"].as_u64().unwrap() > 0,
            "{stats}"
        );
        assert_eq!(stats["events"]["decisions_lost_ring_full"], 0);
        drop(stalled);

        // lethe tail follows the daemon across a restart.
        let mut tail = Command::new("timeout")
            .args(["60", env!("CARGO_BIN_EXE_lethe")])
            .args(["tail", "--kind", "config", "--count", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            curl(
                &["-X", "PATCH", &format!("{API}/v1/vips/web")],
                Some(&json!({"event_sample_rate": 0}))
            )
            .0,
            200
        );
        daemon.kill9();
        daemon.run();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Until tail is back on the new daemon, changes are not seen:
            // keep changing the sample rate until tail prints its second line.
            let rate = json!({"event_sample_rate": 2});
            curl(&["-X", "PATCH", &format!("{API}/v1/vips/web")], Some(&rate));
            curl(
                &["-X", "PATCH", &format!("{API}/v1/vips/web")],
                Some(&json!({"event_sample_rate": 0})),
            );
            if tail.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "lethe tail did not come back");
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = tail.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.lines().all(|l| l.contains(" config vip patch web ")),
            "{text}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("reconnected"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The outer source of every live, sourced backend record (the first ids;
/// they are handed out lowest first).
fn outer_sources(dir: &Path) -> Vec<std::net::IpAddr> {
    outer_sources_of(dir, lethe::abi::FAMILY_INET6)
}

/// The outer sources of the backends of one family (in id order).
fn outer_sources_of(dir: &Path, family: u8) -> Vec<std::net::IpAddr> {
    use libbpf_rs::{MapCore, MapFlags, MapHandle};
    let backends = MapHandle::from_pinned_path(dir.join("backends")).unwrap();
    let srcs = MapHandle::from_pinned_path(dir.join("backend_srcs")).unwrap();
    (0..64u32)
        .filter_map(|id| {
            let rec = backends.lookup(&id.to_ne_bytes(), MapFlags::ANY).ok()??;
            // struct lethe_backend: addr[16], port, family, flags, vip_id.
            if rec[18] != family || rec[19] & lethe::abi::BACKEND_F_SRC == 0 {
                return None;
            }
            let src = srcs.lookup(&id.to_ne_bytes(), MapFlags::ANY).ok()??;
            Some(if family == lethe::abi::FAMILY_INET6 {
                std::net::IpAddr::from(<[u8; 16]>::try_from(&src[..16]).ok()?)
            } else {
                std::net::IpAddr::from(<[u8; 4]>::try_from(&src[..4]).ok()?)
            })
        })
        .collect()
}

/// Waits up to 5 s for the outer sources of `family` to be `want`.
fn until_sources(d: &Daemon, family: u8, want: &[&str], why: &str) {
    let want: Vec<std::net::IpAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while outer_sources_of(&d.pin_dir(), family) != want {
        assert!(
            Instant::now() < deadline,
            "sources {:?}, not {want:?}, 5 s after {why}\n{}",
            outer_sources_of(&d.pin_dir(), family),
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon follows the host: an address and a route that change the
/// source the kernel picks towards a backend republish it with that source.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn outer_sources_follow_address_and_route_changes() {
    let mut daemon = Daemon::named("t-src");
    in_new_netns(move || {
        let _topo = Topology::create();
        daemon.run();
        let vip = json!({"name": "t6", "address": "fd00:100::1", "port": 80, "protocol": "tcp",
                         "mode": "ipip", "backends": [{"address": "fd00:1::11"}]});
        let (code, body) = curl(&["-X", "POST", &format!("{API}/v1/vips")], Some(&vip));
        assert_eq!(code, 201, "{body}");
        let dir = daemon.pin_dir();
        let first: std::net::IpAddr = "fd00:1::1".parse().unwrap();
        let moved: std::net::IpAddr = "fd00:1::5".parse().unwrap();
        assert_eq!(outer_sources(&dir), vec![first]);

        sh("ip -6 addr add fd00:1::5/64 dev lt0 nodad");
        sh("ip -6 route add fd00:1::11/128 dev lt0 src fd00:1::5");
        let deadline = Instant::now() + Duration::from_secs(5);
        while outer_sources(&dir) != vec![moved] {
            assert!(
                Instant::now() < deadline,
                "sources {:?} 5 s after the route change\n{}",
                outer_sources(&dir),
                daemon.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(daemon.logs().contains("outer source addresses changed"));
        let trace = get("/v1/trace?src=2001:db8:c::1&sport=1001&dst=fd00:100::1&dport=80");
        assert_eq!(trace["agree"], true, "{trace}");

        // The route and the address go while no daemon runs: the next one
        // resolves the sources again before it is ready.
        daemon.kill9();
        sh("ip -6 route del fd00:1::11/128 && ip -6 addr del fd00:1::5/64 dev lt0");
        assert_eq!(outer_sources(&dir), vec![moved], "changed without a daemon");
        daemon.run();
        assert_eq!(
            outer_sources(&dir),
            vec![first],
            "a restarted daemon kept a source resolved before it\n{}",
            daemon.logs()
        );

        // A link that goes down takes its IPv4 routes out of use with no
        // route message: the link's message alone must bring the source
        // back to the route left (10.9.0.0/16 via lt0).
        let vip = json!({"name": "t4", "address": "10.100.0.7", "port": 80, "protocol": "tcp",
                         "mode": "ipip", "backends": [{"address": "10.9.0.77"}]});
        let (code, body) = curl(&["-X", "POST", &format!("{API}/v1/vips")], Some(&vip));
        assert_eq!(code, 201, "{body}");
        let v4 = lethe::abi::FAMILY_INET;
        until_sources(&daemon, v4, &["10.1.0.1"], "the VIP was added");
        // (No IPv6 on lt4 and its peer: their addresses would go with the
        // link, and their
        // messages would hide a missing link message.)
        sh("sysctl -qw net.ipv6.conf.lt4.disable_ipv6=1 net.ipv6.conf.lt5.disable_ipv6=1");
        sh("ip route add 10.9.0.77/32 via 10.3.0.254 dev lt4");
        until_sources(&daemon, v4, &["10.3.0.1"], "a route through lt4");
        // Quiet first: IPv6 duplicate address detection still running on
        // the topology's links ends in address and route messages.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Command::new("ip")
            .args(["-6", "addr", "show", "tentative"])
            .output()
            .unwrap()
            .stdout
            .is_empty()
        {
            assert!(Instant::now() < deadline, "IPv6 addresses still tentative");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        sh("ip link set lt4 down");
        until_sources(&daemon, v4, &["10.1.0.1"], "lt4 went down");
    });
}

/// The kernel's id of the map pinned at `dir/name`.
fn pinned_map_id(dir: &Path, name: &str) -> u32 {
    use libbpf_rs::MapCore;
    libbpf_rs::MapHandle::from_pinned_path(dir.join(name))
        .unwrap()
        .info()
        .unwrap()
        .info
        .id
}

/// An upgrade whose maps are laid out differently (here: a stamp of
/// another layout, a `backends` pin of another value size as an older
/// build's, and a pin of a map this build does not have): the new daemon
/// adopts none of it. It fills fresh maps while the old program forwards,
/// moves the link over in place, replaces the pins; no frame is lost. The
/// next restart adopts the new pins as usual.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn a_layout_change_moves_to_fresh_maps_without_a_gap() {
    let mut daemon = Daemon::named("t-layout");
    in_new_netns(move || {
        let wire = Wire::new();
        let (sock, lb_mac) = (&wire.sock, wire.lb_mac);

        let mac = start_with_web(&mut daemon, &wire);
        let config = get("/v1/config");
        let digest = get("/v1/vips/web/table")["digest"].clone();
        let dir = daemon.pin_dir();
        assert_eq!(pin::pins(&dir), pin::Pins::Current);
        let (link_id, first_prog) = link_ids(&dir);
        let old_vips = pinned_map_id(&dir, "vips");

        // kill -9, then the pins as another build left them.
        daemon.kill9();
        pin::write_layout(&dir, pin::LAYOUT ^ 1).unwrap();
        let other = |name: &str, value_size: u32| {
            let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
                sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
                ..Default::default()
            };
            let mut m = libbpf_rs::MapHandle::create(
                libbpf_rs::MapType::Array,
                Some("older"),
                4,
                value_size,
                8,
                &opts,
            )
            .unwrap();
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            m.pin(&path).unwrap();
        };
        other("backends", 12);
        other("retired_map", 4);
        assert_eq!(
            pin::pins(&dir),
            pin::Pins::Other {
                stamp: Some(pin::LAYOUT ^ 1)
            }
        );
        assert_eq!(
            probe_vip(sock, lb_mac, 1001),
            Some(mac),
            "the old program stopped forwarding on its own maps"
        );

        let (sent, back) = frames_through(lb_mac, || {
            daemon.child = Some(Daemon::start(
                &daemon.instance,
                &daemon.state_dir,
                &daemon.log,
            ));
            wait_ready(&daemon);
        });
        println!("frames sent while the daemon moved to fresh maps: {sent}, came back: {back}");
        assert!(sent > 50, "too few frames to say anything: {sent}");
        assert_eq!(back, sent, "frames lost while moving to fresh maps");
        let logs = daemon.logs();
        assert!(logs.contains("in another layout"), "{logs}");
        assert!(logs.contains("moved to fresh maps"), "{logs}");

        // Fresh maps, pinned in this build's layout; same link, new program.
        assert_eq!(pin::pins(&dir), pin::Pins::Current);
        assert_eq!(pin::read_layout(&dir), Some(pin::LAYOUT));
        let new_vips = pinned_map_id(&dir, "vips");
        assert_ne!(new_vips, old_vips, "the old maps were adopted");
        assert!(!dir.join("retired_map").exists(), "a stale pin was left");
        let backends = libbpf_rs::MapHandle::from_pinned_path(dir.join("backends")).unwrap();
        use libbpf_rs::MapCore;
        assert_eq!(
            backends.value_size() as usize,
            std::mem::size_of::<lethe::dataplane::types::lethe_backend>()
        );
        let (same_link, second_prog) = link_ids(&dir);
        assert_eq!(same_link, link_id, "the move detached the program");
        assert_ne!(second_prog, first_prog);
        assert_eq!(
            libbpf_rs::Program::fd_from_pinned_path(pin::prog_path(&dir))
                .and_then(|fd| libbpf_rs::Program::id_from_fd(std::os::fd::AsFd::as_fd(&fd)))
                .unwrap(),
            second_prog,
            "the pinned program is not the one running"
        );
        assert_eq!(get("/v1/config"), config);
        assert_eq!(get("/v1/vips/web/table")["published_digest"], digest);
        assert_eq!(probe_vip(sock, lb_mac, 1001), Some(mac));

        // The next restart adopts them: no second move.
        daemon.kill9();
        daemon.run();
        assert_eq!(pinned_map_id(&dir, "vips"), new_vips, "moved again");
        assert_eq!(daemon.logs().matches("moved to fresh maps").count(), 1);
        assert_eq!(probe_vip(sock, lb_mac, 1001), Some(mac));
    });
}

/// A daemon started without its saved configuration (the wrong
/// --state-dir) while the pinned maps hold VIPs refuses to start: applying
/// the empty configuration would remove every VIP being balanced. The
/// links, maps and forwarding stay as they were; started with its state
/// directory, it goes on.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn without_its_saved_configuration_a_daemon_leaves_pinned_vips_alone() {
    let mut daemon = Daemon::named("t-nostate");
    in_new_netns(move || {
        let wire = Wire::new();
        let (sock, lb_mac) = (&wire.sock, wire.lb_mac);
        let mac = start_with_web(&mut daemon, &wire);
        let dir = daemon.pin_dir();
        let ids = link_ids(&dir);
        let vips = pinned_map_id(&dir, "vips");
        daemon.kill9();

        let elsewhere = daemon.state_dir.with_extension("elsewhere");
        let log = daemon.log.with_extension("elsewhere");
        let mut wrong = Daemon::start_on(
            &daemon.instance,
            &elsewhere,
            &log,
            &["lt0"],
            "127.0.0.1:9180",
        );
        let status = exit_of(&mut wrong, "a daemon without its saved configuration");
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        assert!(!status.success(), "{said}");
        assert!(said.contains("holds no saved configuration"), "{said}");
        assert!(said.contains("hold 1 VIPs"), "{said}");
        assert!(!elsewhere.exists(), "it wrote a state directory");
        assert_eq!(link_ids(&dir), ids, "the link or its program changed");
        assert_eq!(pinned_map_id(&dir, "vips"), vips);
        assert_eq!(
            probe_vip(sock, lb_mac, 1001),
            Some(mac),
            "forwarding stopped"
        );

        daemon.run();
        assert_eq!(get("/v1/vips/web")["address"], "10.100.0.1");
        assert_eq!(probe_vip(sock, lb_mac, 1001), Some(mac));
    });
}

#[test]
#[ignore = "needs root: netns, XDP, bpffs"]
fn a_start_that_fails_detaches_what_it_attached_and_a_kept_mode_is_told() {
    let mut daemon = Daemon::named("t-attach");
    in_new_netns(move || {
        let _topo = Topology::create();
        let dir = daemon.pin_dir();
        // A saved configuration this version refuses (written by hand, or
        // accepted by an earlier version): refused before anything is
        // loaded or attached.
        let saved = daemon.state_dir.join(&daemon.instance);
        std::fs::create_dir_all(&saved).unwrap();
        let loopback = json!({"vips": [{"name": "web", "address": "10.100.0.1", "port": 80,
                                        "protocol": "tcp", "backends": [{"address": "127.0.0.1"}]}]});
        std::fs::write(saved.join("config.json"), loopback.to_string()).unwrap();
        let mut child = Daemon::start(&daemon.instance, &daemon.state_dir, &daemon.log);
        let status = exit_of(&mut child, "a start with a refused saved configuration");
        assert!(!status.success(), "{}", daemon.logs());
        assert!(
            daemon.logs().contains("is refused by this version"),
            "{}",
            daemon.logs()
        );
        assert!(!xdp_attached("lt0"));
        assert!(pin::links(&dir).is_empty());
        std::fs::remove_file(saved.join("config.json")).unwrap();

        // lo has no native XDP: the start fails after lt0 is attached.
        let mut child = Daemon::spawn(
            &daemon.instance,
            &daemon.state_dir,
            &daemon.log,
            &["--iface", "lt0", "--iface", "lo"],
        );
        let status = exit_of(&mut child, "a start that cannot attach to lo");
        assert!(!status.success(), "{}", daemon.logs());
        assert!(
            daemon
                .logs()
                .contains("attaching to lo (its driver has no native XDP: --generic"),
            "{}",
            daemon.logs()
        );
        assert!(!xdp_attached("lt0"), "lt0 left attached by a failed start");
        assert!(!pin::link_path(&dir, "lt0").exists());

        // Attached in generic mode, then restarted without --generic: the
        // link keeps its mode, and the log says so.
        daemon.child = Some(Daemon::spawn(
            &daemon.instance,
            &daemon.state_dir,
            &daemon.log,
            &["--iface", "lt0", "--generic"],
        ));
        wait_ready(&daemon);
        let mut generic = daemon.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(generic.id() as i32, libc::SIGTERM) };
        assert!(exit_of(&mut generic, "a daemon told to stop").success());
        daemon.run();
        assert!(
            daemon.logs().contains("though native was asked for"),
            "{}",
            daemon.logs()
        );
        assert_eq!(
            lethe::dataplane::xdp_query(ifindex("lt0")).unwrap().mode,
            lethe::dataplane::XdpMode::Generic
        );
    });
}

#[test]
#[ignore = "needs root: netns, XDP, bpffs"]
fn an_interface_made_again_is_attached_again() {
    let mut daemon = Daemon::named("t-relink");
    in_new_netns(move || {
        let _topo = Topology::create();
        let dir = daemon.pin_dir();
        daemon.child = Some(Daemon::start_on(
            &daemon.instance,
            &daemon.state_dir,
            &daemon.log,
            &["lt0", "lt2"],
            "127.0.0.1:9180",
        ));
        wait_ready(&daemon);
        let linked = |want: u32| {
            lethe::dataplane::pinned_link(&pin::link_path(&dir, "lt2"))
                .unwrap()
                .is_some_and(|l| l.ifindex == want)
        };
        let old = ifindex("lt2");
        assert!(linked(old));

        // Gone: the daemon is not ready (one of its ports is missing).
        sh("ip link del lt2");
        let until = |what: &str, ok: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ok() {
                assert!(Instant::now() < deadline, "{what}:\n{}", daemon.logs());
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        until("still ready with lt2 gone", &|| {
            curl(&[&format!("{API}/ready")], None).0 == 503
        });

        // Back, with another index: attached again, ready again.
        sh("ip link add lt2 type veth peer name lt3 && ip link set lt2 up && ip link set lt3 up");
        let new = ifindex("lt2");
        assert_ne!(new, old);
        until("lt2 not attached again", &|| {
            linked(new) && xdp_attached("lt2")
        });
        until("not ready again", &|| {
            curl(&[&format!("{API}/ready")], None).0 == 200
        });
        assert!(
            daemon.logs().contains("interface back: attached again"),
            "{}",
            daemon.logs()
        );
    });
}
