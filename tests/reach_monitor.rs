//! Issue 18 items 3 and 4 through the Rust API: the first-reachable fallback
//! (`probe::first_reachable`) and health monitoring with history (`HealthMonitor`, the
//! history file shared by processes).
//!
//! Ports: 16500-16599 (fallback), 16600-16649 (monitoring), all outside the kernel's
//! ephemeral range. Children are this binary re-executed with `PORTMGR_TEST_ROLE`.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use portmgr::mapping::{
    HISTORY_ENTRIES, HISTORY_FILE, HealthEntry, HealthMonitor, HistoryProblem, Services, health_history, record_health,
};
use portmgr::probe::{self, Reach};
use portmgr::{ErrorCode, Registry};
use socket2::{Domain, SockAddr, Socket, Type};

/// The child roles; a no-op in a normal test run.
#[test]
fn child_role() {
    let Ok(role) = std::env::var("PORTMGR_TEST_ROLE") else { return };
    let reg = Registry::open_default().unwrap();
    let mut words = role.split_whitespace();
    match words.next().unwrap() {
        // write N: record N entries whose every field derives from their number k, with
        // problems of varying count and length (so slots are rewritten with other sizes).
        "write" => {
            let n: u64 = words.next().unwrap().parse().unwrap();
            for k in 1..=n {
                record_health(&reg, &patterned(k)).unwrap();
            }
            println!("\nWROTE {n}");
        }
        // read UNTIL: read the history in a loop until the writer's last entry (k =
        // UNTIL) is seen; every entry must be whole. Prints how many reads and entries.
        "read" => {
            let until: u64 = words.next().unwrap().parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            let (mut reads, mut checked) = (0u64, 0u64);
            loop {
                let h = health_history(&reg).unwrap();
                reads += 1;
                for w in h.windows(2) {
                    assert!(w[0].seq < w[1].seq, "out of order: {} then {}", w[0].seq, w[1].seq);
                }
                for e in &h {
                    assert_whole(e);
                    checked += 1;
                }
                // With the lock, a reader sees the whole ring once it is full.
                if h.last().is_some_and(|e| e.seq >= HISTORY_ENTRIES as u64) {
                    assert_eq!(h.len(), HISTORY_ENTRIES, "a full ring read with entries missing");
                }
                if h.last().is_some_and(|e| e.time_ms == until) {
                    break;
                }
                assert!(Instant::now() < deadline, "the writer's last entry never appeared");
            }
            println!("\nREAD {reads} {checked}");
        }
        r => panic!("unknown role {r}"),
    }
}

/// Entry number `k` of the writer role: `held` and `time_ms` are `k`; 0 to 8 problems
/// whose messages are `k` repeated to a length that depends on `k`.
fn patterned(k: u64) -> HealthEntry {
    let n = (k % 9) as usize;
    let msg_len = 20 + (k as usize * 37) % 220;
    let token = format!("{k};");
    let message: String = token.repeat(msg_len / token.len() + 1)[..msg_len].to_string();
    HealthEntry {
        seq: 0,
        time_ms: k,
        ok: n == 0,
        held: k as usize,
        problem_count: n,
        problems: (0..n)
            .map(|i| HistoryProblem {
                kind: "exhausted".into(),
                range: Some((k as u16, i as u16)),
                port: Some(k as u16),
                message: message.clone(),
            })
            .collect(),
        changed: false,
    }
}

/// Every field of a patterned entry agrees with its number.
fn assert_whole(e: &HealthEntry) {
    let k = e.time_ms;
    assert_eq!(e.held as u64, k, "torn entry {e:?}");
    assert_eq!(e.problem_count, (k % 9) as usize, "torn entry {e:?}");
    // Problems past what fits one slot are dropped from the end; the rest are whole.
    let want = patterned(k);
    assert!(!e.problems.is_empty() || e.problem_count == 0, "torn entry {e:?}");
    assert_eq!(e.problems[..], want.problems[..e.problems.len()], "torn entry seq {}", e.seq);
}

// ---------------------------------------------------------------------------------------
// First reachable

