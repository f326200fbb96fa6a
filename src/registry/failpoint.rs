//! Test-only crash points inside the registry's mutation path (the `failpoints` feature).

/// A crash point for the reliability suite: with the `failpoints` feature, the process
/// kills itself with SIGKILL when `PORTMGR_FAILPOINT` names this point. Free otherwise.
/// `PORTMGR_FAILPOINT=name@N` fires at the N-th hit (default the first); a `:stop`
/// suffix stops the process (SIGSTOP) instead, for the stopped-lock-holder tests, and a
/// `:panic` suffix panics there (with the locks held), for the unwind tests.
#[inline]
pub(crate) fn failpoint(_name: &str) {
    #[cfg(feature = "failpoints")]
    {
        use std::sync::LazyLock;
        use std::sync::atomic::{AtomicU64, Ordering::AcqRel};
        // (name, nth hit, action: 0 kill, 1 stop, 2 panic)
        static WANT: LazyLock<Option<(String, u64, u8)>> = LazyLock::new(|| {
            let v = std::env::var("PORTMGR_FAILPOINT").ok()?;
            let (v, action) = match (v.strip_suffix(":stop"), v.strip_suffix(":panic")) {
                (Some(v), _) => (v.to_string(), 1),
                (_, Some(v)) => (v.to_string(), 2),
                _ => (v, 0),
            };
            Some(match v.split_once('@') {
                Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1), action),
                None => (v, 1, action),
            })
        });
        static HITS: AtomicU64 = AtomicU64::new(0);
        if let Some((name, nth, action)) = WANT.as_ref()
            && name == _name
            && HITS.fetch_add(1, AcqRel) + 1 == *nth
        {
            if *action == 2 {
                panic!("portmgr failpoint {name}@{nth}: injected panic");
            }
            // SAFETY: raise(3) with a valid signal number has no memory-safety preconditions.
            unsafe { libc::raise(if *action == 1 { libc::SIGSTOP } else { libc::SIGKILL }) };
        }
    }
}

