//! QEMU as the VMM: the command line ([`cmdline`], pure), host facts ([`host`]) and the
//! process ([`process`]: launch, pidfile, identity checks, kill).

pub mod cmdline;
pub mod host;
pub mod jail;
pub mod process;

pub use cmdline::QemuCommand;
pub use host::ResolvedAccel;
pub use process::{LaunchError, LaunchOptions};
