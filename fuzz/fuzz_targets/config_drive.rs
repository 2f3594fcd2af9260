//! The NoCloud config drive rendered from what a tenant controls (hostname, SSH keys,
//! user-data) and what the agent chooses (instance id, addresses): `vmm::config_drive::render`.
//!
//! Properties:
//! - it accepts exactly the parameters that the rules (restated here independently: RFC 1123
//!   hostname, `[A-Za-z0-9._-]{1,128}` id, `<known type> <base64, 16+> [comment]` keys of
//!   printable ASCII, a known first line of user-data) allow, and names the first field at fault;
//! - what it accepts, it renders into YAML of the safe subset ([`cloud_fuzz::yaml`]) that *means*
//!   what was asked: the same id, hostname, keys (in order), MACs, addresses, routes and DNS
//!   servers, read back into their types; no line of the caller's can add a key;
//! - the caller's user-data comes out as the second part of a multipart document
//!   ([`cloud_fuzz::mime`]) byte for byte, after our cloud-config part, with the content type its
//!   first line calls for, and no line of it is taken for a boundary.
#![no_main]

use std::net::IpAddr;
use std::str::FromStr;

use cloud_fuzz::{mime, yaml};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use vmm::config_drive::{Cidr, ConfigDriveError, ConfigDriveFiles, ConfigDriveParams, NicNetwork, render};
use vmm::spec::MacAddr;

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];
const LABEL: &[u8] = b"abcxyzABCXYZ0189-";
const ID: &[u8] = b"ai0Z9._-";
const BASE64: &[u8] = b"AaBbQqZz0189+/=";
const TEXT: &[u8] = b"aZ09 -_.:@\"'\\#{}[]&*!|>%`,\n\r\t";
const BOUNDARY: &str = "==cloud-vmm-boundary==";

fuzz_target!(|data: &[u8]| {
    let Ok(params) = params(&mut Unstructured::new(data)) else { return };
    let expected = first_fault(&params);
    match (render(&params), expected) {
        (Ok(files), None) => check_rendered(&params, &files),
        (Err(err), Some(fault)) => assert_eq!(fault_of(&err), fault, "{params:#?}"),
        (got, expected) => panic!("render gave {got:?}, the rules say {expected:?}, for {params:#?}"),
    }
});

/// Text mostly from `likely`, sometimes any character.
fn text(u: &mut Unstructured<'_>, likely: &[u8], max: usize) -> Result<String> {
    let len = u.int_in_range(0..=max)?;
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        if u.ratio(31u8, 32)? {
            s.push(char::from(*u.choose(likely)?));
        } else {
            s.push(u.arbitrary()?);
        }
    }
    Ok(s)
}

