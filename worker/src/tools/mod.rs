//! Tool implementations, registered against the catalog of definitions in `agentq_shared::tools`.

pub mod code_run;
mod echo;
pub mod sql_query;
pub mod web_fetch;

use std::sync::Arc;

use agentq_shared::config::ToolSettings;
use agentq_shared::tools::{
    ECHO, ECHO_APPROVED, Tool, ToolRegistry, WEB_FETCH, builtin_definitions,
};

/// The registry of every tool this deployment offers.
pub fn registry(settings: &ToolSettings) -> anyhow::Result<ToolRegistry> {
    let mut registry = ToolRegistry::new();
    for definition in builtin_definitions(settings) {
        let tool: Arc<dyn Tool> = match definition.name.as_str() {
            WEB_FETCH => Arc::new(web_fetch::WebFetch::new(&settings.web_fetch)?),
            agentq_shared::tools::sql_query::NAME => Arc::new(sql_query::SqlQuery::new(settings)?),
            code_run::NAME => Arc::new(code_run::CodeRun::new(settings)?),
            ECHO => Arc::new(echo::Echo { name: ECHO }),
            ECHO_APPROVED => Arc::new(echo::Echo {
                name: ECHO_APPROVED,
            }),
            other => anyhow::bail!("tool {other:?} is in the catalog but has no implementation"),
        };
        registry.register(tool)?;
    }
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_tool_has_a_matching_implementation() {
        let settings = ToolSettings {
            test_tools: true,
            ..Default::default()
        };
        let registry = registry(&settings).unwrap();
        let mut registered: Vec<_> = registry.list().into_iter().cloned().collect();
        let mut catalog = builtin_definitions(&settings);
        registered.sort_by(|a, b| a.name.cmp(&b.name));
        catalog.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(registered, catalog);
    }
}
