//! The service manager's readiness protocol (systemd's `sd_notify`): `READY=1` once every
//! listener is bound and serving, `RELOADING=1` / `READY=1` around a configuration reload, and
//! `STOPPING=1` when the drain starts. It owns nothing but those messages; it sits beside
//! `main`, which calls it at each transition. Without `NOTIFY_SOCKET` in the environment (not
//! started by systemd with `Type=notify`) every call does nothing. It must never fail the
//! process: a message that cannot be sent is logged at `warn` and litgate keeps serving.

use sd_notify::NotifyState;

/// Tells the service manager litgate is serving (after start, and after a reload).
pub fn ready() {
    send("ready", &[NotifyState::Ready]);
}

/// Tells the service manager a reload has started. `MONOTONIC_USEC` is what systemd's
/// `Type=notify-reload` matches the reload by; `Type=notify` ignores it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send("reloading", &[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the monotonic clock for sd_notify");
            send("reloading", &[NotifyState::Reloading]);
        }
    }
}

/// Tells the service manager litgate is draining and about to exit.
pub fn stopping() {
    send("stopping", &[NotifyState::Stopping]);
}

fn send(what: &'static str, states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, state = what, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
