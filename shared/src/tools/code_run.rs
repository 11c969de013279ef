//! The `code_run` tool's definition as the API and the model see it. Owned by the code_run issue.

use super::ToolDefinition;
use crate::config::ToolSettings;

pub const NAME: &str = "code_run";

/// The definition when this deployment offers the tool, `None` otherwise.
pub fn definition(_settings: &ToolSettings) -> Option<ToolDefinition> {
    None
}
