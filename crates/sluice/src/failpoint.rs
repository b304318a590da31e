//! Crash points for tests: built with the `failpoints` feature, `SLUICE_FAILPOINT=NAME`
//! (or `NAME:N`, the Nth time) aborts the process where the code says `hit(NAME)`, so a
//! test can reach each step of a commit. Without the feature every call is a no-op.

/// True when this build has failpoints and `SLUICE_FAILPOINT` names `name` and this is
/// the time it asks for (each call counts one pass).
#[cfg(feature = "failpoints")]
pub fn armed(name: &str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    // Read once: the point and the pass it fires on.
    static POINT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let point = POINT.get_or_init(|| {
        let text = std::env::var("SLUICE_FAILPOINT").ok()?;
        let (point, nth) = match text.split_once(':') {
            Some((point, nth)) => (point.to_string(), nth.parse().unwrap_or(1)),
            None => (text, 1),
        };
        Some((point, nth.max(1)))
    });
    match point {
        Some((point, nth)) if point == name => PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *nth,
        _ => false,
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn armed(_name: &str) -> bool {
    false
}

/// Aborts the process (a crash: no unwinding, no destructors, no final manifest) when
/// `name` is armed.
#[inline]
pub fn hit(name: &str) {
    if armed(name) {
        crash(name);
    }
}

/// Aborts the process now, saying which failpoint did it.
pub fn crash(name: &str) -> ! {
    eprintln!("sluice: failpoint {name}: aborting");
    std::process::abort()
}