fn params(u: &mut Unstructured<'_>) -> Result<ConfigDriveParams> {
    let instance_id = text(u, ID, 130)?;
    let labels: Vec<String> = (0..u.int_in_range(1..=5)?).map(|_| text(u, LABEL, 66)).collect::<Result<_>>()?;
    let hostname = labels.join(".");
    let mut ssh_authorized_keys = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let kind = if u.ratio(7u8, 8)? { (*u.choose(KEY_TYPES)?).to_owned() } else { text(u, LABEL, 12)? };
        let sep = *u.choose(&[" ", " ", " ", "  ", "\t"])?;
        let mut key = format!("{kind}{sep}{}", text(u, BASE64, 70)?);
        if u.arbitrary()? {
            key.push_str(sep);
            key.push_str(&text(u, TEXT, 30)?);
        }
        ssh_authorized_keys.push(key);
    }
    let user_data = if u.arbitrary()? {
        let first = match u.int_in_range(0..=6)? {
            0 => "#cloud-config".to_owned(),
            1 => "#!/bin/sh".to_owned(),
            2 => "#cloud-boothook".to_owned(),
            3 => "#include".to_owned(),
            4 => "#cloud-config \t\r".to_owned(),
            5 => "#include\u{a0}".to_owned(),
            _ => text(u, TEXT, 16)?,
        };
        let mut body = first;
        for _ in 0..u.int_in_range(0..=4)? {
            body.push_str(&text(u, TEXT, 40)?);
            if u.arbitrary()? {
                // Pieces of the boundary our writer starts from, to make it look further.
                body.push_str(u.choose(&["--", "\n--", "\r--", "="])?);
                body.push_str(&BOUNDARY[..u.int_in_range(0..=BOUNDARY.len())?]);
                body.push_str(&"=".repeat(u.int_in_range(0..=3)?));
            }
        }
        Some(body)
    } else {
        None
    };
    let mut network = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        let mut addresses = Vec::new();
        for _ in 0..u.int_in_range(0..=2)? {
            let (addr, prefix): (IpAddr, u8) = (ip(u)?, u.arbitrary()?);
            let written = format!("{addr}/{prefix}");
            match Cidr::from_str(&written) {
                Ok(cidr) => {
                    assert_eq!((cidr.addr, cidr.prefix_len), (addr, prefix), "{written}");
                    addresses.push(cidr);
                }
                Err(_) => assert!(prefix > if addr.is_ipv4() { 32 } else { 128 }, "{written} refused"),
            }
        }
        let gateway = if u.arbitrary()? { Some(ip(u)?) } else { None };
        let nameservers = (0..u.int_in_range(0..=2)?).map(|_| ip(u)).collect::<Result<_>>()?;
        network.push(NicNetwork { mac: MacAddr(u.arbitrary()?), addresses, gateway, nameservers });
    }
    Ok(ConfigDriveParams { instance_id, hostname, ssh_authorized_keys, user_data, network })
}

fn ip(u: &mut Unstructured<'_>) -> Result<IpAddr> {
    Ok(if u.arbitrary()? { IpAddr::from(u.arbitrary::<[u8; 4]>()?) } else { IpAddr::from(u.arbitrary::<[u8; 16]>()?) })
}

/// Which field is at fault, as the rules say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Hostname,
    InstanceId,
    SshKey(usize),
    UserData,
}

fn fault_of(err: &ConfigDriveError) -> Fault {
    match err {
        ConfigDriveError::InvalidHostname { .. } => Fault::Hostname,
        ConfigDriveError::InvalidInstanceId { .. } => Fault::InstanceId,
        ConfigDriveError::InvalidSshKey { index } => Fault::SshKey(*index),
        ConfigDriveError::UnsupportedUserData => Fault::UserData,
        other => panic!("render is pure, yet it failed with {other:?}"),
    }
}

/// The rules, in the order render checks them.
fn first_fault(p: &ConfigDriveParams) -> Option<Fault> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !(1..=253).contains(&p.hostname.len()) || !p.hostname.split('.').all(label_ok) {
        return Some(Fault::Hostname);
    }
    let id_ok = |c: char| c.is_ascii_alphanumeric() || ".-_".contains(c);
    if !(1..=128).contains(&p.instance_id.len()) || !p.instance_id.chars().all(id_ok) {
        return Some(Fault::InstanceId);
    }
    for (index, key) in p.ssh_authorized_keys.iter().enumerate() {
        let printable = key.chars().all(|c| (' '..='~').contains(&c));
        let fields: Vec<&str> = key.splitn(3, ' ').collect();
        let blob_ok = |b: &str| b.len() >= 16 && b.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
        let ok = printable
            && key.len() <= 16 * 1024
            && fields.len() >= 2
            && KEY_TYPES.contains(&fields[0])
            && blob_ok(fields[1]);
        if !ok {
            return Some(Fault::SshKey(index));
        }
    }
    match &p.user_data {
        Some(theirs) if content_type(theirs).is_none() => Some(Fault::UserData),
        _ => None,
    }
}

