//! Fault injection for crash tests. `CLOUD_FAULT_CRASH_AFTER_STEP=<step>` kills the process
//! right after that step of an operation was recorded, as a power cut would; `<step>/unrecorded`
//! kills it after the step did its work but before that was recorded, so the step runs again on
//! resume.
//!
//! Compiled in only with the `fault-injection` feature in a debug build: the test crate turns
//! the feature on for workspace builds, and no release build has it, whatever features unify.

/// Crashes the process if fault injection asks for a crash after `step`.
#[cfg(all(feature = "fault-injection", debug_assertions))]
pub fn crash_point(step: &str) {
    if std::env::var("CLOUD_FAULT_CRASH_AFTER_STEP").is_ok_and(|s| s == step) {
        tracing::error!(step, "fault injection: crashing after this step");
        std::process::abort();
    }
}

/// Does nothing: fault injection is not compiled in.
#[cfg(not(all(feature = "fault-injection", debug_assertions)))]
#[inline(always)]
pub fn crash_point(_step: &str) {}
