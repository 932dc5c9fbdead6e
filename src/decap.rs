//! `lethe decap attach|detach|status`: installs the backend-side decap
//! program on a backend host. Pinned under /sys/fs/bpf/lethe-decap/, so it
//! stays after the command returns; attaching again refreshes the host's
//! addresses and the GUE port, and upgrades the program in place.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::abi::DecapReason;
use crate::dataplane::{pin, AttachMode, DecapProgram, LinkOutcome, Pod};
use crate::serve::ifindex;

/// `<bpffs>/lethe-decap` for the default instance, `lethe-decap-<name>`
/// for others (several backend namespaces on one machine share one bpffs).
pub fn pin_dir(bpffs: &Path, instance: &str) -> PathBuf {
    if instance == "default" {
        bpffs.join("lethe-decap")
    } else {
        bpffs.join(format!("lethe-decap-{instance}"))
    }
}

/// Every address of every interface of this host (this network namespace).
pub fn host_addresses() -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills head with a list we free below; every node
    // and address pointer is checked for null before it is read.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(std::io::Error::last_os_error()).context("listing the host's addresses");
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub fn attach(
    bpffs: &Path,
    instance: &str,
    iface: &str,
    gue_port: u16,
    generic: bool,
) -> Result<()> {
    crate::serve::check_instance(instance)?;
    let idx = ifindex(iface)?;
    pin::ensure_bpffs(bpffs)?;
    let dir = pin_dir(bpffs, instance);
    let prog = DecapProgram::load_pinned(&dir).context("loading the decap program")?;
    let local = host_addresses()?;
    prog.configure(gue_port, &local)?;
    let mode = if generic {
        eprintln!("warning: generic (SKB) mode: slower; use native mode where the driver has XDP");
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    let (link, outcome) = prog
        .attach_pinned(&dir, iface, idx, mode)
        .with_context(|| format!("attaching the decap program to {iface}"))?;
    let (link_id, prog_id) = link.ids()?;
    let what = match outcome {
        LinkOutcome::Attached => "attached",
        LinkOutcome::Kept => "already attached",
        LinkOutcome::Upgraded { .. } => "upgraded in place",
    };
    println!("decap {what} on {iface} (link {link_id}, program {prog_id})");
    println!(
        "strips IPIP, IPv6-in-IPv6, IPv4-in-IPv6{} addressed to: {}",
        if gue_port == 0 {
            String::new()
        } else {
            format!(" and GUE to UDP port {gue_port}")
        },
        local
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

pub fn detach(bpffs: &Path, instance: &str, iface: &str) -> Result<()> {
    crate::serve::check_instance(instance)?;
    let dir = pin_dir(bpffs, instance);
    if !pin::detach_link(&dir, iface)? {
        bail!("no decap program attached to {iface} ({})", dir.display());
    }
    println!("decap detached from {iface}");
    if pin::links(&dir).is_empty() {
        pin::remove_instance(&dir)?;
        println!("no interface left: removed {}", dir.display());
    }
    Ok(())
}

pub fn status(bpffs: &Path, instance: &str) -> Result<()> {
    crate::serve::check_instance(instance)?;
    let dir = pin_dir(bpffs, instance);
    if !dir.is_dir() {
        println!("no decap program installed ({})", dir.display());
        return Ok(());
    }
    let ifaces: Vec<String> = pin::links(&dir).into_iter().map(|(i, _)| i).collect();
    println!("attached to: {}", ifaces.join(", "));
    let stats =
        MapHandle::from_pinned_path(dir.join("decap_stats")).context("opening decap_stats")?;
    println!("{:<12} {:>12} {:>15}", "REASON", "PACKETS", "BYTES");
    for r in DecapReason::ALL {
        let per_cpu = stats
            .lookup_percpu(&(r as u32).to_ne_bytes(), MapFlags::ANY)?
            .unwrap_or_default();
        let (mut p, mut b) = (0u64, 0u64);
        for v in per_cpu {
            if let Some(c) = crate::dataplane::types::lethe_counter::from_bytes(&v) {
                p += c.packets;
                b += c.bytes;
            }
        }
        println!("{:<12} {:>12} {:>15}", r.name(), p, b);
    }
    Ok(())
}
