//! Placement decisions, pure: a request and candidate hosts in, ranked hosts (or why none fits)
//! out. No I/O; [`super::reserve`] feeds it from the database and reserves the winner.
//!
//! ```text
//!  candidates ─▶ active? ─▶ vCPUs? ─▶ memory? ─▶ disk? ─▶ anti-affinity? ─▶ score ─▶ ranked
//!                   │          │         │          │          │
//!                   └──────────┴─────────┴──────────┴──────────┴─▶ removed_by[filter] += 1
//! ```
//!
//! Each host is charged to the *first* filter that removes it, so the counts of a refusal add up
//! to the number of hosts considered.
//!
//! ## Score
//! A host's headroom is the smallest of its three free fractions *after* the instance is placed:
//! `min((total - reserved - requested) / total)` over vCPUs, memory and disk. The scarcest
//! resource decides how much more a host can take, so a host with plenty of disk but no memory
//! left is not "free" (a sum of fractions would say it is). `spread` ranks the most headroom
//! first, `binpack` the least. Fractions are compared exactly (cross-multiplied integers, no
//! floats), and equal headrooms are ordered by host id, so the same inputs always give the same
//! ranking.

use std::cmp::Ordering;
use std::fmt;

use crate::ids::{HostId, ProjectId};
use crate::scheduler::Strategy;

/// vCPUs, memory and disk: what an instance needs, or what a host has or has reserved. The
/// integer types are the database's (`integer`, `bigint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub vcpus: i32,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
}

/// What is to be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub resources: Resources,
    /// The instance's project; anti-affinity groups are scoped to it.
    pub project_id: ProjectId,
    /// No two live instances of the same (project, group) share a host.
    pub anti_affinity_group: Option<String>,
}

pub use crate::states::HostState;

/// A host the instance might go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: HostId,
    pub state: HostState,
    pub total: Resources,
    pub reserved: Resources,
    /// The host already runs a live instance of the request's (project, anti-affinity group).
    pub runs_group_member: bool,
    /// Addresses of its subnet already reserved by placed instances.
    pub reserved_addresses: i32,
}

/// Addresses a host's /24 gives to instances: .2 to .254 (.1 is the host's bridge).
pub const ADDRESSES_PER_HOST: i32 = 253;

/// The filters, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Filter {
    /// The host is joining, draining, suspect or dead.
    NotActive,
    Vcpus,
    Memory,
    Disk,
    /// Every address of the host's subnet is taken.
    Addresses,
    /// The host already runs a member of the instance's anti-affinity group.
    AntiAffinity,
}

impl Filter {
    /// Every filter, in application order.
    pub const ALL: [Filter; 6] =
        [Self::NotActive, Self::Vcpus, Self::Memory, Self::Disk, Self::Addresses, Self::AntiAffinity];

    /// A stable machine-readable name (`not_active`, `vcpus`, …), e.g. for API error details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotActive => "not_active",
            Self::Vcpus => "vcpus",
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Addresses => "addresses",
            Self::AntiAffinity => "anti_affinity",
        }
    }

    /// True when this filter removes `host` for `request`.
    fn removes(self, request: &Request, host: &Candidate) -> bool {
        let need = &request.resources;
        match self {
            Self::NotActive => host.state != HostState::Active,
            Self::Vcpus => {
                i64::from(need.vcpus) > i64::from(host.total.vcpus).saturating_sub(i64::from(host.reserved.vcpus))
            }
            Self::Memory => need.memory_bytes > host.total.memory_bytes.saturating_sub(host.reserved.memory_bytes),
            Self::Disk => need.disk_bytes > host.total.disk_bytes.saturating_sub(host.reserved.disk_bytes),
            Self::Addresses => host.reserved_addresses >= ADDRESSES_PER_HOST,
            Self::AntiAffinity => request.anti_affinity_group.is_some() && host.runs_group_member,
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotActive => "not active",
            Self::Vcpus => "not enough vCPUs",
            Self::Memory => "not enough memory",
            Self::Disk => "not enough disk",
            Self::Addresses => "no free address",
            Self::AntiAffinity => "anti-affinity group already there",
        })
    }
}

