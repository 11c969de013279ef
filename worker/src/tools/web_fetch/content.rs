//! What a response body becomes for the model: HTML as readable text, JSON and other text decoded
//! with their charset, and anything else a short notice instead of its bytes.

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252};
use reqwest::Url;

use super::html;

/// How a body is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Html,
    Json,
    Text,
    Binary,
}

/// Media types outside `text/*`, `*+json` and `*+xml` that are text all the same.
const TEXTUAL: &[&str] = &[
    "application/xml",
    "application/javascript",
    "application/ecmascript",
    "application/x-javascript",
    "application/x-www-form-urlencoded",
    "application/yaml",
    "application/x-yaml",
    "application/toml",
    "application/sql",
    "application/graphql",
    "application/csv",
    "application/x-sh",
];

/// A parsed `Content-Type`: `type/subtype` in lower case and its charset parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MediaType {
    pub essence: String,
    pub charset: Option<String>,
}

impl MediaType {
    /// `None` for a value that names no `type/subtype`: the body is then sniffed.
    pub(crate) fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split(';');
        let essence = parts.next()?.trim().to_ascii_lowercase();
        let (top, sub) = essence.split_once('/')?;
        if top.is_empty() || sub.is_empty() || essence.contains(char::is_whitespace) {
            return None;
        }
        let charset = parts
            .filter_map(|param| param.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
            .map(|(_, value)| value.trim().trim_matches('"').to_owned());
        Some(Self { essence, charset })
    }

    pub(crate) fn kind(&self) -> Kind {
        let essence = self.essence.as_str();
        let (top, sub) = essence.split_once('/').unwrap_or((essence, ""));
        if matches!(essence, "text/html" | "application/xhtml+xml") {
            Kind::Html
        } else if matches!(
            essence,
            "application/json" | "text/json" | "application/x-ndjson"
        ) || sub.ends_with("+json")
        {
            Kind::Json
        } else if top == "text" || sub.ends_with("+xml") || TEXTUAL.contains(&essence) {
            Kind::Text
        } else {
            Kind::Binary
        }
    }
}

/// The kind of a body that came without a usable `Content-Type`, from its first bytes.
pub(crate) fn sniff(first: &[u8]) -> Kind {
    const MAGIC: &[&[u8]] = &[
        b"\x89PNG",
        b"GIF8",
        b"\xff\xd8\xff",
        b"%PDF-",
        b"PK\x03\x04",
        b"\x1f\x8b",
        b"RIFF",
        b"\x7fELF",
        b"BM",
        b"OggS",
        b"wOFF",
        b"wOF2",
    ];
    let head = &first[..first.len().min(1024)];
    let utf16 = head.starts_with(b"\xff\xfe") || head.starts_with(b"\xfe\xff");
    let control = |b: &u8| *b < 0x20 && !b"\t\n\r\x0c\x1b".contains(b);
    if MAGIC.iter().any(|magic| head.starts_with(magic)) || (!utf16 && head.iter().any(control)) {
        return Kind::Binary;
    }
    let start = head.trim_ascii_start().to_ascii_lowercase();
    if start.starts_with(b"<!doctype html") || start.starts_with(b"<html") {
        Kind::Html
    } else {
        Kind::Text
    }
}

/// The text the model sees for a text body: decoded, and for HTML reduced to readable text.
pub(crate) fn render(kind: Kind, charset: Option<&str>, bytes: &[u8], url: &Url) -> String {
    let text = decode(bytes, kind, charset);
    match kind {
        Kind::Html => html::to_text(&text, url),
        Kind::Json | Kind::Text | Kind::Binary => text,
    }
}

/// What the model sees instead of a binary body. The media type is reduced to token characters so
/// a server cannot write prose into it.
pub(crate) fn binary_notice(media: Option<&MediaType>, size: Option<u64>) -> String {
    let media = match media {
        Some(media) => media
            .essence
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "/+-.".contains(*c))
            .take(100)
            .collect(),
        None => "no content type".to_owned(),
    };
    match size {
        Some(size) => format!("binary content ({media}, {size} bytes) not shown"),
        None => format!("binary content ({media}, size unknown) not shown"),
    }
}

/// Decodes with, in order: a byte-order mark, the `Content-Type` charset, an HTML `<meta>` charset,
/// then UTF-8 if the bytes are UTF-8 (JSON always defaults to UTF-8), else windows-1252, the web's
/// legacy default.
fn decode(bytes: &[u8], kind: Kind, charset: Option<&str>) -> String {
    let declared = charset.and_then(|label| Encoding::for_label(label.as_bytes()));
    let from_meta = || match kind {
        Kind::Html => meta_charset(bytes),
        Kind::Json | Kind::Text | Kind::Binary => None,
    };
    let encoding = declared.or_else(from_meta).unwrap_or_else(|| {
        if kind == Kind::Json || is_utf8(bytes) {
            UTF_8
        } else {
            WINDOWS_1252
        }
    });
    let (text, _, _) = encoding.decode(bytes);
    text.into_owned()
}

/// UTF-8 all through, allowing a character cut at the end by truncation.
fn is_utf8(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none(),
    }
}

/// The charset of `<meta charset=...>` or `<meta http-equiv content="...; charset=...">` in the
/// first 1024 bytes (a simplified form of the HTML prescan).
fn meta_charset(bytes: &[u8]) -> Option<&'static Encoding> {
    let head = bytes[..bytes.len().min(1024)].to_ascii_lowercase();
    let mut rest = head.as_slice();
    while let Some(start) = find(rest, b"<meta") {
        let tag = &rest[start..];
        let tag = &tag[..tag.iter().position(|&b| b == b'>').unwrap_or(tag.len())];
        if let Some(at) = find(tag, b"charset") {
            let value = tag[at + b"charset".len()..].trim_ascii_start();
            if let Some(value) = value.strip_prefix(b"=") {
                let value = value.trim_ascii_start();
                let value = value
                    .strip_prefix(b"\"")
                    .or(value.strip_prefix(b"'"))
                    .unwrap_or(value);
                let end = value
                    .iter()
                    .position(|b| b"\"';/>".contains(b) || b.is_ascii_whitespace())
                    .unwrap_or(value.len());
                let encoding = Encoding::for_label(&value[..end])?;
                // A page cannot really be UTF-16 if its meta tag was readable as ASCII.
                return Some(if encoding == UTF_16LE || encoding == UTF_16BE {
                    UTF_8
                } else {
                    encoding
                });
            }
        }
        rest = &rest[start + b"<meta".len()..];
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
