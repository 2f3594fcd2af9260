//! The end-to-end harness: spawns the real binaries and the real components they need, and
//! cleans up after itself. Helpers read as sentences: `spawn_control_plane()`, `wait_healthy()`.
#![forbid(unsafe_code)]
