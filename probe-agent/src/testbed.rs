//! Test topologies on real network namespaces (feature `testbed`; needs root, `ip` from
//! iproute2 and `iptables`).
//!
//! A [`Topology`] is a "switch" namespace holding a bridge and one namespace per host, each
//! joined to the bridge by a veth pair and addressed in 10.77.0.0/24 (or another /24, see
//! [`Topology::star_in`]). Nothing touches the host's own namespace unless a test asks for an
//! [`Uplink`] (one veth from the host onto the bridge, for processes that must stay on the
//! host); interfaces, addresses and iptables rules live in namespaces the test created, and
//! dropping a [`Netns`] or an [`Uplink`] deletes it (with everything in it), also when the
//! test panics. Names carry the process id and a counter, so tests run in parallel.
//!
//! Code runs inside a namespace on a dedicated thread that `setns`es into it: sockets keep the
//! namespace they were created in, so a listener bound by [`Netns::enter`] can be served from
//! the test's own runtime, while [`Netns::run`] runs a whole future (an engine) inside.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether the process runs as root (namespaces and iptables need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Panics with a clear message unless the testbed can work here.
pub fn require() {
    assert!(
        is_root(),
        "netns tests need root (they create network namespaces and iptables rules)"
    );
    for tool in ["ip", "iptables"] {
        let ok = Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "netns tests need `{tool}`: apt-get install -y iproute2 iptables"
        );
    }
}

fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip` with arguments.
pub fn ip(args: &[&str]) -> io::Result<String> {
    run(Command::new("ip").args(args))
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `nsl<pid>-<n>-<role>` with `lo` up.
    pub fn new(role: &str) -> io::Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("nsl{}-{n}-{role}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args…`
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> io::Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// Sets `net.ipv4.ping_group_range` inside the namespace.
    pub fn set_ping_group_range(&self, lo: u32, hi: u32) -> io::Result<()> {
        let cmd = format!("echo '{lo} {hi}' > /proc/sys/net/ipv4/ping_group_range");
        self.exec(&["sh", "-c", &cmd]).map(|_| ())
    }

    /// Inserts an iptables rule (`-I <chain> <args…>`); the guard deletes it when dropped.
    pub fn iptables(&self, chain: &str, args: &[&str]) -> io::Result<Rule<'_>> {
        let mut full = vec!["iptables", "-w", "-I", chain];
        full.extend_from_slice(args);
        self.exec(&full)?;
        Ok(Rule {
            ns: self,
            chain: chain.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
            active: true,
        })
    }

    fn open(&self) -> io::Result<File> {
        File::open(format!("/run/netns/{}", self.name))
    }

    /// Runs a closure on a thread inside the namespace (e.g. to bind sockets there).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let file = self.open()?;
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        })
    }

    /// Runs a future to completion on a single-threaded runtime inside the namespace, on a
    /// thread of its own; the returned future completes with its output.
    pub fn run<F, Fut, T>(&self, f: F) -> impl Future<Output = io::Result<T>> + use<F, Fut, T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let file = self.open();
        std::thread::spawn(move || {
            let res = (|| {
                setns(&file?, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(rt.block_on(f()))
            })();
            let _ = tx.send(res);
        });
        async move {
            rx.await
                .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("testbed: cannot delete namespace {}: {e}", self.name);
        }
    }
}

/// An iptables rule, deleted on drop (or by [`Rule::remove`]).
#[derive(Debug)]
pub struct Rule<'a> {
    ns: &'a Netns,
    chain: String,
    args: Vec<String>,
    active: bool,
}

impl Rule<'_> {
    /// Deletes the rule now.
    pub fn remove(mut self) -> io::Result<()> {
        self.delete()
    }

    fn delete(&mut self) -> io::Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let mut full = vec!["iptables", "-w", "-D", self.chain.as_str()];
        full.extend(self.args.iter().map(String::as_str));
        self.ns.exec(&full).map(|_| ())
    }
}

impl Drop for Rule<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            eprintln!("testbed: cannot delete iptables rule: {e}");
        }
    }
}

/// A host on the test bridge.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub ip: Ipv4Addr,
}