/// No candidate passed every filter. The message lists, per filter, how many hosts it removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no host fits {}{}: {}", describe(&self.request), group(&self.anti_affinity_group), summary(self))]
pub struct NoHostFits {
    pub request: Resources,
    pub anti_affinity_group: Option<String>,
    /// How many hosts were looked at.
    pub considered: usize,
    /// The filters that removed at least one host, in application order, with their counts.
    pub removed_by: Vec<(Filter, usize)>,
}

impl NoHostFits {
    /// How many hosts `filter` removed.
    pub fn removed_by(&self, filter: Filter) -> usize {
        self.removed_by.iter().find(|(f, _)| *f == filter).map_or(0, |(_, n)| *n)
    }
}

/// The first filter that removes `host`, if any.
pub fn first_failing_filter(request: &Request, host: &Candidate) -> Option<Filter> {
    Filter::ALL.into_iter().find(|filter| filter.removes(request, host))
}

/// Filters and scores `candidates`: the hosts that fit, best first, or why none does.
pub fn rank(request: &Request, candidates: &[Candidate], strategy: Strategy) -> Result<Vec<HostId>, NoHostFits> {
    let mut removed = [0usize; Filter::ALL.len()];
    let mut fitting: Vec<(Headroom, HostId)> = Vec::with_capacity(candidates.len());
    for host in candidates {
        match first_failing_filter(request, host) {
            Some(filter) => removed[filter as usize] += 1,
            None => fitting.push((Headroom::after(request, host), host.id)),
        }
    }
    if fitting.is_empty() {
        return Err(NoHostFits {
            request: request.resources,
            anti_affinity_group: request.anti_affinity_group.clone(),
            considered: candidates.len(),
            removed_by: Filter::ALL.into_iter().zip(removed).filter(|(_, n)| *n > 0).collect(),
        });
    }
    fitting.sort_by(|(a, a_id), (b, b_id)| {
        let by_headroom = match strategy {
            Strategy::Spread => b.cmp(a),
            Strategy::Binpack => a.cmp(b),
        };
        by_headroom.then_with(|| a_id.cmp(b_id))
    });
    Ok(fitting.into_iter().map(|(_, id)| id).collect())
}

/// The smallest free fraction of a host after placement, compared exactly.
#[derive(Debug, Clone, Copy)]
struct Headroom {
    free: i64,
    total: i64,
}

impl Headroom {
    fn after(request: &Request, host: &Candidate) -> Self {
        let fraction = |total: i64, reserved: i64, need: i64| Headroom {
            free: total.saturating_sub(reserved).saturating_sub(need).max(0),
            total: total.max(1),
        };
        let need = &request.resources;
        let (total, reserved) = (&host.total, &host.reserved);
        [
            fraction(total.vcpus.into(), reserved.vcpus.into(), need.vcpus.into()),
            fraction(total.memory_bytes, reserved.memory_bytes, need.memory_bytes),
            fraction(total.disk_bytes, reserved.disk_bytes, need.disk_bytes),
        ]
        .into_iter()
        .min()
        .unwrap_or(Headroom { free: 0, total: 1 })
    }
}

impl Ord for Headroom {
    fn cmp(&self, other: &Self) -> Ordering {
        // free/total vs other.free/other.total, both totals positive.
        (i128::from(self.free) * i128::from(other.total)).cmp(&(i128::from(other.free) * i128::from(self.total)))
    }
}

impl PartialOrd for Headroom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Headroom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Headroom {}

/// "4 vCPUs, 8 GiB memory, 20 GiB disk".
fn describe(r: &Resources) -> String {
    let s = if r.vcpus == 1 { "" } else { "s" };
    format!("{} vCPU{s}, {} memory, {} disk", r.vcpus, bytes(r.memory_bytes), bytes(r.disk_bytes))
}

fn group(group: &Option<String>) -> String {
    group.as_ref().map(|g| format!(" in anti-affinity group {g:?}")).unwrap_or_default()
}

