//! The scheduler: which host an instance runs on.
//!
//! ```text
//!   candidate hosts ──▶ filters (in order) ──▶ score ──▶ ranked hosts ──▶ reserve (db)
//!                        active               spread:  most headroom     one conditional
//!                        free vCPUs           binpack: least headroom    UPDATE per try,
//!                        free memory          ties: host id              next host when it
//!                        free disk                                        matches no row
//!                        anti-affinity
//! ```
//!
//! [`placement`] is the pure half (inputs in, decision out, no I/O, unit-tested on tables);
//! [`reserve`] is the other half: it reads the candidates ([`crate::db::placement`]), asks [`placement::rank`]
//! and reserves capacity in the caller's transaction, so several replicas never overcommit a
//! host. When nothing fits, [`placement::NoHostFits`] says how many hosts each filter removed.

pub mod placement;
pub mod reserve;

use serde::{Deserialize, Serialize};

/// `[scheduler]` configuration.
///
/// ```toml
/// [scheduler]
/// strategy = "spread"   # spread | binpack
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// How hosts that fit are ranked.
    pub strategy: Strategy,
}

/// How the hosts that pass every filter are ranked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Most headroom first: instances spread over the fleet, a host failure hits few of them.
    #[default]
    Spread,
    /// Least headroom first: hosts fill up one after another, leaving whole hosts free.
    Binpack,
}

impl Strategy {
    /// The configuration spelling (`spread`, `binpack`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spread => "spread",
            Self::Binpack => "binpack",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_to_spread_and_rejects_unknown_keys_and_strategies() {
        let config: SchedulerConfig = toml::from_str("").expect("empty section");
        assert_eq!(config.strategy, Strategy::Spread);
        let config: SchedulerConfig = toml::from_str("strategy = \"binpack\"").expect("binpack");
        assert_eq!(config.strategy, Strategy::Binpack);
        assert!(toml::from_str::<SchedulerConfig>("strategy = \"random\"").is_err());
        assert!(toml::from_str::<SchedulerConfig>("stratgy = \"spread\"").is_err());
    }
}