#[test]
fn the_open_port_wins_within_about_the_timeout() {
    let (_full, _conns) = syn_dropping_listener(16502);
    let open = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    open.bind(&SockAddr::from("127.0.0.1:16503".parse::<SocketAddr>().unwrap())).unwrap();
    open.listen(16).unwrap();
    // Nothing listens on 16501 and [::1]:16504: refused at once.
    let timeout = Duration::from_millis(1500);
    let targets = ["127.0.0.1:16501", "127.0.0.1:16502", "[::1]:16504", "no-such-host.invalid:16505", "127.0.0.1:16503"];
    let t0 = Instant::now();
    let r = probe::first_reachable(&targets, timeout).unwrap();
    let took = t0.elapsed();
    let outcomes: Vec<Reach> = r.candidates.iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        vec![Reach::Refused, Reach::TimedOut, Reach::Refused, Reach::Unresolvable, Reach::Reachable],
        "{r:#?}"
    );
    assert_eq!(r.winner, Some(4));
    assert_eq!(r.reachable.as_deref(), Some("127.0.0.1:16503"));
    assert_eq!(r.reachable().unwrap().address, Some("127.0.0.1:16503".parse().unwrap()));
    assert_eq!(r.candidates[2].host, "::1");
    // The SYN-dropping candidate takes the timeout; the call takes about that, far less
    // than the sum of the timeouts (5 x 1.5 s).
    assert!(took >= timeout - Duration::from_millis(100), "returned before the timeout: {took:?}");
    assert!(took < timeout * 2, "took {took:?}, not about the timeout {timeout:?}");
    assert!(r.candidates[0].elapsed < Duration::from_millis(500), "{:?}", r.candidates[0]);
    assert!(r.candidates[4].elapsed < Duration::from_millis(500), "{:?}", r.candidates[4]);
    assert!(r.candidates[1].elapsed >= timeout - Duration::from_millis(100), "{:?}", r.candidates[1]);

    // Priority order decides, not speed: two open candidates, the first given wins; and a
    // dropped one before an open one does not delay the answer past about the timeout.
    let other = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
    other.set_only_v6(true).unwrap();
    other.bind(&SockAddr::from("[::1]:16506".parse::<SocketAddr>().unwrap())).unwrap();
    other.listen(16).unwrap();
    let r = probe::first_reachable(&["127.0.0.1:16502", "[::1]:16506", "127.0.0.1:16503"], timeout).unwrap();
    assert_eq!(r.reachable.as_deref(), Some("[::1]:16506"), "{r:#?}");
    assert_eq!(r.candidates[1].address, Some("[::1]:16506".parse().unwrap()));

    // None reachable: no winner, every result still there.
    let r = probe::first_reachable(&["127.0.0.1:16501", "localhost:16504"], timeout).unwrap();
    assert_eq!(r.winner, None);
    assert!(r.candidates.iter().all(|c| c.outcome == Reach::Refused && c.error.is_some()), "{r:#?}");
}