/// A bridge in its own namespace with hosts attached by veth pairs, in 10.77.0.0/24.
#[derive(Debug)]
pub struct Topology {
    // Hosts first: they are dropped before the switch.
    pub hosts: Vec<Host>,
    pub switch: Netns,
}

impl Topology {
    /// Builds a bridge with `n` hosts at 10.77.0.1 … 10.77.0.n.
    pub fn star(n: u8) -> io::Result<Topology> {
        Topology::star_in(Ipv4Addr::new(10, 77, 0, 0), n)
    }

    /// Builds a bridge with `n` hosts at `.1` … `.n` of the /24 that `net` starts. A topology
    /// with an [`Uplink`] puts a route into the host's namespace, so such tests pick a /24 of
    /// their own rather than share 10.77.0.0/24.
    pub fn star_in(net: Ipv4Addr, n: u8) -> io::Result<Topology> {
        let [a, b, c, _] = net.octets();
        let switch = Netns::new("sw")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let mut hosts = Vec::new();
        for i in 0..n {
            let ns = Netns::new(&format!("h{i}"))?;
            let port = format!("p{i}");
            switch.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ])?;
            switch.ip(&["link", "set", &port, "master", "br0"])?;
            switch.ip(&["link", "set", &port, "up"])?;
            let ip = Ipv4Addr::new(a, b, c, i + 1);
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            hosts.push(Host { ns, ip });
        }
        Ok(Topology { hosts, switch })
    }

    /// Joins the host's own namespace to the bridge at `address` (in the topology's /24), so that
    /// processes running on the host (a control plane, an operator) and processes inside the
    /// namespaces reach each other. The host's side of the veth is deleted on drop.
    pub fn uplink(&self, address: Ipv4Addr) -> io::Result<Uplink> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Interface names are at most 15 bytes: "nsl" + pid (≤ 7 digits) + "u" + counter.
        let name = format!("nsl{}u{n}", std::process::id());
        let port = format!("u{n}");
        ip(&[
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.switch.name(),
        ])?;
        let uplink = Uplink { name };
        self.switch.ip(&["link", "set", &port, "master", "br0"])?;
        self.switch.ip(&["link", "set", &port, "up"])?;
        ip(&["addr", "add", &format!("{address}/24"), "dev", &uplink.name])?;
        ip(&["link", "set", &uplink.name, "up"])?;
        Ok(uplink)
    }
}

/// The host's end of a veth onto a [`Topology`]'s bridge, deleted on drop (which deletes
/// both ends, its address and its route).
#[derive(Debug)]
pub struct Uplink {
    name: String,
}

impl Uplink {
    /// The interface's name in the host's namespace.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        // Deleting the switch's namespace first already took the pair away.
        if ip(&["link", "show", &self.name]).is_err() {
            return;
        }
        if let Err(e) = ip(&["link", "del", &self.name]) {
            eprintln!("testbed: cannot delete uplink {}: {e}", self.name);
        }
    }
}

/// A source and a destination with routers in a row between them: every datagram from the
/// source crosses each router, which forwards (and answers ICMP) as a real one does. Link `i`
/// (from node `i` to node `i + 1`, the source being node 0) is 10.78.`i`.0/24, its left end
/// `.1` and its right end `.2`, so router `k` (1-based) answers from 10.78.`k - 1`.2.
#[derive(Debug)]
pub struct RoutedPath {
    pub source: Host,
    /// Each with the address it answers the source from (its left end).
    pub routers: Vec<Host>,
    pub destination: Host,
}

