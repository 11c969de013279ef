//! Settings of `code_run` (the sandbox). Owned by the code_run issue.

use super::{ConfigError, Env};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodeRunSettings {}

impl CodeRunSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(_env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self {})
    }
}
