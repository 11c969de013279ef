use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::{Tool, ToolContext, ToolDefinition, ToolResult};

struct Entry {
    definition: ToolDefinition,
    validator: jsonschema::Validator,
    tool: Arc<dyn Tool>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("tool {0:?} is registered twice")]
    Duplicate(String),
    #[error("tool {name:?} has an invalid parameter schema: {message}")]
    InvalidSchema { name: String, message: String },
}

/// Tools by name. Arguments are validated against each tool's JSON Schema before it runs, and
/// every outcome (unknown tool, invalid arguments, failure) becomes a `ToolResult`.
#[derive(Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Entry>,
}

impl ToolRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), RegistryError> {
        let definition = tool.definition();
        if self.tools.contains_key(&definition.name) {
            return Err(RegistryError::Duplicate(definition.name));
        }
        let validator = jsonschema::validator_for(&definition.parameters).map_err(|e| {
            RegistryError::InvalidSchema {
                name: definition.name.clone(),
                message: e.to_string(),
            }
        })?;
        self.tools.insert(
            definition.name.clone(),
            Entry {
                definition,
                validator,
                tool,
            },
        );
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&ToolDefinition> {
        self.tools.get(name).map(|entry| &entry.definition)
    }

    pub fn list(&self) -> Vec<&ToolDefinition> {
        self.tools.values().map(|entry| &entry.definition).collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// Definitions of the named tools in the Anthropic `tools` format (unknown names skipped).
    pub fn anthropic_definitions(&self, names: &[String]) -> Vec<serde_json::Value> {
        names
            .iter()
            .filter_map(|name| self.get(name))
            .map(ToolDefinition::to_anthropic)
            .collect()
    }

    /// Whether a call may run again after a crash left its outcome unknown (unknown tools: no).
    pub fn is_idempotent(&self, name: &str, args: &serde_json::Value) -> bool {
        self.tools
            .get(name)
            .is_some_and(|entry| entry.tool.is_idempotent(args))
    }

    /// Waits for every tool's background clean-up (see [`Tool::settle`]).
    pub async fn settle(&self) {
        for entry in self.tools.values() {
            entry.tool.settle().await;
        }
    }

    /// What the approver of this call should see besides its arguments.
    pub fn approval_details(
        &self,
        name: &str,
        args: &serde_json::Value,
    ) -> Option<serde_json::Value> {
        self.tools
            .get(name)
            .and_then(|entry| entry.tool.approval_details(args))
    }

    /// Problems with `args` for the named tool, as readable lines; empty when they are valid.
    pub fn check_args(&self, name: &str, args: &serde_json::Value) -> Result<(), String> {
        let Some(entry) = self.tools.get(name) else {
            return Err(format!(
                "unknown tool {name:?}; available tools: [{}]",
                self.names().join(", ")
            ));
        };
        let problems: Vec<String> = entry
            .validator
            .iter_errors(args)
            .take(10)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{path}: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "invalid arguments for {name}: {}",
                problems.join("; ")
            ))
        }
    }

    /// Validates and runs a tool call. Never panics or errors: the outcome is the observation.
    pub async fn run(&self, name: &str, args: serde_json::Value, ctx: &ToolContext) -> ToolResult {
        let started = Instant::now();
        let elapsed = |started: Instant| started.elapsed().as_millis() as u64;
        if let Err(message) = self.check_args(name, &args) {
            return ToolResult::failure(name, message, elapsed(started));
        }
        let Some(entry) = self.tools.get(name) else {
            return ToolResult::failure(name, "unknown tool", elapsed(started));
        };
        match entry.tool.call(args, ctx).await {
            Ok(result) => ToolResult {
                tool_name: name.to_owned(),
                success: true,
                result: Some(result),
                error: None,
                execution_time_ms: elapsed(started),
            },
            Err(e) => ToolResult::failure(name, e.0, elapsed(started)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{ToolCategory, ToolError};
    use serde_json::json;

    struct Upper;

    #[async_trait::async_trait]
    impl Tool for Upper {
        fn definition(&self) -> ToolDefinition {
            ToolDefinition {
                name: "upper".into(),
                description: "uppercase".into(),
                parameters: json!({"type": "object", "properties": {"s": {"type": "string"}},
                                   "required": ["s"], "additionalProperties": false}),
                category: ToolCategory::Test,
                requires_approval: false,
                idempotent: true,
            }
        }
        async fn call(
            &self,
            args: serde_json::Value,
            _: &ToolContext,
        ) -> Result<serde_json::Value, ToolError> {
            let s = args["s"].as_str().ok_or_else(|| ToolError("no s".into()))?;
            if s == "fail" {
                return Err(ToolError("asked to fail".into()));
            }
            Ok(json!(s.to_uppercase()))
        }
    }

    fn ctx() -> ToolContext {
        ToolContext {
            session_id: uuid::Uuid::nil(),
            step: 0,
        }
    }

    #[tokio::test]
    async fn validates_before_running() {
        let mut registry = ToolRegistry::new();
        registry.register(Arc::new(Upper)).unwrap();
        assert!(registry.register(Arc::new(Upper)).is_err());

        let ok = registry.run("upper", json!({"s": "hi"}), &ctx()).await;
        assert_eq!((ok.success, ok.result), (true, Some(json!("HI"))));

        let missing = registry.run("upper", json!({}), &ctx()).await;
        assert!(!missing.success);
        assert!(
            missing
                .error
                .unwrap()
                .contains("\"s\" is a required property")
        );

        let extra = registry
            .run("upper", json!({"s": "a", "rm": true}), &ctx())
            .await;
        assert!(
            extra
                .error
                .unwrap()
                .starts_with("invalid arguments for upper")
        );

        let wrong_type = registry.run("upper", json!({"s": 3}), &ctx()).await;
        assert!(wrong_type.error.unwrap().contains("/s"));

        let unknown = registry.run("nope", json!({}), &ctx()).await;
        assert_eq!(
            unknown.error.as_deref(),
            Some("unknown tool \"nope\"; available tools: [upper]")
        );

        let failed = registry.run("upper", json!({"s": "fail"}), &ctx()).await;
        assert_eq!(failed.error.as_deref(), Some("asked to fail"));

        assert_eq!(
            registry.anthropic_definitions(&["upper".into(), "ghost".into()]),
            vec![json!({"name": "upper", "description": "uppercase",
                        "input_schema": Upper.definition().parameters})]
        );
    }
}