#[test]
fn bad_candidate_lists_are_invalid_arguments() {
    let t = Duration::from_secs(1);
    let empty: [&str; 0] = [];
    for e in [
        probe::first_reachable(&empty, t).unwrap_err(),
        probe::first_reachable(&["::1:80"], t).unwrap_err(),
        probe::first_reachable(&["host:0"], t).unwrap_err(),
        probe::first_reachable(&["127.0.0.1:16501"], Duration::ZERO).unwrap_err(),
        probe::first_reachable(&vec!["127.0.0.1:16501"; probe::MAX_CANDIDATES + 1], t).unwrap_err(),
    ] {
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Monitoring

#[test]
fn a_monitor_at_100ms_records_a_range_filling_up() {
    let (_d, reg) = temp_registry();
    let svc = Services::new(reg.clone()).unwrap();
    let seen: Arc<Mutex<Vec<HealthEntry>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let mon = HealthMonitor::start(svc, Duration::from_millis(100), 0.9, move |e| s2.lock().unwrap().push(e.clone())).unwrap();
    let wait_for = |what: &str, f: &dyn Fn(&[HealthEntry]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let h = health_history(&reg).unwrap();
            if f(&h) {
                return h;
            }
            assert!(Instant::now() < deadline, "{what} never appeared in the history: {h:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("a healthy check", &|h| h.iter().any(|e| e.ok));
    // Fill 16600-16609: 100% of a range in use, past the 90% threshold.
    let leases: Vec<_> = (0..10).map(|_| reg.allocate(&req_in(16600, 10)).unwrap()).collect();
    let exhausted = |e: &HealthEntry| !e.ok && e.problems.iter().any(|p| p.kind == "exhausted" && p.range == Some((16600, 16609)));
    let h = wait_for("the exhausted range", &|h| h.iter().any(exhausted));
    let first = h.iter().find(|e| exhausted(e)).unwrap();
    assert!(first.changed, "the first unhealthy entry is a change: {first:?}");
    assert!(first.message_mentions("16600-16609"));
    drop(leases);
    wait_for("the recovery", &|h| h.last().is_some_and(|e| e.ok && e.changed) || h.windows(2).any(|w| exhausted(&w[0]) && w[1].ok));
    let checks = mon.checks();
    mon.stop();
    assert!(checks >= 3, "{checks} checks");
    // The callback saw each check, with `changed` against the monitor's previous one.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, checks);
    assert!(seen[0].changed);
    let changes: Vec<bool> = seen.iter().filter(|e| e.changed).map(|e| e.ok).collect();
    assert!(changes.starts_with(&[true, false, true]), "changes (ok?) {changes:?}");
    // Nothing runs after stop.
    let n = health_history(&reg).unwrap().last().unwrap().seq;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(health_history(&reg).unwrap().last().unwrap().seq, n);
}

trait Mentions {
    fn message_mentions(&self, s: &str) -> bool;
}
impl Mentions for HealthEntry {
    fn message_mentions(&self, s: &str) -> bool {
        self.problems.iter().any(|p| p.message.contains(s))
    }
}

#[test]
fn the_history_stays_bounded_after_10000_checks() {
    let (_d, reg) = temp_registry();
    let svc = Services::new(reg.clone()).unwrap();
    let path = reg.dir().join(HISTORY_FILE);
    let _l = reg.allocate(&req_in(16620, 20)).unwrap();
    svc.record_health(0.9).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    // Every 100th a real check (the check itself reads /proc, about 5 ms); the others are
    // the monitor's recording path with entries of every size (0 to 8 problems).
    for k in 2..=10_000u64 {
        if k % 100 == 0 {
            svc.record_health(0.9).unwrap();
        } else {
            record_health(&reg, &patterned(k)).unwrap();
        }
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "the history file grew");
    let h = svc.health_history().unwrap();
    assert_eq!(h.len(), HISTORY_ENTRIES);
    assert_eq!(h.first().unwrap().seq, 10_000 - HISTORY_ENTRIES as u64 + 1);
    assert_eq!(h.last().unwrap().seq, 10_000);
    for e in &h {
        if e.seq % 100 == 0 {
            assert!(e.ok && e.held == 1, "{e:?}");
        } else {
            assert_whole(e);
        }
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn two_readers_and_one_writer_never_see_a_torn_entry() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("reg");
    Registry::open(&dir).unwrap();
    const N: u64 = 3000;
    let mut readers: Vec<_> = (0..2).map(|_| spawn_role("child_role", &dir, &format!("read {N}"))).collect();
    let mut writer = spawn_role("child_role", &dir, &format!("write {N}"));
    assert!(writer.wait().unwrap().success(), "the writer failed");
    for r in &mut readers {
        let out = {
            use std::io::Read;
            let mut s = String::new();
            r.stdout.take().unwrap().read_to_string(&mut s).unwrap();
            s
        };
        assert!(r.wait().unwrap().success(), "a reader saw a torn or missing entry: {out}");
        let line = out.lines().find(|l| l.starts_with("READ ")).unwrap_or_else(|| panic!("{out}"));
        let nums: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
        // The readers ran while the writer wrote: many reads, many entries checked.
        assert!(nums[0] >= 10 && nums[1] >= 1000, "too little overlap: {line}");
    }
    let reg = Registry::open(&dir).unwrap();
    let h = health_history(&reg).unwrap();
    assert_eq!(h.len(), HISTORY_ENTRIES);
    assert_eq!(h.last().unwrap().time_ms, N);
    h.iter().for_each(assert_whole);
}

#[test]
fn a_torn_slot_is_skipped_and_a_foreign_file_replaced() {
    let (_d, reg) = temp_registry();
    for k in 1..=5 {
        record_health(&reg, &patterned(k)).unwrap();
    }
    let path = reg.dir().join(HISTORY_FILE);
    // Tear slot 3 (entry 3) the way a writer killed mid-write would: half new bytes.
    let mut b = std::fs::read(&path).unwrap();
    let off = 64 + 2 * portmgr::mapping::HISTORY_SLOT + 40;
    for x in &mut b[off..off + 20] {
        *x = b'#';
    }
    std::fs::write(&path, &b).unwrap();
    let seqs: Vec<u64> = health_history(&reg).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 4, 5]);
    // A damaged header: the next entry still follows the last one.
    b[20] ^= 0xff;
    std::fs::write(&path, &b).unwrap();
    assert_eq!(record_health(&reg, &patterned(6)).unwrap().seq, 6);
    // Not a history at all: started afresh, same size.
    std::fs::write(&path, b"hello").unwrap();
    assert!(health_history(&reg).unwrap().is_empty());
    assert_eq!(record_health(&reg, &patterned(7)).unwrap().seq, 1);
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, 64 + HISTORY_ENTRIES * portmgr::mapping::HISTORY_SLOT);
    // A symlink in its place is refused.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
    assert_eq!(health_history(&reg).unwrap_err().code(), ErrorCode::InsecureDirectory);
}

