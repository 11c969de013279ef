//! Settings of `sql_query`. Owned by the sql_query issue.

use super::{ConfigError, Env};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlQuerySettings {}

impl SqlQuerySettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(_env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {})
    }
}
