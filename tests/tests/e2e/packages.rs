//! Every Debian package the code needs is installed by `deploy/`: a fresh machine that runs
//! only `deploy/` and `.ci/run` has every program and firmware file the code names.

use std::path::{Path, PathBuf};

use cloud_tests::packages::{Finding, Need, check, deploy_packages, named_needs};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

fn report(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("- {f}")).collect::<Vec<_>>().join("\n")
}

#[test]
fn deploy_installs_every_package_the_code_needs() {
    let repo = repo();
    let needs = named_needs(&repo);
    // The check sees what matters (a sanity floor: these are named by the VMM and the agent).
    for expected in [
        Need::Program("qemu-system-x86_64".into()),
        Need::Program("qemu-img".into()),
        Need::Program("ip".into()),
        Need::Program("ssh".into()),
        Need::File("/usr/share/OVMF/OVMF_CODE_4M.fd".into()),
    ] {
        assert!(needs.contains_key(&expected), "the scan missed {expected}: {:?}", needs.keys());
    }
    let deploy = deploy_packages(&repo);
    assert!(deploy.contains("qemu-system-x86") && deploy.contains("ovmf"), "{deploy:?}");
    let findings = check(&needs, &deploy);
    assert!(findings.is_empty(), "packages missing from deploy/:\n{}", report(&findings));
}

#[test]
fn a_package_missing_from_deploy_is_named() {
    let repo = repo();
    let needs = named_needs(&repo);
    let mut deploy = deploy_packages(&repo);
    assert!(deploy.remove("ovmf"), "deploy/ should install ovmf");
    let findings = check(&needs, &deploy);
    let ovmf = findings.iter().find(|f| {
        matches!(f, Finding::NotInstalledByDeploy { need: Need::File(path), packages, .. }
            if path == "/usr/share/OVMF/OVMF_CODE_4M.fd" && packages == &["ovmf".to_owned()])
    });
    let ovmf = ovmf.unwrap_or_else(|| panic!("without ovmf in deploy/ the check must fail:\n{}", report(&findings)));
    let text = ovmf.to_string();
    assert!(text.contains("vmm/src/qemu/cmdline.rs:") && text.contains("deploy/common.sh"), "{text}");
}
