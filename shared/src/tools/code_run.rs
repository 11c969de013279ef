//! The `code_run` tool's definition as the API and the model see it. Owned by the code_run issue.
//! The sandbox itself is worker/src/tools/code_run/.

use serde_json::json;

use super::{ToolCategory, ToolDefinition};
use crate::config::{SandboxMode, ToolSettings};

pub const NAME: &str = "code_run";

/// The definition when this deployment offers the tool (`AGENTQ_SANDBOX` other than `off`).
pub fn definition(settings: &ToolSettings) -> Option<ToolDefinition> {
    let limits = &settings.code_run.limits;
    if settings.code_run.mode == SandboxMode::Off {
        return None;
    }
    Some(ToolDefinition {
        name: NAME.into(),
        description: format!(
            "Run a Python 3.11 or Node.js 20 program in an isolated sandbox and return its \
             stdout, stderr and exit code. No network, {} MB of memory, {} s of wall clock, a \
             read-only file system except /tmp, nothing kept between runs. Print what you need \
             to see; each stream is cut at {} bytes (\"truncated\": true). \"timed_out\" and \
             \"oom_killed\" say when the sandbox killed the program.",
            limits.memory_bytes >> 20,
            limits.timeout.as_secs_f64(),
            limits.output_bytes,
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "language": {"type": "string", "enum": ["python", "javascript"]},
                "code": {"type": "string", "minLength": 1, "maxLength": 200_000,
                         "description": "The whole program (Python: run as __main__; \
                                         JavaScript: a CommonJS module)."},
                "stdin": {"type": "string", "maxLength": 1_000_000,
                          "description": "Text the program reads on standard input."}
            },
            "required": ["language", "code"],
            "additionalProperties": false
        }),
        category: ToolCategory::Code,
        requires_approval: false,
        idempotent: true,
    })
}