/// The content type the first line of the caller's user-data calls for.
fn content_type(theirs: &str) -> Option<&'static str> {
    // Only spaces, tabs and carriage returns may follow a keyword: what the API's pattern says.
    let first = theirs.split('\n').next().unwrap_or_default().trim_end_matches([' ', '\t', '\r']);
    match first {
        "#cloud-config" => Some("text/cloud-config"),
        "#cloud-boothook" => Some("text/cloud-boothook"),
        "#include" => Some("text/x-include-url"),
        f if f.starts_with("#!") => Some("text/x-shellscript"),
        _ => None,
    }
}

fn check_rendered(p: &ConfigDriveParams, files: &ConfigDriveFiles) {
    let meta = yaml::parse(&files.meta_data).unwrap_or_else(|e| panic!("meta-data: {e}\n{}", files.meta_data));
    let keys = &p.ssh_authorized_keys;
    assert_eq!(meta, json!({"instance-id": p.instance_id, "local-hostname": p.hostname, "public-keys": keys}));

    let ours = match &p.user_data {
        None => files.user_data.as_str(),
        Some(theirs) => {
            let doc = mime::split(&files.user_data).unwrap_or_else(|e| panic!("user-data: {e}\n{}", files.user_data));
            let boundary = format!("boundary=\"{}\"", doc.boundary);
            assert_eq!(doc.headers, [&format!("Content-Type: multipart/mixed; {boundary}"), "MIME-Version: 1.0"]);
            let [ours, part] = doc.parts.as_slice() else { panic!("{} parts: {:?}", doc.parts.len(), doc.parts) };
            let merge = "Merge-Type: list(append)+dict(no_replace,recurse_list)+str()";
            assert_eq!(ours.headers, ["Content-Type: text/cloud-config; charset=\"utf-8\"", merge]);
            let kind = content_type(theirs).unwrap_or_default();
            assert_eq!(part.headers, [format!("Content-Type: {kind}; charset=\"utf-8\"")]);
            // A CR that ends the caller's data joins our LF before the closing boundary into one
            // CRLF, which a MIME reader takes as the boundary's (left as it is: see
            // docs/fuzzing.md).
            let sent = theirs.strip_suffix('\r').unwrap_or(theirs);
            assert_eq!(part.body, sent, "the caller's user-data changed on its way");
            ours.body
        }
    };
    let config = ours.strip_prefix("#cloud-config\n").unwrap_or_else(|| panic!("our part: {ours:?}"));
    let config = yaml::parse(config).unwrap_or_else(|e| panic!("our cloud-config: {e}\n{config}"));
    assert_eq!(config, json!({"ssh_authorized_keys": keys}));

    let net = yaml::parse(&files.network_config).unwrap_or_else(|e| panic!("network-config: {e}"));
    let mut ethernets = serde_json::Map::new();
    for (i, nic) in p.network.iter().enumerate() {
        let got = &net["ethernets"][format!("nic{i}")];
        let mac = got["match"]["macaddress"].as_str().and_then(|m| MacAddr::from_str(m).ok());
        assert_eq!(mac, Some(nic.mac), "{got}");
        let addresses: Vec<Cidr> = strings(&got["addresses"]).map(|a| Cidr::from_str(a).expect(a)).collect();
        assert_eq!(addresses, nic.addresses);
        let mut entry = json!({"match": {"macaddress": nic.mac.to_string()}, "addresses": got["addresses"]});
        if let Some(gw) = nic.gateway {
            let via = got["routes"][0]["via"].as_str().and_then(|v| IpAddr::from_str(v).ok());
            assert_eq!(via, Some(gw), "{got}");
            entry["routes"] = json!([{"to": if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" }, "via": gw.to_string()}]);
        }
        if !nic.nameservers.is_empty() {
            let dns: Vec<IpAddr> = strings(&got["nameservers"]["addresses"]).map(|a| a.parse().expect(a)).collect();
            assert_eq!(dns, nic.nameservers);
            entry["nameservers"] = json!({"addresses": got["nameservers"]["addresses"]});
        }
        ethernets.insert(format!("nic{i}"), entry);
    }
    assert_eq!(net, json!({"version": 2, "ethernets": ethernets}));
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap_or_else(|| panic!("{s} is not a string")))
}
