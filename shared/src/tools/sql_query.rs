//! The `sql_query` tool's definition as the API and the model see it. Owned by the sql_query issue.

use super::ToolDefinition;
use crate::config::ToolSettings;

pub const NAME: &str = "sql_query";

/// The definition when this deployment offers the tool, `None` otherwise.
pub fn definition(_settings: &ToolSettings) -> Option<ToolDefinition> {
    None
}