impl RoutedPath {
    pub fn new(routers: u8) -> io::Result<RoutedPath> {
        let link = |i: u8, end: u8| Ipv4Addr::new(10, 78, i, end);
        let nodes = (0..=routers + 1)
            .map(|i| Netns::new(&format!("r{i}")))
            .collect::<io::Result<Vec<_>>>()?;
        for (i, pair) in (0u8..).zip(nodes.windows(2)) {
            let (left, right) = (&pair[0], &pair[1]);
            left.ip(&[
                "link",
                "add",
                "right",
                "type",
                "veth",
                "peer",
                "name",
                "left",
                "netns",
                right.name(),
            ])?;
            left.ip(&["addr", "add", &format!("{}/24", link(i, 1)), "dev", "right"])?;
            right.ip(&["addr", "add", &format!("{}/24", link(i, 2)), "dev", "left"])?;
            left.ip(&["link", "set", "right", "up"])?;
            right.ip(&["link", "set", "left", "up"])?;
        }
        nodes[0].ip(&["route", "add", "default", "via", &link(0, 2).to_string()])?;
        for k in 1..=routers {
            let router = &nodes[usize::from(k)];
            router.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
            router.ip(&["route", "add", "default", "via", &link(k, 2).to_string()])?;
            for back in 0..k - 1 {
                let net = format!("{}/24", link(back, 0));
                router.ip(&["route", "add", &net, "via", &link(k - 1, 1).to_string()])?;
            }
        }
        let last = nodes[usize::from(routers) + 1].ip(&[
            "route",
            "add",
            "default",
            "via",
            &link(routers, 1).to_string(),
        ]);
        last?;
        let mut hosts = (0u8..).zip(nodes).map(|(i, ns)| Host {
            ip: if i == 0 { link(0, 1) } else { link(i - 1, 2) },
            ns,
        });
        let source = hosts.next().ok_or_else(|| io::Error::other("no source"))?;
        let mut rest: Vec<Host> = hosts.collect();
        let destination = rest
            .pop()
            .ok_or_else(|| io::Error::other("no destination"))?;
        Ok(RoutedPath {
            source,
            routers: rest,
            destination,
        })
    }
}

/// How the test DNS server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// NOERROR with this A record (for A queries; other types get no records).
    Answer(Ipv4Addr),
    NxDomain,
    ServFail,
    /// Never answers.
    Silent,
}

/// Builds the test server's response to a query, or `None` for malformed queries.
pub fn dns_response(query: &[u8], mode: DnsMode) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // Skip the question name.
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    if question_end > query.len() {
        return None;
    }
    let rcode = match mode {
        DnsMode::Answer(_) => 0u8,
        DnsMode::NxDomain => 3,
        DnsMode::ServFail => 2,
        DnsMode::Silent => return None,
    };
    let answer = match mode {
        DnsMode::Answer(ip) if qtype == 1 => Some(ip),
        _ => None,
    };
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&query[0..2]);
    r.push(0x84 | (query[2] & 0x79)); // QR, AA, opcode and RD copied
    r.push(0x80 | rcode); // RA
    r.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    r.extend_from_slice(&query[12..question_end]);
    if let Some(ip) = answer {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

/// A DNS server whose answers can be switched while it runs.
#[derive(Debug, Clone)]
pub struct DnsServer {
    mode: Arc<Mutex<DnsMode>>,
}

impl DnsServer {
    pub fn new(mode: DnsMode) -> Self {
        DnsServer {
            mode: Arc::new(Mutex::new(mode)),
        }
    }

    pub fn set(&self, mode: DnsMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// Serves on `sock` until the task is dropped.
    pub async fn serve(self, sock: tokio::net::UdpSocket) {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let mode = *self.mode.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(resp) = dns_response(&buf[..n], mode) {
                let _ = sock.send_to(&resp, peer).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_responses() {
        // id 0x1234, RD, one question "a.b." A IN
        let q = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 1, b'b', 0, 0, 1, 0, 1,
        ];
        let r = dns_response(&q, DnsMode::Answer(Ipv4Addr::new(10, 0, 0, 9))).unwrap();
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80);
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(r[7], 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 9]);
        let r = dns_response(&q, DnsMode::NxDomain).unwrap();
        assert_eq!((r[3] & 0x0f, r[7]), (3, 0));
        let r = dns_response(&q, DnsMode::ServFail).unwrap();
        assert_eq!(r[3] & 0x0f, 2);
        assert!(dns_response(&q, DnsMode::Silent).is_none());
        assert!(dns_response(&q[..15], DnsMode::NxDomain).is_none());
        assert!(dns_response(&[0; 5], DnsMode::NxDomain).is_none());
    }
}
