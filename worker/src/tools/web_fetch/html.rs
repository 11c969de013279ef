//! HTML to readable text: the page is parsed as a browser would (html5ever through `scraper`, so
//! entities are decoded and broken markup repaired), scripts and styles are dropped, block
//! elements become line breaks, whitespace collapses, and links keep their absolute URL.

use reqwest::Url;
use scraper::{Html, Node};

/// Elements whose content is never text a reader sees.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "canvas", "iframe",
];

/// Elements that end a paragraph: a blank line around them.
const PARAGRAPHS: &[&str] = &[
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "blockquote",
    "table",
    "ul",
    "ol",
    "dl",
    "hr",
    "figure",
    "form",
];

/// Elements that end a line.
const LINES: &[&str] = &[
    "address",
    "article",
    "aside",
    "body",
    "br",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dt",
    "fieldset",
    "figcaption",
    "footer",
    "header",
    "hgroup",
    "legend",
    "li",
    "main",
    "menu",
    "nav",
    "option",
    "search",
    "section",
    "summary",
    "title",
    "tr",
];

/// Table cells: kept apart on their row.
const CELLS: &[&str] = &["td", "th"];

/// The readable text of an HTML document; relative links are resolved against `base`.
pub(crate) fn to_text(html: &str, base: &Url) -> String {
    let document = Html::parse_document(html);
    let mut writer = Writer::default();
    // Depth-first with an explicit stack: hostile pages can nest deeper than the call stack.
    let mut stack = vec![(document.tree.root(), false)];
    while let Some((node, closing)) = stack.pop() {
        match node.value() {
            Node::Text(text) if writer.skipping == 0 => writer.text(text),
            Node::Element(element) => {
                let name = element.name();
                if closing {
                    writer.close(name);
                    continue;
                }
                writer.open(name, element.attr("href"), base);
                stack.push((node, true));
            }
            Node::Document => {}
            _ => continue,
        }
        if !closing {
            stack.extend(node.children().rev().map(|child| (child, false)));
        }
    }
    writer.finish()
}

/// Collapses whitespace as a browser does and turns block boundaries into line breaks.
#[derive(Default)]
struct Writer {
    out: String,
    /// Whitespace seen since the last word (one space at most is written).
    space: bool,
    /// Line breaks owed before the next word (two at most: a blank line).
    breaks: usize,
    /// Inside `<pre>`: text is kept as it is.
    preformatted: usize,
    /// Inside an element whose content is dropped.
    skipping: usize,
    /// Open links: their absolute URL and where their text starts in `out`.
    links: Vec<Option<(String, usize)>>,
}

impl Writer {
    fn open(&mut self, name: &str, href: Option<&str>, base: &Url) {
        if SKIPPED.contains(&name) {
            self.skipping += 1;
        }
        self.boundary(name);
        match name {
            "pre" => self.preformatted += 1,
            "a" => {
                let target = href
                    .and_then(|href| base.join(href).ok())
                    .filter(|url| matches!(url.scheme(), "http" | "https"));
                self.links
                    .push(target.map(|url| (url.to_string(), self.out.len())));
            }
            _ => {}
        }
    }

    fn close(&mut self, name: &str) {
        match name {
            "pre" => self.preformatted = self.preformatted.saturating_sub(1),
            "a" => {
                if let Some(Some((url, start))) = self.links.pop() {
                    let text = self.out.get(start..).unwrap_or_default().trim();
                    if !text.is_empty() && text != url {
                        self.space = true;
                        self.word(&format!("({url})"));
                    }
                }
            }
            _ => {}
        }
        if SKIPPED.contains(&name) {
            self.skipping = self.skipping.saturating_sub(1);
        }
        self.boundary(name);
    }

    fn boundary(&mut self, name: &str) {
        if PARAGRAPHS.contains(&name) {
            self.breaks = 2;
        } else if LINES.contains(&name) {
            self.breaks = self.breaks.max(1);
        } else if CELLS.contains(&name) {
            self.space = true;
        }
    }

    fn text(&mut self, text: &str) {
        if self.preformatted > 0 {
            self.flush_breaks();
            self.out.push_str(text);
            self.space = false;
            return;
        }
        if text.starts_with(char::is_whitespace) {
            self.space = true;
        }
        let mut words = text.split_whitespace().peekable();
        while let Some(word) = words.next() {
            self.word(word);
            if words.peek().is_some() {
                self.space = true;
            }
        }
        if text.ends_with(char::is_whitespace) {
            self.space = true;
        }
    }

    fn word(&mut self, word: &str) {
        if self.breaks > 0 && !self.out.is_empty() {
            self.flush_breaks();
        } else if self.space && !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push(' ');
        }
        self.breaks = 0;
        self.space = false;
        self.out.push_str(word);
    }

    fn flush_breaks(&mut self) {
        if !self.out.is_empty() {
            let owed = self.breaks.saturating_sub(self.trailing_newlines());
            self.out.extend(std::iter::repeat_n('\n', owed));
        }
        self.breaks = 0;
    }

    fn trailing_newlines(&self) -> usize {
        self.out.chars().rev().take_while(|c| *c == '\n').count()
    }

    fn finish(self) -> String {
        self.out.trim().to_owned()
    }
}
