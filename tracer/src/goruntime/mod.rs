//! Go-runtime knowledge in one place: which runtime functions to hook per
//! version, what wait reasons mean, which goroutines are the runtime's own.
//!
//! Numbers (struct offsets, wait-reason values) never live here: they come
//! from the target's DWARF (`gobin::layout`). This module only maps *names*
//! (stable across versions) to meaning.

pub mod gstatus;
pub mod hooks;
pub mod version;
pub mod wait_reason;

/// Go's own definition (runtime.isSystemGoroutine, simplified): goroutines
/// whose start function is in package runtime, except the main goroutine.
pub fn is_system_function(start_function: &str) -> bool {
    start_function.starts_with("runtime.") && start_function != "runtime.main"
}

/// The import path of a Go function name (`net/http.(*conn).serve` →
/// `net/http`): it ends at the first '.' after the last '/'.
pub fn package_of(function: &str) -> &str {
    let slash = function.rfind('/').map_or(0, |i| i + 1);
    let end = function[slash..]
        .find('.')
        .map_or(function.len(), |i| slash + i);
    &function[..end]
}

/// Whether a function belongs to the program rather than the standard
/// library: package `main`, or an import path whose first element has a dot
/// (`github.com/...`, `example.com/...`).
pub fn is_user_function(function: &str) -> bool {
    let pkg = package_of(function);
    if pkg == "main" {
        return true;
    }
    pkg.split('/')
        .next()
        .is_some_and(|first| first.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages() {
        assert_eq!(package_of("net/http.(*conn).serve"), "net/http");
        assert_eq!(
            package_of("context.(*cancelCtx).propagateCancel"),
            "context"
        );
        assert_eq!(package_of("github.com/a/b.v2.F"), "github.com/a/b");
        assert_eq!(package_of("main.main.func1"), "main");
        assert_eq!(package_of("runtime.morestack.abi0"), "runtime");
        assert_eq!(package_of("noDots"), "noDots");
    }

    #[test]
    fn user_vs_std_functions() {
        assert!(is_user_function("main.receiveForever"));
        assert!(is_user_function("main.(*server).handle.func1"));
        assert!(is_user_function(
            "github.com/acme/svc/internal/db.(*Pool).Get"
        ));
        assert!(!is_user_function("runtime.gopark"));
        assert!(!is_user_function("sync.(*WaitGroup).Wait"));
        assert!(!is_user_function("internal/poll.(*FD).Read"));
        assert!(!is_user_function("net/http.(*conn).serve"));
        assert!(is_system_function("runtime.bgsweep"));
        assert!(!is_system_function("runtime.main"));
    }
}
