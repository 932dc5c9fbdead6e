//! `lethe doctor` in the lab (`scripts/lab.sh`): on a healthy lab it finds
//! no problem, on the load balancer and on a backend; then each setting is
//! broken in turn, and the doctor must name it with its fix and exit 1. The
//! setting is restored by running the very fix it printed (where that is a
//! command that fixes it), and the doctor must be content again.
//!
//! Privileged: needs root (BPF, bpffs, network namespaces). Each test has
//! its own lab under a prefix unique to the run, removed by `Drop` also
//! when the test panics; processes the lab started are stopped by PID.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lethe");

struct Lab {
    prefix: String,
    /// Daemons this test started itself (after stopping the lab's).
    daemons: Vec<Child>,
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Lab {
    fn up(tag: &str) -> Lab {
        let lab = Lab {
            prefix: format!("ld{tag}{}", std::process::id()),
            daemons: Vec::new(),
        };
        let out = lab.script("up");
        assert!(out.status.success(), "scripts/lab.sh up: {}", text(&out));
        lab
    }

    fn script(&self, cmd: &str) -> Output {
        Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/lab.sh"))
            .args([cmd, "--prefix", &self.prefix, "--no-traffic", "--no-build"])
            .env("LETHE_BIN", BIN)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/lab.sh")
    }

    fn netns(&self, ns: &str) -> String {
        format!("/run/netns/{}-{ns}", self.prefix)
    }

    /// A shell command in namespace `ns` (nsenter: /sys/fs/bpf stays
    /// visible); its output, or a panic.
    fn sh(&self, ns: &str, cmd: &str) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns(ns)))
            .args(["sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .expect("spawn nsenter");
        assert!(out.status.success(), "[{ns}] {cmd}: {}", text(&out));
        text(&out)
    }

    /// `lethe doctor ARGS` in namespace `ns`: (exit code, stdout).
    fn doctor(&self, ns: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns(ns)))
            .arg(BIN)
            .arg("doctor")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn lethe doctor");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("[{ns}] lethe doctor {}\n{stdout}", args.join(" "));
        (out.status.code().unwrap_or(-1), stdout)
    }

    /// Processes of this lab (`lethe serve` of its instance, its HTTP
    /// servers), found by their exact arguments.
    fn processes(&self) -> Vec<i32> {
        let instance = format!("{}-lb", self.prefix);
        let state = format!("/tmp/{}", self.prefix);
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let has = |flag: &str, value: &str| {
                args.windows(2)
                    .any(|w| w[0] == flag.as_bytes() && w[1] == value.as_bytes())
            };
            if has("--instance", &instance) || has("--state", &state) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops the lab's `lethe serve` (by PID) and waits until it is gone.
    fn kill_daemon(&self) {
        let instance = format!("{}-lb", self.prefix);
        let pids: Vec<i32> = self
            .processes()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| {
                        let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                        args.contains(&b"serve".as_slice()) && args.contains(&instance.as_bytes())
                    })
                    .unwrap_or(false)
            })
            .collect();
        assert_eq!(pids.len(), 1, "the lab's daemon: {pids:?}");
        // SAFETY: kill(2) of the daemon this lab started.
        unsafe { libc::kill(pids[0], libc::SIGKILL) };
        let start = Instant::now();
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pids[0], 0) } == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "daemon lingers");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `cmd` (a `lethe serve` command line) in the lb namespace in
    /// the background and waits for /ready.
    fn start_daemon(&mut self, cmd: &str) {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(args[0], "lethe", "{cmd}");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns("lb")))
            .arg(BIN)
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lethe serve");
        self.daemons.push(child);
        let start = Instant::now();
        loop {
            let out = Command::new("nsenter")
                .arg(format!("--net={}", self.netns("lb")))
                .args(["curl", "-sf", "http://127.0.0.1:9180/ready"])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "`{cmd}` never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a fix the doctor printed, in namespace `ns` (`lethe` is this
    /// build).
    fn apply_fix(&self, ns: &str, fix: &str) {
        let cmd = match fix.strip_prefix("lethe ") {
            Some(rest) => format!("{BIN} {rest}"),
            None => fix.to_string(),
        };
        self.sh(ns, &cmd);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        let out = self.script("down");
        if !out.status.success() {
            eprintln!(
                "scripts/lab.sh down --prefix {}: {}",
                self.prefix,
                text(&out)
            );
        }
        // What `down` leaves running (a background job's PID is its
        // subshell's): stopped by PID.
        for pid in self.processes() {
            // SAFETY: kill(2) of a process this lab started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The fix printed under the PROBLEM line that contains every one of
/// `needles`, without its parenthesised note.
fn fix_of(report: &str, needles: &[&str]) -> String {
    let lines: Vec<&str> = report.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with("PROBLEM") && needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no PROBLEM naming {needles:?} in:\n{report}"));
    let fix = lines
        .get(i + 1)
        .and_then(|l| l.trim_start().strip_prefix("fix: "))
        .unwrap_or_else(|| panic!("no fix under {:?}", lines[i]));
    fix.split("   (").next().unwrap().trim().to_string()
}

fn healthy(code: i32, report: &str) {
    assert_eq!(code, 0, "{report}");
    assert!(!report.contains("PROBLEM"), "{report}");
    assert!(report.contains("no problem found"), "{report}");
}

/// Exit 1, and exactly one line of the problems names `needles` — with a
/// fix — returned.
fn broken(code: i32, report: &str, needles: &[&str]) -> String {
    assert_eq!(code, 1, "{report}");
    fix_of(report, needles)
}

#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn doctor_on_the_load_balancer_names_each_broken_setting() {
    let mut lab = Lab::up("l");
    let p = lab.prefix.clone();
    let instance = format!("{p}-lb");
    let state_dir = format!("/tmp/{p}/lb");
    let args = ["--instance", &instance, "--state-dir", &state_dir];
    let doctor = |lab: &Lab| lab.doctor("lb", &args);

    let (code, report) = doctor(&lab);
    healthy(code, &report);
    for dev in ["l-r", "l-b"] {
        assert!(
            report.contains(&format!("{dev}: attached in native mode")),
            "{report}"
        );
    }
    assert!(report.contains("is ready; 8 VIPs"), "{report}");
    assert!(report.contains("needs 1548"), "{report}");
    assert!(
        report.contains("for the 8 VIP addresses stay on this host"),
        "{report}"
    );

    // The VIPs routed back to the router (lab.sh blackholes them): what
    // the program passes would loop. A warning, and its fix works.
    lab.sh("lb", "ip route del blackhole 10.100.0.0/24");
    let (code, report) = doctor(&lab);
    assert_eq!(code, 0, "a warning, not a problem:\n{report}");
    let lines: Vec<&str> = report.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("WARN") && l.contains("routed back out of an attached"))
        .unwrap_or_else(|| panic!("no loop warning:\n{report}"));
    assert!(lines[at].contains("10.100.0.1 (out of l-r)"), "{report}");
    assert!(!lines[at].contains("fd00:100::"), "{report}");
    let fix = lines[at + 1]
        .trim_start()
        .strip_prefix("fix: ")
        .unwrap_or_else(|| panic!("no fix under the warning:\n{report}"));
    assert!(
        fix.contains("ip route add blackhole 10.100.0.1/32"),
        "{fix}"
    );
    lab.sh("lb", fix.split("   (").next().unwrap().trim());
    let (code, report) = doctor(&lab);
    healthy(code, &report);
    assert!(!report.contains("routed back out"), "{report}");

    // tx checksum offload on the attached veth.
    lab.sh("lb", "ethtool -K l-b tx on");
    let (code, report) = doctor(&lab);
    let fix = broken(
        code,
        &report,
        &["offload", "l-b (veth): tx checksumming on"],
    );
    assert_eq!(fix, "ethtool -K l-b tx off");
    lab.apply_fix("lb", &fix);
    let (code, report) = doctor(&lab);
    healthy(code, &report);

    // ... and on the veth's peer, in the router's namespace.
    lab.sh("router", "ethtool -K r-lb tx on");
    let (code, report) = doctor(&lab);
    let fix = broken(code, &report, &["peer r-lb", "of l-r: tx checksumming on"]);
    assert_eq!(
        fix,
        format!("nsenter --net=/run/netns/{p}-router ethtool -K r-lb tx off")
    );
    lab.apply_fix("lb", &fix);
    healthy_again(&lab, &args);

    // GRO off on the peer of a veth XDP redirects into.
    lab.sh("sw", "ethtool -K sw-lb gro off");
    let (code, report) = doctor(&lab);
    let fix = broken(code, &report, &["peer sw-lb", "GRO off"]);
    lab.apply_fix("lb", &fix);
    healthy_again(&lab, &args);

    // No MTU headroom for encapsulation towards the backends.
    lab.sh("lb", "ip link set dev l-b mtu 1500");
    let (code, report) = doctor(&lab);
    let fix = broken(
        code,
        &report,
        &["mtu", "l-b (mtu 1500)", "over 1452 (gue6)", "ICMP too big"],
    );
    assert_eq!(fix, "ip link set dev l-b mtu 1548");
    lab.apply_fix("lb", &fix);
    healthy_again(&lab, &args);

    // IPv4 forwarding off on the ingress interface.
    lab.sh("lb", "sysctl -qw net.ipv4.conf.l-r.forwarding=0");
    let (code, report) = doctor(&lab);
    let fix = broken(code, &report, &["IPv4 forwarding off on l-r"]);
    assert_eq!(fix, "sysctl -w net.ipv4.conf.l-r.forwarding=1");
    lab.apply_fix("lb", &fix);
    healthy_again(&lab, &args);

    // A backend whose next hop never resolves (nobody has its address).
    lab.sh("lb", &format!("{BIN} backend add dsr4 10.1.0.99"));
    let (code, report) = doctor(&lab);
    let fix = broken(
        code,
        &report,
        &["nexthop", "backend 10.1.0.99 (dsr4) on l-b"],
    );
    assert_eq!(fix, "ping -c 1 -I l-b 10.1.0.99");
    lab.sh("lb", &format!("{BIN} backend del dsr4 10.1.0.99"));
    healthy_again(&lab, &args);

    // The daemon dies: the program keeps running, the saved configuration
    // is checked instead.
    lab.kill_daemon();
    let (code, report) = doctor(&lab);
    let serve = broken(code, &report, &["daemon", "does not answer /ready"]);
    assert_eq!(
        serve,
        format!(
            "lethe serve --iface l-b --iface l-r --instance {instance} --state-dir {state_dir}"
        )
    );
    assert_eq!(report.matches("PROBLEM").count(), 1, "{report}");
    assert!(
        report.contains(&format!(
            "saved in {state_dir}/{instance}/config.json: 8 VIPs"
        )),
        "{report}"
    );
    assert!(report.contains("l-b: attached in native mode"), "{report}");

    // The links run another program than the instance's current one (what
    // a second daemon, or a restart on fewer interfaces, used to leave):
    // their settings and filters are no daemon's.
    let dir = lethe::dataplane::pin::instance_dir(
        std::path::Path::new(lethe::dataplane::pin::BPFFS),
        &instance,
    );
    let prog = lethe::dataplane::pin::prog_path(&dir);
    let kept = dir.join("prog_kept");
    std::fs::rename(&prog, &kept).unwrap();
    let mut other = lethe::dataplane::PassProgram::load().unwrap();
    other.pin(&prog).unwrap();
    let (code, report) = doctor(&lab);
    let fix = broken(
        code,
        &report,
        &[
            "l-b: the link runs program",
            "not the instance's current program",
        ],
    );
    assert!(fix.starts_with("lethe serve"), "{fix}");
    std::fs::remove_file(&prog).unwrap();
    std::fs::rename(&kept, &prog).unwrap();
    drop(other);

    // Pins of another build's layout: a warning (forwarding goes on), with
    // the serve command that moves the instance to fresh maps.
    use lethe::dataplane::pin::{write_layout, LAYOUT};
    write_layout(&dir, LAYOUT ^ 1).unwrap();
    let (_, report) = doctor(&lab);
    assert!(
        report.contains("WARN") && report.contains("are in another layout"),
        "{report}"
    );
    write_layout(&dir, LAYOUT).unwrap();

    // ... and the program is detached.
    lab.sh("lb", &format!("{BIN} down --instance {instance}"));
    let (code, report) = doctor(&lab);
    broken(code, &report, &["xdp", "has no pinned link"]);

    // Generic mode: a warning, not a problem.
    lab.start_daemon(&format!("{serve} --generic"));
    let (code, report) = doctor(&lab);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("WARN") && report.contains("l-r: attached in generic (SKB) mode"),
        "{report}"
    );
    for mut c in lab.daemons.drain(..) {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    lab.sh("lb", &format!("{BIN} down --instance {instance}"));

    // The fix the doctor gave for the dead daemon brings everything back.
    lab.start_daemon(&serve);
    healthy_again(&lab, &args);
}

fn healthy_again(lab: &Lab, args: &[&str]) {
    let (code, report) = lab.doctor("lb", args);
    healthy(code, &report);
}

#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn doctor_on_a_backend_names_each_broken_setting() {
    let lab = Lab::up("b");
    let p = lab.prefix.clone();
    let instance = format!("{p}-b1");
    let args = [
        "--backend",
        "--vip",
        "10.100.0.1",
        "--vip",
        "fd00:100::1",
        "--encap",
        "--instance",
        &instance,
    ];
    let doctor = || lab.doctor("b1", &args);
    let (code, report) = doctor();
    healthy(code, &report);
    assert!(
        report.contains("b-eth: decap attached in native mode"),
        "{report}"
    );
    assert!(
        report.contains("b-eth: arp_ignore 1, arp_announce 2"),
        "{report}"
    );

    // Each break, what the doctor must say, and the fix it must give.
    let cases: [(&str, &[&str], String); 7] = [
        (
            "ip addr del 10.100.0.1/32 dev lo",
            &["vip", "10.100.0.1 is not on lo"],
            "ip addr add 10.100.0.1/32 dev lo".into(),
        ),
        (
            "ip -6 addr del fd00:100::1/128 dev lo",
            &["vip", "fd00:100::1 is not on lo"],
            "ip -6 addr add fd00:100::1/128 dev lo".into(),
        ),
        (
            "sysctl -qw net.ipv4.conf.all.rp_filter=1",
            &["rp_filter", "b-eth: strict (all 1, b-eth 0)"],
            "sysctl -w net.ipv4.conf.all.rp_filter=0".into(),
        ),
        (
            "sysctl -qw net.ipv4.conf.b-eth.rp_filter=1",
            &["rp_filter", "b-eth: strict (all 0, b-eth 1)"],
            "sysctl -w net.ipv4.conf.b-eth.rp_filter=0".into(),
        ),
        (
            "sysctl -qw net.ipv4.conf.all.arp_ignore=0",
            &["arp", "b-eth: arp_ignore 0", "answers ARP"],
            "sysctl -w net.ipv4.conf.all.arp_ignore=1".into(),
        ),
        (
            "sysctl -qw net.ipv4.conf.all.arp_announce=0",
            &["arp", "b-eth: arp_announce 0"],
            "sysctl -w net.ipv4.conf.all.arp_announce=2".into(),
        ),
        (
            &format!("{BIN} decap detach b-eth --instance {instance}"),
            &["decap", "no decap program attached"],
            format!("lethe decap attach b-eth --instance {instance}"),
        ),
    ];
    for (break_it, needles, want_fix) in cases {
        lab.sh("b1", break_it);
        let (code, report) = doctor();
        let fix = broken(code, &report, needles);
        assert_eq!(report.matches("PROBLEM").count(), 1, "{report}");
        assert_eq!(fix, want_fix, "{report}");
        lab.apply_fix("b1", &fix);
        let (code, report) = doctor();
        healthy(code, &report);
    }

    // Without --encap a missing decap program is no problem.
    lab.sh(
        "b1",
        &format!("{BIN} decap detach b-eth --instance {instance}"),
    );
    let (code, report) = lab.doctor(
        "b1",
        &["--backend", "--vip", "10.100.0.1", "--instance", &instance],
    );
    healthy(code, &report);
}
