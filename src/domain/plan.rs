use std::fmt;

/// An account's plan (seed: "Rate Limits"): what `/v1` allows it per minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// 60 requests a minute; every new account and client starts here.
    Standard,
    /// 300 requests a minute.
    Professional,
    /// A custom number of requests a minute.
    Enterprise(u32),
}

/// The largest custom limit: one a microsecond (the GCRA's clock).
pub const MAX_RATE_LIMIT: u32 = 60_000_000;

impl Plan {
    pub fn name(self) -> &'static str {
        match self {
            Plan::Standard => "standard",
            Plan::Professional => "professional",
            Plan::Enterprise(_) => "enterprise",
        }
    }

    /// Requests per minute.
    pub fn limit(self) -> u32 {
        match self {
            Plan::Standard => 60,
            Plan::Professional => 300,
            Plan::Enterprise(n) => n,
        }
    }

    /// The custom limit to store (Enterprise only).
    pub fn custom_limit(self) -> Option<u32> {
        match self {
            Plan::Enterprise(n) => Some(n),
            _ => None,
        }
    }

    /// A plan as given (CLI, API): `rate_limit` is required for enterprise
    /// and refused for the others, whose limits are fixed.
    pub fn parse(name: &str, rate_limit: Option<i64>) -> Result<Plan, String> {
        let plan = match (name, rate_limit) {
            ("standard", None) => Plan::Standard,
            ("professional", None) => Plan::Professional,
            ("enterprise", Some(n)) => {
                let n = u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_RATE_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!("rate_limit must be a whole number from 1 to {MAX_RATE_LIMIT} requests per minute")
                    })?;
                Plan::Enterprise(n)
            }
            ("enterprise", None) => {
                return Err("the enterprise plan needs a rate_limit (requests per minute)".into())
            }
            ("standard" | "professional", Some(_)) => {
                return Err(format!(
                    "the {name} plan has a fixed limit: rate_limit is only for enterprise"
                ))
            }
            _ => return Err("plan must be standard, professional or enterprise".into()),
        };
        Ok(plan)
    }

    /// As stored: the plan's name and, for enterprise, its limit. A row that
    /// does not parse is an error, never a silent default.
    pub fn from_stored(name: &str, rate_limit: Option<i64>) -> Result<Plan, String> {
        Plan::parse(name, rate_limit)
            .map_err(|e| format!("stored plan '{}': {e}", name.escape_debug()))
    }

    /// "Standard: 60 requests per minute" (Settings > API).
    pub fn describe(self) -> String {
        let name = match self {
            Plan::Standard => "Standard",
            Plan::Professional => "Professional",
            Plan::Enterprise(_) => "Enterprise",
        };
        format!("{name}: {} requests per minute", self.limit())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_limits() {
        assert_eq!(Plan::Standard.limit(), 60);
        assert_eq!(Plan::Professional.limit(), 300);
        assert_eq!(Plan::parse("enterprise", Some(5000)).unwrap().limit(), 5000);
        assert_eq!(
            Plan::Standard.describe(),
            "Standard: 60 requests per minute"
        );
    }

    #[test]
    fn enterprise_needs_a_limit_and_the_others_refuse_one() {
        assert!(Plan::parse("enterprise", None).is_err());
        assert!(Plan::parse("enterprise", Some(0)).is_err());
        assert!(Plan::parse("enterprise", Some(-5)).is_err());
        assert!(Plan::parse("enterprise", Some(i64::from(MAX_RATE_LIMIT) + 1)).is_err());
        assert!(Plan::parse("standard", Some(100)).is_err());
        assert!(Plan::parse("gold", None).is_err());
        assert_eq!(
            Plan::parse("professional", None).unwrap(),
            Plan::Professional
        );
    }
}
