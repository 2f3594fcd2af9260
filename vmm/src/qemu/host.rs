//! Facts about the host that shape the QEMU command line: whether the CPU has hardware
//! virtualization (→ KVM or TCG) and the TSC frequency (→ `tsc_early_khz=` under TCG, without
//! which a microvm guest hangs calibrating its TSC in about one boot in ten).

use crate::spec::Accel;

/// The accelerator QEMU will actually use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    /// `-accel kvm`.
    Kvm,
    /// `-accel tcg`.
    Tcg,
}

impl ResolvedAccel {
    /// The `-accel` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }
}

/// Picks the accelerator: explicit choices win; `auto` is KVM iff `cpuinfo` has vmx or svm.
pub fn resolve_accel(accel: Accel, cpuinfo: &str) -> ResolvedAccel {
    match accel {
        Accel::Kvm => ResolvedAccel::Kvm,
        Accel::Tcg => ResolvedAccel::Tcg,
        Accel::Auto => {
            let hw = cpuinfo
                .lines()
                .filter(|l| l.starts_with("flags"))
                .flat_map(|l| l.split_whitespace())
                .any(|f| f == "vmx" || f == "svm");
            if hw { ResolvedAccel::Kvm } else { ResolvedAccel::Tcg }
        }
    }
}

/// The host TSC frequency in kHz from `/proc/cpuinfo`'s first `cpu MHz` line (the kernel reports
/// the calibrated TSC there on x86), `None` if absent or unparsable.
pub fn tsc_khz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    if !(1.0..1_000_000.0).contains(&mhz) {
        return None;
    }
    // Rounded to whole kHz; the value is positive and bounded, so the cast is exact enough.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((mhz * 1000.0).round() as u64)
}

/// Reads `/proc/cpuinfo` (empty string if unreadable, which resolves to TCG and no TSC hint).
pub async fn read_cpuinfo() -> String {
    tokio::fs::read_to_string("/proc/cpuinfo").await.unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\ncpu MHz\t\t: 2445.404\nflags\t\t: fpu vme vmx sse\n";
    const NOHW: &str = "processor\t: 0\ncpu MHz\t\t: 2445.404\nflags\t\t: fpu vme sse hypervisor\n";

    #[test]
    fn auto_picks_kvm_only_with_vmx_or_svm() {
        assert_eq!(resolve_accel(Accel::Auto, INTEL), ResolvedAccel::Kvm);
        assert_eq!(resolve_accel(Accel::Auto, NOHW), ResolvedAccel::Tcg);
        assert_eq!(resolve_accel(Accel::Auto, &NOHW.replace("sse", "svm")), ResolvedAccel::Kvm);
        assert_eq!(resolve_accel(Accel::Tcg, INTEL), ResolvedAccel::Tcg);
        assert_eq!(resolve_accel(Accel::Kvm, NOHW), ResolvedAccel::Kvm);
    }

    #[test]
    fn tsc_khz_from_cpu_mhz() {
        assert_eq!(tsc_khz(INTEL), Some(2_445_404));
        assert_eq!(tsc_khz("flags: x\n"), None);
        assert_eq!(tsc_khz("cpu MHz : nope\n"), None);
    }
}
