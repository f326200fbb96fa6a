//! Real DNS and STUN servers for the resolver and NAT tests (issue 19): dnsmasq and
//! coturn, installed from Debian's packages by scripts/ensure-deb.sh, started on
//! 127.0.0.1 at the exact port a test gives, in a temp dir of their own, and killed
//! when the handle drops (also when the test fails). Shared by tests/resolve_nat.rs and
//! crates/portmgr-cli/tests/resolve_nat.rs.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).ancestors().find(|d| d.join("scripts/ensure-deb.sh").exists()).unwrap().to_path_buf()
}

/// The path of `binary`, installing `package` when it is missing (fails the test when
/// it cannot be had: never a silent skip).
pub fn ensure(binary: &str, package: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/ensure-deb.sh"))
        .args([binary, package])
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/ensure-deb.sh");
    assert!(out.status.success(), "{binary} ({package}) is needed by this test and could not be installed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
}

fn wait_for(what: &str, child: &mut Child, log: &Path, mut ready: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before it was ready:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} was not ready within 15 s:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

/// A dnsmasq answering A/AAAA from a hosts file (reread on [`Dnsmasq::set_hosts`]) and
/// SRV records from `--srv-host`, authoritative for `example.test` (unknown names there
/// are NXDOMAIN), every answer with TTL `ttl`, logging each query.
pub struct Dnsmasq {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    hosts: PathBuf,
    log: PathBuf,
}

impl Dnsmasq {
    /// `srv`: dnsmasq `--srv-host` values (`_svc._tcp.example.test,target,port,priority,weight`).
    pub fn start(port: u16, ttl: u32, hosts: &str, srv: &[&str]) -> Dnsmasq {
        let bin = ensure("dnsmasq", "dnsmasq");
        let dir = tempfile::tempdir().unwrap();
        let hosts_path = dir.path().join("hosts");
        std::fs::write(&hosts_path, hosts).unwrap();
        let log = dir.path().join("dnsmasq.log");
        let mut cmd = Command::new(bin);
        cmd.arg("--conf-file=/dev/null")
            .arg("--keep-in-foreground")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--bind-interfaces")
            .arg("--listen-address=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts_path.display()))
            .arg(format!("--local-ttl={ttl}"))
            .arg("--local=/example.test/")
            .arg("--log-queries")
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg("--user=root")
            .arg("--group=root");
        for s in srv {
            cmd.arg(format!("--srv-host={s}"));
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting dnsmasq");
        let l = log.clone();
        wait_for("dnsmasq", &mut child, &log, || {
            std::fs::read_to_string(&l).is_ok_and(|s| s.contains("read ") && s.contains("addresses"))
        });
        Dnsmasq { child, port, dir, hosts: hosts_path, log }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Replace the hosts file and make dnsmasq reread it (SIGHUP); returns once the log
    /// says it was read again.
    pub fn set_hosts(&self, hosts: &str) {
        let reads = self.log_text().matches("read ").count();
        std::fs::write(&self.hosts, hosts).unwrap();
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) }, 0);
        let t = Instant::now();
        while self.log_text().matches("read ").count() <= reads {
            assert!(t.elapsed() < Duration::from_secs(10), "dnsmasq did not reread its hosts file");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many queries of `qtype` (`A`, `AAAA`, `SRV`) for `name` dnsmasq logged.
    pub fn queries(&self, qtype: &str, name: &str) -> usize {
        // dnsmasq writes its log asynchronously: give it a moment.
        std::thread::sleep(Duration::from_millis(150));
        let needle = format!("query[{qtype}] {name} from");
        self.log_text().matches(&needle).count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coturn in STUN-only mode on 127.0.0.1:`port` (UDP and TCP, no TLS/DTLS, no CLI).
pub struct Coturn {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Coturn {
    pub fn start(port: u16) -> Coturn {
        Coturn::start_at(None, "127.0.0.1", port)
    }

    /// In network namespace `ns` (`ip netns exec`), on `ip`; readiness is then the
    /// caller's to check (the probe below runs on the host).
    pub fn start_at(ns: Option<&str>, ip: &str, port: u16) -> Coturn {
        let bin = ensure("turnserver", "coturn");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("turn.log");
        let mut cmd = match ns {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = cmd
            .arg("-n")
            .arg(format!("--listening-ip={ip}"))
            .arg(format!("--listening-port={port}"))
            .args(["--no-tls", "--no-dtls", "--stun-only", "--no-cli", "--simple-log"])
            .arg(format!("--log-file={}", log.display()))
            .arg(format!("--pidfile={}", dir.path().join("pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting turnserver");
        // Ready when it answers a binding request (sent raw: 20 bytes, magic cookie).
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut req = vec![0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(&[9; 12]);
        if ns.is_some() {
            // Ready when its log says it listens (the host cannot reach the namespace).
            let l = log.clone();
            wait_for("turnserver", &mut child, &log, || {
                std::fs::read_to_string(&l).is_ok_and(|t| t.contains("listener opened on") || t.contains("Total General servers"))
            });
            std::thread::sleep(Duration::from_millis(200));
            return Coturn { child, port, dir };
        }
        wait_for("turnserver", &mut child, &log, || {
            let _ = probe.send_to(&req, ("127.0.0.1", port));
            let mut b = [0u8; 512];
            probe.recv_from(&mut b).is_ok_and(|(n, _)| n >= 20 && b[0..2] == [1, 1])
        });
        Coturn { child, port, dir }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three network namespaces made for one test: a client behind a router that
/// masquerades onto an outer link, with miniupnpd (nftables backend, NAT-PMP and UPnP
/// on) as the router's gateway daemon. Addresses exist only inside these namespaces:
/// client 10.77.0.2/24, router 10.77.0.1 inside and 11.77.0.1/24 outside (miniupnpd
/// refuses private external addresses), outer 11.77.0.2. Removed on drop.
pub struct NatLab {
    tag: String,
    miniupnpd: Option<Child>,
    pub dir: tempfile::TempDir,
}

pub const LAB_ROUTER_INSIDE: &str = "10.77.0.1";
pub const LAB_ROUTER_OUTSIDE: &str = "11.77.0.1";

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-ec").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

impl NatLab {
    /// `n`: a small number that makes the names unique with the pid.
    pub fn start(n: u32) -> NatLab {
        NatLab::start_with(n, true)
    }

    /// As [`NatLab::start`], with miniupnpd's NAT-PMP on or off (UPnP IGD is always on).
    pub fn start_with(n: u32, natpmp: bool) -> NatLab {
        let mini = ensure("miniupnpd", "miniupnpd-nftables");
        ensure("nft", "nftables");
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let dir = tempfile::tempdir().unwrap();
        let mut lab = NatLab { tag: tag.clone(), miniupnpd: None, dir };
        let (r, c, o) = (lab.ns("r"), lab.ns("c"), lab.ns("o"));
        sh(&format!(
            "for n in {r} {c} {o}; do ip netns add $n; ip -n $n link set lo up; done
             ip link add pc{tag} type veth peer name pr{tag}
             ip link add po{tag} type veth peer name px{tag}
             ip link set pc{tag} netns {c}; ip link set pr{tag} netns {r}
             ip link set po{tag} netns {o}; ip link set px{tag} netns {r}
             ip -n {c} addr add 10.77.0.2/24 dev pc{tag}; ip -n {c} link set pc{tag} up; ip -n {c} route add default via 10.77.0.1
             ip -n {r} addr add 10.77.0.1/24 dev pr{tag}; ip -n {r} link set pr{tag} up
             ip -n {r} addr add 11.77.0.1/24 dev px{tag}; ip -n {r} link set px{tag} up
             ip -n {o} addr add 11.77.0.2/24 dev po{tag}; ip -n {o} link set po{tag} up
             ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1"
        ));
        let nft = lab.dir.path().join("router.nft");
        std::fs::write(
            &nft,
            format!(
                "table inet miniupnpd {{
  chain forward {{ type filter hook forward priority 0; policy drop; ct state established,related accept; iifname \"pr{tag}\" accept; jump miniupnpd; }}
  chain miniupnpd {{ }}
  chain prerouting {{ type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept; oifname \"px{tag}\" masquerade; jump postrouting_miniupnpd; }}
  chain prerouting_miniupnpd {{ }}
  chain postrouting_miniupnpd {{ }}
}}\n"
            ),
        )
        .unwrap();
        sh(&format!("ip netns exec {r} nft -f {}", nft.display()));
        let conf = lab.dir.path().join("miniupnpd.conf");
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=px{tag}\nlisting_ip=pr{tag}\nenable_natpmp={}\nenable_upnp=yes\nsecure_mode=yes\n\
upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\nupnp_forward_chain=miniupnpd\n\
upnp_nat_chain=prerouting_miniupnpd\nupnp_nat_postrouting_chain=postrouting_miniupnpd\n\
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07d\nlease_file={}\nmin_lifetime=1\n\
allow 1024-65535 10.77.0.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                if natpmp { "yes" } else { "no" },
                lab.dir.path().join("leases").display()
            )
            .replace("listing_ip", "listening_ip"),
        )
        .unwrap();
        let log = lab.dir.path().join("miniupnpd.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &r])
            .arg(mini)
            .arg("-d")
            .arg("-f")
            .arg(&conf)
            .arg("-P")
            .arg(lab.dir.path().join("pid"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(lab.dir.path().join("miniupnpd.err")).unwrap())
            .spawn()
            .expect("starting miniupnpd");
        lab.miniupnpd = Some(child);
        let err = lab.dir.path().join("miniupnpd.err");
        let t = Instant::now();
        loop {
            let text = std::fs::read_to_string(&err).unwrap_or_default() + &std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("HTTP listening on port") && (!natpmp || text.contains("Listening for NAT-PMP")) {
                break;
            }
            if let Ok(Some(s)) = lab.miniupnpd.as_mut().unwrap().try_wait() {
                panic!("miniupnpd exited ({s}):\n{text}");
            }
            assert!(t.elapsed() < Duration::from_secs(15), "miniupnpd not ready:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
        lab
    }

    /// Stop miniupnpd: the gateway then answers NAT-PMP with ICMP port unreachable.
    pub fn stop_gateway(&mut self) {
        if let Some(mut c) = self.miniupnpd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Connect from the outer namespace to the router's external address at `port` (what
    /// a host on the internet would do): the bytes read until the other side closes, or
    /// the error kind (`ConnectionRefused` once no mapping forwards the port).
    pub fn connect_from_outside(&self, port: u16) -> Result<Vec<u8>, std::io::ErrorKind> {
        use std::io::Read;
        self.run_in("o", move || {
            let addr = format!("{LAB_ROUTER_OUTSIDE}:{port}").parse().unwrap();
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.kind())?;
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut b = Vec::new();
            s.read_to_end(&mut b).map_err(|e| e.kind())?;
            Ok(b)
        })
    }

    /// The name of namespace `which` ("r" router, "c" client, "o" outer).
    pub fn ns(&self, which: &str) -> String {
        format!("h19{which}{}", self.tag)
    }

    /// Run `f` on a thread that entered namespace `which` (network namespaces are per
    /// thread: the rest of the test stays on the host).
    pub fn run_in<T: Send + 'static>(&self, which: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns(which));
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let fd = std::fs::File::open(&path).unwrap();
            // SAFETY: setns(2) on a valid namespace fd, changing only this thread's network namespace.
            assert_eq!(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {path}");
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        if let Some(c) = &mut self.miniupnpd {
            // `ip netns exec` execs miniupnpd: the child is miniupnpd itself.
            let _ = c.kill();
            let _ = c.wait();
        }
        for w in ["r", "c", "o"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(w)]).status();
        }
    }
}
