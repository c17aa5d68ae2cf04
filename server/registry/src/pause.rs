//! A test hook for crash tests: stop a registry operation between two of
//! its steps so a test can `kill -9` the process exactly there.

/// The environment variable that stops a registry operation at a named
/// point (see `pause_point`).
pub const PAUSE_AT_ENV: &str = "FERROSERVE_PAUSE_AT";

/// Lets tests `kill -9` a real process exactly between two steps of a
/// registration or deletion, where timing alone almost never lands: when
/// `FERROSERVE_PAUSE_AT` names this point, the process says so on stderr
/// and waits forever. The points are `copied`, `reserved` and `renamed` in
/// [`register()`], and `trashed` and `deleted` in [`models::delete`].
pub(crate) fn pause_point(name: &str) {
    if std::env::var_os(PAUSE_AT_ENV).is_some_and(|v| v == name) {
        eprintln!("ferroserve: paused at {name}");
        loop {
            std::thread::park();
        }
    }
}
