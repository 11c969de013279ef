//! Helpers for the web_fetch tests: a listener that counts the connections it gets, a resolver
//! with a fixed table, and ways to call the tool. Tests only ever talk to loopback addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use agentq_shared::config::WebFetchSettings;
use agentq_shared::tools::{Tool, ToolContext, ToolError};
use serde_json::Value;

use super::WebFetch;
use super::ssrf::Resolver;

/// A TCP listener on 127.0.0.1 (and [::1] where the machine has it) that counts every connection
/// it accepts. A check that failed to refuse a loopback URL would show up here.
pub(crate) struct CountingListener {
    pub v4_port: u16,
    pub v6_port: Option<u16>,
    accepted: Arc<AtomicUsize>,
}

impl CountingListener {
    pub(crate) async fn start() -> Self {
        let accepted = Arc::new(AtomicUsize::new(0));
        let v4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let v4_port = v4.local_addr().unwrap().port();
        spawn_counter(v4, accepted.clone());
        let v6_port = match tokio::net::TcpListener::bind("[::1]:0").await {
            Ok(v6) => {
                let port = v6.local_addr().unwrap().port();
                spawn_counter(v6, accepted.clone());
                Some(port)
            }
            Err(_) => None,
        };
        Self {
            v4_port,
            v6_port,
            accepted,
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn spawn_counter(listener: tokio::net::TcpListener, accepted: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
}

/// Resolves names from a fixed table and records every lookup; unknown names fail.
#[derive(Default)]
pub(crate) struct FixedResolver {
    table: HashMap<String, Vec<IpAddr>>,
    pub lookups: Mutex<Vec<String>>,
}

impl FixedResolver {
    pub(crate) fn with(entries: &[(&str, &[&str])]) -> Arc<Self> {
        let table = entries
            .iter()
            .map(|(name, addrs)| {
                (
                    name.to_string(),
                    addrs.iter().map(|a| a.parse().unwrap()).collect(),
                )
            })
            .collect();
        Arc::new(Self {
            table,
            lookups: Mutex::default(),
        })
    }

    pub(crate) fn lookup_count(&self) -> usize {
        self.lookups.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Resolver for FixedResolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.lookups.lock().unwrap().push(host.to_owned());
        match self.table.get(host) {
            Some(addrs) => Ok(addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such test host",
            )),
        }
    }
}

pub(crate) fn settings(allow: &[&str], deny: &[&str]) -> WebFetchSettings {
    WebFetchSettings {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: deny.iter().map(|s| s.to_string()).collect(),
        ..WebFetchSettings::default()
    }
}

pub(crate) fn tool_with(settings: &WebFetchSettings, resolver: Arc<FixedResolver>) -> WebFetch {
    WebFetch::with_resolver(settings, resolver).unwrap()
}

pub(crate) async fn call(tool: &WebFetch, args: Value) -> Result<Value, ToolError> {
    let ctx = ToolContext {
        session_id: uuid::Uuid::nil(),
        step: 0,
    };
    tool.call(args, &ctx).await
}

pub(crate) async fn refusal(tool: &WebFetch, url: &str) -> String {
    match call(tool, serde_json::json!({ "url": url })).await {
        Ok(result) => panic!("{url} was fetched: {result}"),
        Err(ToolError(message)) => message,
    }
}

/// The fetched text inside the `<untrusted_web_content>` markers of a result, after the
/// response's header lines.
pub(crate) fn inner_body(result: &Value) -> String {
    let block = inner_block(result);
    let (_, text) = block.split_once("\n\n").unwrap();
    text.to_owned()
}

/// Everything inside the markers: the header lines (`Content-Type`, `Final-URL`), a blank line,
/// the text.
pub(crate) fn inner_block(result: &Value) -> String {
    let body = result["body"].as_str().unwrap();
    let (_, rest) = body.split_once(">\n").unwrap();
    rest.strip_suffix("\n</untrusted_web_content>")
        .unwrap()
        .to_owned()
}
