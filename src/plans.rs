//! Xero's developer plans (tiers) from 2 March 2026, and the number of connected organisations
//! each allows, for `tenants` to tell a user how near their app is to its limit.
//!
//! Sources:
//! - Xero's pricing page, <https://developer.xero.com/pricing>, and its FAQ,
//!   <https://developer.xero.com/faq/pricing-and-policy-updates> ("Connections (maximum)": Starter
//!   5, Core 50, Plus 1000, Advanced 10,000, Enterprise no limit); custom connections and bespoke
//!   integrations for one practice or one client are exempt from the tiers.
//! - Journals, Xero Practice Manager and bulk connections only on Advanced and above (the same
//!   pages; third-party summaries agree).
//! - A connection counts one organisation connected to the app, by any user: the count a token's
//!   `/connections` gives is a lower bound of the app's. At the limit Xero's consent screen does
//!   not let another organisation be chosen (Xero developer community threads about the former
//!   25-connection limit of uncertified apps describe the same screen).
//!
//! This module imports nothing from the crate.

/// One of Xero's developer plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Starter,
    Core,
    Plus,
    Advanced,
    Enterprise,
}

/// Every plan, smallest first, as `config.toml` and `--plan` spell them.
pub const PLANS: [(Plan, &str); 5] = [
    (Plan::Starter, "starter"),
    (Plan::Core, "core"),
    (Plan::Plus, "plus"),
    (Plan::Advanced, "advanced"),
    (Plan::Enterprise, "enterprise"),
];

/// At or above this share of a plan's connections, `tenants` warns.
const NEAR_PERCENT: usize = 80;

impl Plan {
    /// The plan named `text` (any case), or an error message naming the plans.
    pub fn parse(text: &str) -> Result<Plan, String> {
        let wanted = text.trim();
        PLANS
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(wanted))
            .map(|(plan, _)| *plan)
            .ok_or_else(|| {
                let names: Vec<&str> = PLANS.iter().map(|(_, name)| *name).collect();
                format!(
                    "'{wanted}' is not one of Xero's plans: use {} (a custom connection has no plan: leave it unset)",
                    names.join(", ")
                )
            })
    }

    /// The name `config.toml` uses.
    pub fn name(self) -> &'static str {
        PLANS
            .iter()
            .find(|(plan, _)| *plan == self)
            .map_or("enterprise", |(_, name)| *name)
    }

    /// The most organisations the plan lets the app connect; `None`: no limit.
    pub fn connection_limit(self) -> Option<usize> {
        match self {
            Plan::Starter => Some(5),
            Plan::Core => Some(50),
            Plan::Plus => Some(1_000),
            Plan::Advanced => Some(10_000),
            Plan::Enterprise => None,
        }
    }

    /// Whether the plan includes the Journals endpoint (Advanced and above).
    pub fn has_journals(self) -> bool {
        matches!(self, Plan::Advanced | Plan::Enterprise)
    }

    /// How `count` connected organisations stand against the plan's limit.
    pub fn standing(self, count: usize) -> Standing {
        match self.connection_limit() {
            None => Standing::Unlimited,
            Some(limit) if count >= limit => Standing::AtLimit { limit },
            Some(limit) if count * 100 >= limit * NEAR_PERCENT => Standing::Near { limit },
            Some(limit) => Standing::Within { limit },
        }
    }
}

/// Where a count of connections stands against a plan's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The plan has no limit.
    Unlimited,
    /// Below [`NEAR_PERCENT`] of the limit.
    Within { limit: usize },
    /// At or above [`NEAR_PERCENT`] of the limit, below it.
    Near { limit: usize },
    /// At the limit or over it: Xero lets no other organisation connect.
    AtLimit { limit: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_parses_back_from_its_name_in_any_case() {
        for (plan, name) in PLANS {
            assert_eq!(Plan::parse(name), Ok(plan));
            assert_eq!(Plan::parse(&name.to_ascii_uppercase()), Ok(plan));
            assert_eq!(plan.name(), name);
        }
    }

    #[test]
    fn an_unknown_plan_is_an_error_naming_the_plans() {
        let err = Plan::parse("premium").unwrap_err();
        assert!(err.contains("'premium'"), "{err}");
        assert!(err.contains("starter, core, plus, advanced, enterprise"), "{err}");
    }

    #[test]
    fn the_limits_are_xeros_published_ones() {
        let limits: Vec<Option<usize>> = PLANS.iter().map(|(p, _)| p.connection_limit()).collect();
        assert_eq!(
            limits,
            [Some(5), Some(50), Some(1_000), Some(10_000), None]
        );
    }

    #[test]
    fn standing_turns_near_at_eighty_percent_and_at_limit_at_the_limit() {
        assert_eq!(Plan::Starter.standing(3), Standing::Within { limit: 5 });
        assert_eq!(Plan::Starter.standing(4), Standing::Near { limit: 5 });
        assert_eq!(Plan::Starter.standing(5), Standing::AtLimit { limit: 5 });
        assert_eq!(Plan::Starter.standing(7), Standing::AtLimit { limit: 5 });
        assert_eq!(Plan::Core.standing(39), Standing::Within { limit: 50 });
        assert_eq!(Plan::Core.standing(40), Standing::Near { limit: 50 });
        assert_eq!(Plan::Enterprise.standing(100_000), Standing::Unlimited);
    }

    #[test]
    fn only_advanced_and_enterprise_have_journals() {
        let with: Vec<&str> = PLANS
            .iter()
            .filter(|(p, _)| p.has_journals())
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(with, ["advanced", "enterprise"]);
    }
}
