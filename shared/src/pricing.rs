//! Cost of LLM calls from a pricing table (`shared/pricing.toml`, overridable by a file).
//! Decimal arithmetic throughout: the ledger has to add up to what the provider bills.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::schemas::Usage;

const BUILTIN: &str = include_str!("../pricing.toml");

/// USD per million tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelPrice {
    pub input: Decimal,
    pub output: Decimal,
    pub cache_write_5m: Decimal,
    pub cache_write_1h: Decimal,
    pub cache_read: Decimal,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PricingTable {
    pub version: String,
    models: BTreeMap<String, ModelPrice>,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read pricing file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("pricing table is malformed: {0}")]
    Parse(#[from] toml::de::Error),
}

impl PricingTable {
    pub fn builtin() -> Self {
        // The file ships with the binary and a unit test parses it.
        #[allow(clippy::expect_used)]
        Self::parse(BUILTIN).expect("built-in pricing.toml parses")
    }

    pub fn parse(text: &str) -> Result<Self, PricingError> {
        Ok(toml::from_str(text)?)
    }

    /// The built-in table, or the operator's file when `path` is given.
    pub fn load(path: Option<&str>) -> Result<Self, PricingError> {
        match path {
            None => Ok(Self::builtin()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| PricingError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text)
            }
        }
    }

    /// The price of the longest listed name the model id starts with.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        self.models
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| price)
    }

    /// `None` for a model without a price: unknown, never zero.
    pub fn cost(&self, model: &str, usage: Usage) -> Option<Decimal> {
        let price = self.price(model)?;
        let write_1h = usage.cache_write_1h_tokens.min(usage.cache_write_tokens);
        let write_5m = usage.cache_write_tokens - write_1h;
        let per_million = Decimal::from(usage.input_tokens) * price.input
            + Decimal::from(usage.output_tokens) * price.output
            + Decimal::from(write_5m) * price.cache_write_5m
            + Decimal::from(write_1h) * price.cache_write_1h
            + Decimal::from(usage.cache_read_tokens) * price.cache_read;
        Some((per_million / Decimal::from(1_000_000)).normalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn an_operator_file_replaces_the_table() {
        let path = std::env::temp_dir().join(format!("agentq-pricing-{}.toml", std::process::id()));
        let text = "version = \"ours\"\n[models.house-model]\ninput = \"2\"\noutput = \"4\"\n\
                    cache_write_5m = \"0\"\ncache_write_1h = \"0\"\ncache_read = \"0\"\n";
        std::fs::write(&path, text).unwrap();
        let table = PricingTable::load(path.to_str()).unwrap();
        let usage = Usage {
            input_tokens: 500_000,
            output_tokens: 250_000,
            ..Default::default()
        };
        assert_eq!(table.cost("house-model", usage), Some(Decimal::from(2)));
        assert_eq!(
            table.cost("claude-sonnet-4-5", usage),
            None,
            "replaced, not merged"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(PricingTable::load(Some("/nonexistent/pricing.toml")).is_err());
    }

    #[test]
    fn costs_are_exact() {
        let table = PricingTable::builtin();
        let usage = Usage {
            input_tokens: 1234,
            output_tokens: 567,
            cache_read_tokens: 1000,
            cache_write_tokens: 2000,
            cache_write_1h_tokens: 0,
        };
        // 1234*3 + 567*15 + 1000*0.30 + 2000*3.75 = 3702 + 8505 + 300 + 7500 = 20007 per million.
        assert_eq!(
            table.cost("claude-sonnet-4-5-20250929", usage),
            Some(Decimal::from_str("0.020007").unwrap())
        );
        assert_eq!(table.cost("gpt-4o", usage), None);
        // 500 of the 2000 cache-write tokens at the 1-hour rate:
        // 3702 + 8505 + 300 + 1500*3.75 + 500*6 = 21132 per million.
        let mixed = Usage {
            cache_write_1h_tokens: 500,
            ..usage
        };
        assert_eq!(
            table.cost("claude-sonnet-4-5", mixed),
            Some(Decimal::from_str("0.021132").unwrap())
        );
        // Opus 4.5: 1234*5 + 567*25 + 1000*0.5 + 2000*6.25 = 6170 + 14175 + 500 + 12500.
        assert_eq!(
            table.cost("claude-opus-4-5-20251101", usage),
            Some(Decimal::from_str("0.033345").unwrap())
        );
        assert_eq!(
            table.price("claude-sonnet-4-20250514").unwrap().input,
            Decimal::from(3)
        );
        assert_eq!(
            table.price("claude-haiku-4-5").unwrap().output,
            Decimal::from(5)
        );
    }
}
