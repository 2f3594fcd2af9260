//! IPv4 networks and interface addresses, one type each:
//!
//! - [`Ipv4Net`]: a network, `10.100.3.0/24`; its host bits are zero (the fleet's pool, a host's
//!   instance subnet).
//! - [`Ipv4Interface`]: an address on a network, `10.100.3.7/24` (a guest NIC's address).
//!
//! Both are written and read as text (`a.b.c.d/n`), in JSON, TOML and the database.

use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network in CIDR notation, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// An IPv4 address with the prefix length of its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Interface {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Not an IPv4 network (or interface address) in CIDR notation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BadCidr {
    #[error("{text:?} is not an IPv4 network like 10.100.0.0/16 (host bits must be zero)")]
    Network { text: String },
    #[error("{text:?} is not an IPv4 address with a prefix length, like 10.100.3.7/24")]
    Interface { text: String },
}

/// The address and prefix of `a.b.c.d/n`, if it is one. The prefix is spelled one way only
/// (`/024` and `/+24` are refused).
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix_text) = text.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix_text.parse().ok()?;
    (prefix <= 32 && prefix.to_string() == prefix_text).then_some((addr, prefix))
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

    /// The first host address (`.1` of a /24): a host's bridge, and its guests' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + u32::from(self.prefix < 32))
    }

    /// Whether `addr` is in this network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.addr)
    }

    /// `addr` on this network, if it is in it.
    pub fn interface(&self, addr: Ipv4Addr) -> Option<Ipv4Interface> {
        self.contains(addr).then_some(Ipv4Interface { addr, prefix: self.prefix })
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

impl Ipv4Interface {
    /// The network the address is on.
    pub fn network(&self) -> Ipv4Net {
        Ipv4Net { addr: Ipv4Addr::from(u32::from(self.addr) & mask(self.prefix)), prefix: self.prefix }
    }
}

impl FromStr for Ipv4Net {
    type Err = BadCidr;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr::Network { text: text.to_owned() };
        let (addr, prefix) = parse_cidr(text).ok_or_else(bad)?;
        if u32::from(addr) & !mask(prefix) != 0 {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl FromStr for Ipv4Interface {
    type Err = BadCidr;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = parse_cidr(text).ok_or_else(|| BadCidr::Interface { text: text.to_owned() })?;
        Ok(Self { addr, prefix })
    }
}

macro_rules! text_form {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = BadCidr;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                text.parse()
            }
        }

        impl From<$t> for String {
            fn from(value: $t) -> Self {
                value.to_string()
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}/{}", self.addr, self.prefix)
            }
        }
    };
}
text_form!(Ipv4Net);
text_form!(Ipv4Interface);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn networks_have_no_host_bits_and_interfaces_may() {
        let net: Ipv4Net = "10.100.0.0/16".parse().unwrap();
        assert_eq!((net.prefix, net.to_string().as_str()), (16, "10.100.0.0/16"));
        for bad in ["10.100.0.1/16", "10.100.0.0/33", "10.100.0.0", "10.100.0.0/024", "nonsense", "10.100.0.0/-1"] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
        let nic: Ipv4Interface = "10.100.3.7/24".parse().unwrap();
        assert_eq!(nic.network().to_string(), "10.100.3.0/24");
        assert!("10.100.3.7/33".parse::<Ipv4Interface>().is_err());
        assert!("10.100.3.7".parse::<Ipv4Interface>().is_err());
        assert_eq!(String::from(nic).parse::<Ipv4Interface>(), Ok(nic));
    }

    #[test]
    fn addresses_of_a_network() {
        let net: Ipv4Net = "10.100.3.0/24".parse().unwrap();
        assert_eq!(net.gateway(), Ipv4Addr::new(10, 100, 3, 1));
        assert_eq!(net.nth(1), Some(net.gateway()));
        assert_eq!(net.nth(256), None);
        assert!(net.contains(Ipv4Addr::new(10, 100, 3, 200)) && !net.contains(Ipv4Addr::new(10, 100, 4, 1)));
        assert_eq!(
            net.interface(Ipv4Addr::new(10, 100, 3, 7)).map(|i| i.to_string()).as_deref(),
            Some("10.100.3.7/24")
        );
        assert_eq!(net.interface(Ipv4Addr::new(10, 100, 4, 7)), None);
    }

    #[test]
    fn hands_out_the_lowest_free_24() {
        let pool: Ipv4Net = "10.100.0.0/22".parse().unwrap();
        let a: Ipv4Net = "10.100.0.0/24".parse().unwrap();
        let c: Ipv4Net = "10.100.2.0/24".parse().unwrap();
        assert_eq!(pool.first_free_24([&a, &c]).map(|n| n.to_string()).as_deref(), Some("10.100.1.0/24"));
        let all: Vec<Ipv4Net> = (0..4).map(|i| format!("10.100.{i}.0/24").parse().unwrap()).collect();
        assert_eq!(pool.first_free_24(all.iter()), None);
    }
}
