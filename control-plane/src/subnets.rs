//! IPv4 networks in CIDR notation, and the fleet's pool of instance subnets: each host gets one
//! /24 out of it when it joins. A value type every layer uses (the database stores it as cidr).

use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Not an IPv4 CIDR with its host bits zero.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{text:?} is not an IPv4 network like 10.100.0.0/16 (host bits must be zero)")]
pub struct BadNetwork {
    pub text: String,
}

impl FromStr for Ipv4Net {
    type Err = BadNetwork;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadNetwork { text: text.to_owned() };
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 || u32::from(addr) & !mask(prefix) != 0 {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = BadNetwork;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(net: Ipv4Net) -> Self {
        net.to_string()
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
}

impl Ipv4Net {
    /// The `n`th address of the network (0 is the network address).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }

    /// The lowest /24 of `self` that is not in `used`, if any.
    pub fn first_free_24<'a>(&self, used: impl IntoIterator<Item = &'a Ipv4Net> + Clone) -> Option<Ipv4Net> {
        if self.prefix > 24 {
            return None;
        }
        let count = 1u32 << (24 - u32::from(self.prefix));
        (0..count)
            .map(|i| Ipv4Net { addr: Ipv4Addr::from(u32::from(self.addr) + (i << 8)), prefix: 24 })
            .find(|candidate| !used.clone().into_iter().any(|u| u == candidate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let net: Ipv4Net = "10.100.0.0/16".parse().expect("valid");
        assert_eq!(net.prefix, 16);
        assert!("10.100.0.1/16".parse::<Ipv4Net>().is_err());
        assert!("10.100.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("nonsense".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn hands_out_the_lowest_free_24() {
        let pool: Ipv4Net = "10.100.0.0/22".parse().expect("valid");
        let a: Ipv4Net = "10.100.0.0/24".parse().expect("valid");
        let c: Ipv4Net = "10.100.2.0/24".parse().expect("valid");
        assert_eq!(pool.first_free_24([&a, &c]).map(|n| n.to_string()).as_deref(), Some("10.100.1.0/24"));
        let all: Vec<Ipv4Net> = (0..4).map(|i| format!("10.100.{i}.0/24").parse().expect("valid")).collect();
        assert_eq!(pool.first_free_24(all.iter()), None);
        assert_eq!(a.nth(1).map(|ip| ip.to_string()).as_deref(), Some("10.100.0.1"));
        assert_eq!(a.nth(256), None);
    }
}
