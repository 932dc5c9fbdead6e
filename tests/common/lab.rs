//! `scripts/lab.sh` driven from a test: the whole lab (client, router, one
//! or two LBs, three backends running HTTP servers) under a prefix unique
//! to the test, removed by `Drop` also when the test panics.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const API: &str = "http://127.0.0.1:9180";

pub struct Lab {
    pub prefix: String,
    pub state: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    /// `scripts/lab.sh up --no-traffic --no-build` under prefix
    /// `le<tag><pid>` (namespace names stay short and unique per run).
    pub fn up(tag: &str, ecmp: bool) -> Lab {
        let prefix = format!("le{tag}{}", std::process::id());
        let lab = Lab {
            state: PathBuf::from(format!("/tmp/{prefix}")),
            prefix,
        };
        let mut args = vec!["up", "--no-traffic", "--no-build"];
        if ecmp {
            args.push("--ecmp");
        }
        let out = lab.script(&args);
        check("scripts/lab.sh up", out);
        lab
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo().join("scripts/lab.sh"))
            .args(args)
            .args(["--prefix", &self.prefix])
            .env("LETHE_BIN", env!("CARGO_BIN_EXE_lethe"))
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/lab.sh")
    }

    /// Starts `lethe serve` again in `lb` (after a kill) and waits until it
    /// is ready.
    pub fn start(&self, lb: &str) {
        check("scripts/lab.sh start", self.script(&["start", lb]));
    }

    pub fn netns(&self, name: &str) -> String {
        format!("/run/netns/{}-{name}", self.prefix)
    }

    /// A command in namespace `name` (nsenter: the machine's bpffs stays
    /// visible); its output, or a panic naming the command.
    pub fn sh(&self, name: &str, cmd: &str) -> String {
        check(&format!("[{name}] {cmd}"), self.try_sh(name, cmd))
    }

    pub fn try_sh(&self, name: &str, cmd: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns(name)))
            .args(["sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .expect("spawn nsenter")
    }

    /// Runs `f` on a thread inside namespace `name`; threads it spawns are
    /// in that namespace too.
    pub fn in_ns<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        self.spawn_in(name, f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    pub fn spawn_in<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.netns(name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; only this thread moves.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// A call to the daemon's API in `lb` with curl; (status, body as JSON
    /// or null).
    pub fn api(&self, lb: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut cmd =
            format!("curl -s -m 5 -o /dev/stdout -w '\\n%{{http_code}}' -X {method} {API}{path}");
        if let Some(b) = body {
            cmd += &format!(" -H 'Content-Type: application/json' --data-binary '{b}'");
        }
        let out = self.sh(lb, &cmd);
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        (
            code.parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    pub fn get(&self, lb: &str, path: &str) -> Value {
        let (code, v) = self.api(lb, "GET", path, None);
        assert_eq!(code, 200, "GET {path} on {lb}: {v}");
        v
    }

    /// The table digest of every VIP on `lb`, by name.
    pub fn digests(&self, lb: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = [
            "dsr4", "dsr6", "ipip4", "ipip6", "gue4", "gue6", "nat4", "nat6",
        ]
        .iter()
        .map(|v| {
            let t = self.get(lb, &format!("/v1/vips/{v}/table"));
            (
                v.to_string(),
                t["published_digest"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
        out.sort();
        out
    }

    pub fn pid(&self, what: &str) -> i32 {
        let p = self.state.join(format!("{what}.pid"));
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .parse()
            .unwrap()
    }

    /// SIGKILL to a process the lab started (its pid file), and waits until
    /// it is gone.
    pub fn kill9(&self, what: &str) {
        let pid = self.pid(what);
        // SAFETY: a plain kill(2) of a process this lab started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_until(
            Duration::from_secs(5),
            &format!("{what} ({pid}) to die"),
            || gone(pid),
        );
    }

    /// The health state of `backend` of `vip` on `lb`.
    pub fn health(&self, lb: &str, vip: &str, backend: &str) -> String {
        let v = self.get(lb, &format!("/v1/vips/{vip}/backends/{backend}"));
        v["health"].as_str().unwrap_or("?").to_string()
    }

    /// The backends a VIP's published table leaves out as down.
    pub fn table_down(&self, lb: &str, vip: &str) -> Vec<String> {
        let t = self.get(lb, &format!("/v1/vips/{vip}/table"));
        assert_eq!(t["digest"], t["published_digest"], "{t}");
        t["down"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    /// Counters of every namespace of the lab that say a checksum was bad:
    /// (namespace, counter, value) for each that is not zero.
    pub fn checksum_errors(&self) -> Vec<(String, String, u64)> {
        let mut bad = Vec::new();
        for ns in self.namespaces() {
            let out = self.sh(&ns, "cat /proc/net/snmp /proc/net/snmp6");
            for (name, value) in snmp_counters(&out) {
                if name.contains("CsumErrors") && value != 0 {
                    bad.push((ns.clone(), name, value));
                }
            }
        }
        bad
    }

    pub fn namespaces(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in ["client", "router", "lb", "lb2", "b1", "b2", "b3"] {
            if std::path::Path::new(&self.netns(n)).exists() {
                out.push(n.to_string());
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!(
                "scripts/lab.sh down --prefix {} failed: {}",
                self.prefix,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// /proc/net/snmp ("Tcp: Name Name..." then "Tcp: 1 2...") and snmp6
/// ("Name value") as (Proto+Name, value) pairs.
pub fn snmp_counters(text: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if let Some((proto, names)) = l.split_once(": ") {
            if let Some(values) = lines
                .get(i + 1)
                .and_then(|n| n.strip_prefix(&format!("{proto}: ")))
            {
                if names
                    .split_whitespace()
                    .next()
                    .is_some_and(|n| n.parse::<i64>().is_err())
                {
                    for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                        out.push((format!("{proto}{n}"), v.parse().unwrap_or(0)));
                    }
                    i += 2;
                    continue;
                }
            }
        } else if let Some((n, v)) = l.split_once(char::is_whitespace) {
            if let Ok(v) = v.trim().parse() {
                out.push((n.to_string(), v));
            }
        }
        i += 1;
    }
    out
}

pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The process has exited: no such pid, or a zombie (the lab's processes
/// are orphans, and whoever reaps orphans may take its time).
pub fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}
