//! The network-namespace lab of the fault tests: Starling nodes run as separate hosts, each in a network
//! namespace of its own, joined by veth pairs to a bridge. Everything lives inside a network
//! namespace the test makes for itself first (`unshare`), so nothing of the machine's own
//! network is touched and the addresses (10.201.0.0/24) exist only inside the test.
//!
//! Faults: cut and heal the link between two hosts (blackhole routes on both sides, so the
//! test itself still reaches every host), partition into groups, add delay and loss
//! (`tc netem`), and SIGKILL / SIGSTOP / SIGCONT a node.
//!
//! Needs root and iproute2. Where either is missing, [`Lab::new`] says why and the test
//! skips with that message.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::node::NodeProc;

/// The network all hosts share.
const NET: &str = "10.201.0";

/// Namespaces made by this process so far (names must be unique machine-wide).
static LABS: AtomicUsize = AtomicUsize::new(0);

/// One host: a network namespace with one address on the bridge.
pub struct Host {
    pub ns: String,
    pub ip: String,
}

/// A set of hosts on one bridge; removed when dropped.
pub struct Lab {
    pub hosts: Vec<Host>,
    /// Whether the kernel has `tc netem` (delay and loss); some sandboxes lack the module.
    pub netem: bool,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("`{}` could not run: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// Moves the calling thread (and every thread and process it starts afterwards) into a
    /// network namespace of its own, and builds `n` hosts there. Call it first in a test,
    /// before any runtime or client is made. `Err` says why namespaces are not available.
    pub fn new(n: usize) -> Result<Lab, String> {
        // SAFETY: unshare only changes the calling thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "network namespaces are not available here ({}); run as root on Linux",
                std::io::Error::last_os_error()
            ));
        }
        run(&["ip", "link", "set", "lo", "up"])?;
        run(&["ip", "link", "add", "stbr", "type", "bridge"])?;
        run(&["ip", "link", "set", "stbr", "up"])?;
        run(&["ip", "addr", "add", &format!("{NET}.1/24"), "dev", "stbr"])?;
        let lab_no = LABS.fetch_add(1, Ordering::Relaxed);
        // Probe netem on the bridge once: where the kernel lacks it, delay and loss faults
        // are skipped (and said so), the others still run.
        let netem = run(&[
            "tc", "qdisc", "add", "dev", "stbr", "root", "netem", "delay", "1ms",
        ])
        .and_then(|()| run(&["tc", "qdisc", "del", "dev", "stbr", "root"]))
        .is_ok();
        let mut lab = Lab {
            hosts: Vec::new(),
            netem,
        };
        for i in 0..n {
            let ns = format!("st{}-{lab_no}-{i}", std::process::id());
            let ip = format!("{NET}.{}", 10 + i);
            let (outer, inner) = (format!("sto{lab_no}-{i}"), format!("sti{lab_no}-{i}"));
            run(&["ip", "netns", "add", &ns])?;
            // Registered before the rest, so a failure below still removes it.
            lab.hosts.push(Host {
                ns: ns.clone(),
                ip: ip.clone(),
            });
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            run(&["ip", "link", "set", &inner, "netns", &ns])?;
            run(&["ip", "link", "set", &outer, "master", "stbr", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &inner,
            ])?;
            run(&["ip", "-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    /// Starts `starling node` on host `i` (its addresses on the host's IP, OS-chosen ports).
    pub fn start(&self, i: usize, extra: &[&str]) -> NodeProc {
        self.start_in(i, tempfile::tempdir().expect("temp dir"), extra)
    }

    /// Like [`Lab::start`], on a directory a previous node left (a restart).
    pub fn start_in(&self, i: usize, dir: tempfile::TempDir, extra: &[&str]) -> NodeProc {
        let h = &self.hosts[i];
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns])
            .arg(crate::bin::starling());
        NodeProc::spawn(cmd, &h.ip, dir, extra)
    }

    /// Cuts the link between hosts `a` and `b` both ways (each drops what it sends the other).
    pub fn cut(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let (ns, ip) = (&self.hosts[from].ns, &self.hosts[to].ip);
            run(&[
                "ip",
                "-n",
                ns,
                "route",
                "replace",
                "blackhole",
                &format!("{ip}/32"),
            ])
            .expect("cut");
        }
    }

    /// Heals the link between hosts `a` and `b`.
    pub fn heal(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let (ns, ip) = (&self.hosts[from].ns, &self.hosts[to].ip);
            let _ = run(&[
                "ip",
                "-n",
                ns,
                "route",
                "del",
                "blackhole",
                &format!("{ip}/32"),
            ]);
        }
    }

    /// Cuts every link between hosts of different groups.
    pub fn partition(&self, groups: &[&[usize]]) {
        for (gi, g) in groups.iter().enumerate() {
            for other in &groups[gi + 1..] {
                for &a in g.iter() {
                    for &b in other.iter() {
                        self.cut(a, b);
                    }
                }
            }
        }
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for a in 0..self.hosts.len() {
            for b in a + 1..self.hosts.len() {
                self.heal(a, b);
            }
        }
    }

    /// Delays (and optionally drops) everything host `i` sends: `netem("50ms", 5.0)`.
    /// Returns false, changing nothing, where the kernel has no netem (see [`Lab::netem`]).
    pub fn netem(&self, i: usize, delay: &str, loss_percent: f64) -> bool {
        if !self.netem {
            return false;
        }
        let loss = format!("{loss_percent}%");
        self.root_qdisc(
            i,
            &["replace", "root", "netem", "delay", delay, "loss", &loss],
        )
        .expect("netem");
        true
    }

    /// Removes host `i`'s delay and loss.
    pub fn clear_netem(&self, i: usize) {
        let _ = self.root_qdisc(i, &["del", "root"]);
    }

    /// `tc qdisc <op> dev eth0 <rest>` in host `i`'s namespace.
    fn root_qdisc(&self, i: usize, args: &[&str]) -> Result<(), String> {
        let mut cmd = vec![
            "ip",
            "netns",
            "exec",
            &self.hosts[i].ns,
            "tc",
            "qdisc",
            args[0],
        ];
        cmd.extend(["dev", "eth0"]);
        cmd.extend(&args[1..]);
        run(&cmd)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth, and with it the other end. The
        // bridge goes with the test's own namespace when the process exits.
        for h in &self.hosts {
            let _ = run(&["ip", "netns", "del", &h.ns]);
        }
    }
}

/// Sends a signal to a node (SIGKILL, SIGSTOP, SIGCONT, ...).
pub fn signal(node: &NodeProc, sig: libc::c_int) {
    // SAFETY: kill with a pid this test started.
    let r = unsafe { libc::kill(node.child.id() as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({}, {sig})", node.child.id());
}

/// Runs a fault test in a lab of `n` hosts, or prints why it is skipped.
pub fn with_lab(n: usize, test: impl FnOnce(&Lab)) {
    match Lab::new(n) {
        Ok(lab) => test(&lab),
        Err(why) => eprintln!("skipping: {why}"),
    }
}