/// "3 hosts considered; not active: 1, not enough vCPUs: 2".
fn summary(e: &NoHostFits) -> String {
    let s = if e.considered == 1 { "" } else { "s" };
    let mut out = format!("{} host{s} considered", e.considered);
    for (i, (filter, n)) in e.removed_by.iter().enumerate() {
        out.push_str(if i == 0 { "; " } else { ", " });
        out.push_str(&format!("{filter}: {n}"));
    }
    out
}

/// Bytes in the largest binary unit that divides them exactly.
fn bytes(n: i64) -> String {
    const UNITS: [(i64, &str); 4] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(size, _)| n != 0 && n % size == 0)
        .map_or_else(|| format!("{n} bytes"), |(size, unit)| format!("{} {unit}", n / size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const GIB: i64 = 1 << 30;

    fn id(n: u128) -> HostId {
        HostId(Uuid::from_u128(n))
    }

    fn res(vcpus: i32, memory_gib: i64, disk_gib: i64) -> Resources {
        Resources { vcpus, memory_bytes: memory_gib * GIB, disk_bytes: disk_gib * GIB }
    }

    fn request(vcpus: i32, memory_gib: i64, disk_gib: i64) -> Request {
        Request {
            resources: res(vcpus, memory_gib, disk_gib),
            project_id: ProjectId(Uuid::nil()),
            anti_affinity_group: None,
        }
    }

    /// An active host with `total` capacity of which `reserved` is taken.
    fn host(n: u128, total: Resources, reserved: Resources) -> Candidate {
        Candidate {
            id: id(n),
            state: HostState::Active,
            total,
            reserved,
            runs_group_member: false,
            reserved_addresses: 0,
        }
    }

    #[test]
    fn each_host_is_charged_to_the_first_filter_that_removes_it() {
        let big = res(16, 64, 1000);
        let mut grouped = host(6, big, res(0, 0, 0));
        grouped.runs_group_member = true;
        let cases: Vec<(&str, Candidate, Option<Filter>)> = vec![
            ("fits", host(1, big, res(0, 0, 0)), None),
            ("fits exactly", host(1, res(4, 8, 20), res(0, 0, 0)), None),
            (
                "draining",
                Candidate { state: HostState::Draining, ..host(1, big, res(0, 0, 0)) },
                Some(Filter::NotActive),
            ),
            ("dead and full", Candidate { state: HostState::Dead, ..host(1, big, big) }, Some(Filter::NotActive)),
            ("joining", Candidate { state: HostState::Joining, ..host(1, big, res(0, 0, 0)) }, Some(Filter::NotActive)),
            ("suspect", Candidate { state: HostState::Suspect, ..host(1, big, res(0, 0, 0)) }, Some(Filter::NotActive)),
            ("vcpus short by one", host(1, big, res(13, 0, 0)), Some(Filter::Vcpus)),
            ("vcpus and memory short", host(1, big, res(16, 64, 0)), Some(Filter::Vcpus)),
            ("memory short", host(1, big, res(0, 57, 0)), Some(Filter::Memory)),
            ("disk short", host(1, big, res(0, 0, 981)), Some(Filter::Disk)),
            ("group member there", grouped.clone(), Some(Filter::AntiAffinity)),
        ];
        let mut req = request(4, 8, 20);
        req.anti_affinity_group = Some("web".to_owned());
        for (name, candidate, expected) in cases {
            assert_eq!(first_failing_filter(&req, &candidate), expected, "{name}");
        }
        // Without a group, a host's group flag is irrelevant.
        assert_eq!(first_failing_filter(&request(4, 8, 20), &grouped), None);
    }

    #[test]
    fn strategies_rank_by_headroom_after_placement() {
        // Headroom after placing 2 vCPUs, 4 GiB, 10 GiB (the scarcest resource decides):
        //   host 1: 16 cpu free of 16 → 14/16, mem 60/64, disk 990/1000 → 0.875
        //   host 2: half used → vCPUs 6/16 = 0.375
        //   host 3: memory nearly full → 4/64 = 0.0625
        //   host 4: small and empty → vCPUs 2/4 = 0.5
        let hosts = vec![
            host(1, res(16, 64, 1000), res(0, 0, 0)),
            host(2, res(16, 64, 1000), res(8, 8, 100)),
            host(3, res(16, 64, 1000), res(0, 56, 0)),
            host(4, res(4, 8, 100), res(0, 0, 0)),
        ];
        let cases = [(Strategy::Spread, [1, 4, 2, 3]), (Strategy::Binpack, [3, 2, 4, 1])];
        for (strategy, expected) in cases {
            let ranked = rank(&request(2, 4, 10), &hosts, strategy).expect("fits");
            assert_eq!(ranked, expected.map(id).to_vec(), "{strategy}");
        }
    }

    #[test]
    fn ties_are_broken_by_host_id_whatever_the_input_order() {
        // Same headroom: identical hosts, and a host twice the size with twice the reservation.
        let hosts = vec![
            host(9, res(8, 16, 100), res(2, 4, 20)),
            host(3, res(16, 32, 200), res(4, 8, 40)),
            host(5, res(8, 16, 100), res(2, 4, 20)),
        ];
        for strategy in [Strategy::Spread, Strategy::Binpack] {
            let mut reversed = hosts.clone();
            reversed.reverse();
            let a = rank(&request(0, 0, 0), &hosts, strategy).expect("fits");
            let b = rank(&request(0, 0, 0), &reversed, strategy).expect("fits");
            assert_eq!(a, vec![id(3), id(5), id(9)], "{strategy}");
            assert_eq!(a, b, "{strategy}");
        }
    }

    #[test]
    fn zero_hosts_is_a_refusal_with_nothing_removed() {
        let err = rank(&request(1, 1, 1), &[], Strategy::Spread).expect_err("no hosts");
        assert_eq!(err.considered, 0);
        assert!(err.removed_by.is_empty());
        assert_eq!(err.to_string(), "no host fits 1 vCPU, 1 GiB memory, 1 GiB disk: 0 hosts considered");
    }

    #[test]
    fn refusal_counts_add_up_and_read_well() {
        let hosts = vec![
            Candidate { state: HostState::Draining, ..host(1, res(64, 256, 1000), res(0, 0, 0)) },
            host(2, res(2, 64, 1000), res(0, 0, 0)),
            host(3, res(8, 64, 1000), res(6, 0, 0)),
        ];
        let err = rank(&request(4, 8, 20), &hosts, Strategy::Binpack).expect_err("nothing fits");
        assert_eq!(err.considered, 3);
        assert_eq!(err.removed_by, vec![(Filter::NotActive, 1), (Filter::Vcpus, 2)]);
        assert_eq!(err.removed_by(Filter::Memory), 0);
        assert_eq!(
            err.to_string(),
            "no host fits 4 vCPUs, 8 GiB memory, 20 GiB disk: 3 hosts considered; not active: 1, not enough vCPUs: 2"
        );
    }

    #[test]
    fn refusal_names_the_group_and_odd_sizes() {
        let mut grouped = host(1, res(8, 16, 100), res(0, 0, 0));
        grouped.runs_group_member = true;
        let mut req = request(1, 0, 0);
        req.resources.memory_bytes = 512 << 20;
        req.resources.disk_bytes = 1000;
        req.anti_affinity_group = Some("db".to_owned());
        let err = rank(&req, &[grouped], Strategy::Spread).expect_err("group member there");
        assert_eq!(
            err.to_string(),
            "no host fits 1 vCPU, 512 MiB memory, 1000 bytes disk in anti-affinity group \"db\": \
             1 host considered; anti-affinity group already there: 1"
        );
    }

    #[test]
    fn host_states_parse_from_the_database_spelling() {
        for (text, state) in [
            ("joining", HostState::Joining),
            ("active", HostState::Active),
            ("draining", HostState::Draining),
            ("suspect", HostState::Suspect),
            ("dead", HostState::Dead),
        ] {
            assert_eq!(text.parse::<HostState>().ok(), Some(state));
        }
        assert_eq!("Active".parse::<HostState>().ok(), None);
    }
}
