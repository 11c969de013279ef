//! One scripted model turn and how it becomes a response.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Reply, Usage, random_id};

/// One scripted answer of the fake model: content blocks (text / tool_use), or an API error.
#[derive(Clone, Debug)]
pub struct Turn {
    kind: Kind,
    delay: Option<Duration>,
    usage: Option<Usage>,
    stop_reason: Option<String>,
    retry_after: Option<u64>,
}

#[derive(Clone, Debug)]
enum Kind {
    Blocks(Vec<Block>),
    Error {
        status: u16,
        error_type: String,
        message: String,
    },
}

#[derive(Clone, Debug)]
enum Block {
    Text(String),
    ToolUse { name: String, input: Value },
}

impl Turn {
    fn with_kind(kind: Kind) -> Self {
        Turn {
            kind,
            delay: None,
            usage: None,
            stop_reason: None,
            retry_after: None,
        }
    }

    /// A single text block; stop_reason `end_turn`.
    pub fn answer(text: impl Into<String>) -> Self {
        Self::with_kind(Kind::Blocks(vec![Block::Text(text.into())]))
    }

    /// Same as [`Turn::answer`]; reads better in JSON-mode tests where the text is raw JSON.
    pub fn raw_text(text: impl Into<String>) -> Self {
        Self::answer(text)
    }

    /// One tool_use block (fresh `toolu_` id); stop_reason `tool_use`. The tool need not be offered.
    pub fn tool(name: impl Into<String>, input: Value) -> Self {
        Self::with_kind(Kind::Blocks(vec![Block::ToolUse {
            name: name.into(),
            input,
        }]))
    }

    /// Adds a leading text block (the model's "thought"). No effect on error turns.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        if let Kind::Blocks(blocks) = &mut self.kind {
            blocks.insert(0, Block::Text(text.into()));
        }
        self
    }

    /// Adds another tool_use block (parallel tool calls). No effect on error turns.
    pub fn and_tool(mut self, name: impl Into<String>, input: Value) -> Self {
        if let Kind::Blocks(blocks) = &mut self.kind {
            blocks.push(Block::ToolUse {
                name: name.into(),
                input,
            });
        }
        self
    }

    /// Sleeps this long before answering (the call is recorded before the sleep).
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// Reports this usage instead of the computed default.
    pub fn usage(mut self, u: Usage) -> Self {
        self.usage = Some(u);
        self
    }

    /// Overrides the stop_reason (e.g. `max_tokens`, `refusal`).
    pub fn stop_reason(mut self, r: &str) -> Self {
        self.stop_reason = Some(r.to_owned());
        self
    }

    /// Answers with an API error instead, e.g. `(529, "overloaded_error", ..)`.
    pub fn error(status: u16, error_type: &str, message: &str) -> Self {
        Self::with_kind(Kind::Error {
            status,
            error_type: error_type.to_owned(),
            message: message.to_owned(),
        })
    }

    /// Adds a `retry-after: <secs>` header to the answer.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The response this turn gives to `request`.
    pub(super) fn reply(&self, request: &Value) -> Reply {
        let mut reply = match &self.kind {
            Kind::Error {
                status,
                error_type,
                message,
            } => Reply::error(*status, error_type, message),
            Kind::Blocks(blocks) => {
                let content: Vec<Value> = blocks.iter().map(Block::to_json).collect();
                let calls_tool = blocks.iter().any(|b| matches!(b, Block::ToolUse { .. }));
                let default_stop = if calls_tool { "tool_use" } else { "end_turn" };
                let stop = self.stop_reason.as_deref().unwrap_or(default_stop);
                Reply::message(request, content, stop, self.usage)
            }
        };
        reply.retry_after = self.retry_after;
        reply.delay = self.delay;
        reply
    }
}

impl Block {
    fn to_json(&self) -> Value {
        match self {
            Block::Text(text) => json!({"type": "text", "text": text}),
            Block::ToolUse { name, input } => json!({
                "type": "tool_use",
                "id": random_id("toolu_01", 22),
                "name": name,
                "input": input,
            }),
        }
    }
}
