//! A reader of the block-YAML subset the config drive writes, into a [`serde_json::Value`].
//!
//! Accepted, and nothing else: lines of printable ASCII indented by spaces; `key: value`,
//! `key:` followed by a more indented block, `- value` and `- key: value` (a mapping as a
//! sequence item, its further keys two columns in); values are double-quoted scalars with the
//! escapes YAML 1.1 and JSON share (`\" \\ \n \t \r \b \f \uXXXX`), `[]`, `{}` or a decimal
//! integer; keys are `[A-Za-z0-9_-]+`. A plain scalar, a comment, a flow collection with
//! something in it, a tab, a duplicate key or a stray indentation is an error: any of them in
//! rendered output would mean that text from the caller escaped its quotes, or that the writer
//! produced something whose meaning depends on YAML's finer rules.

use serde_json::{Map, Value};

/// One line: its indentation and the text after it.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

/// Reads `doc` (every line ended by `\n`); an error names the line and what is wrong.
pub fn parse(doc: &str) -> Result<Value, String> {
    if let Some(bad) = doc.bytes().position(|b| b != b'\n' && !(0x20..0x7f).contains(&b)) {
        return Err(format!("byte {bad} is not printable ASCII"));
    }
    let Some(body) = doc.strip_suffix('\n') else {
        return Err("the document does not end with a newline".into());
    };
    let mut lines = Vec::new();
    for (number, raw) in body.split('\n').enumerate() {
        let text = raw.trim_start_matches(' ');
        if text.is_empty() {
            return Err(format!("line {number} is blank"));
        }
        lines.push(Line { number, indent: raw.len() - text.len(), text });
    }
    let mut at = 0;
    let value = node(&mut lines, &mut at, 0)?;
    match lines.get(at) {
        None => Ok(value),
        Some(line) => Err(format!("line {} is outside the document's structure", line.number)),
    }
}

fn node(lines: &mut [Line<'_>], at: &mut usize, indent: usize) -> Result<Value, String> {
    let line = lines.get(*at).ok_or("a block is missing")?;
    if line.indent != indent {
        return Err(format!("line {} is indented {} (expected {indent})", line.number, line.indent));
    }
    if line.text.starts_with("- ") { sequence(lines, at, indent) } else { mapping(lines, at, indent) }
}

fn mapping(lines: &mut [Line<'_>], at: &mut usize, indent: usize) -> Result<Value, String> {
    let mut map = Map::new();
    while let Some(line) = lines.get(*at).copied() {
        if line.indent < indent {
            break;
        }
        if line.indent > indent || line.text.starts_with("- ") {
            return Err(format!("line {} does not continue the mapping", line.number));
        }
        let (key, rest) = key(line.text).ok_or_else(|| format!("line {} is not `key: value`", line.number))?;
        *at += 1;
        let value = if rest.is_empty() {
            let next = lines.get(*at).ok_or_else(|| format!("key {key:?} has no value"))?;
            if next.indent <= indent {
                return Err(format!("key {key:?} has no value (a plain null)"));
            }
            let inner = next.indent;
            node(lines, at, inner)?
        } else {
            scalar(rest).map_err(|e| format!("line {}: {e}", line.number))?
        };
        if map.insert(key.to_owned(), value).is_some() {
            return Err(format!("line {}: duplicate key {key:?}", line.number));
        }
    }
    Ok(Value::Object(map))
}

fn sequence(lines: &mut [Line<'_>], at: &mut usize, indent: usize) -> Result<Value, String> {
    let mut items = Vec::new();
    while let Some(line) = lines.get(*at).copied() {
        if line.indent < indent {
            break;
        }
        let Some(item) = line.text.strip_prefix("- ").filter(|_| line.indent == indent) else {
            return Err(format!("line {} does not continue the sequence", line.number));
        };
        if key(item).is_some() {
            // `- key: value`: a mapping whose keys are two columns in.
            lines[*at] = Line { number: line.number, indent: indent + 2, text: item };
            items.push(mapping(lines, at, indent + 2)?);
        } else {
            items.push(scalar(item).map_err(|e| format!("line {}: {e}", line.number))?);
            *at += 1;
        }
    }
    Ok(Value::Array(items))
}

/// `key: rest` or `key:` (rest empty), with a plain key.
fn key(text: &str) -> Option<(&str, &str)> {
    let (key, rest) = match text.split_once(": ") {
        Some((key, rest)) => (key, rest),
        None => (text.strip_suffix(':')?, ""),
    };
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    plain.then_some((key, rest))
}

fn scalar(text: &str) -> Result<Value, String> {
    match text {
        "[]" => return Ok(Value::Array(Vec::new())),
        "{}" => return Ok(Value::Object(Map::new())),
        _ => {}
    }
    if !text.is_empty() && text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().map(Value::from).map_err(|e| e.to_string());
    }
    let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).filter(|_| text.len() >= 2) else {
        return Err(format!("{text:?} is not a double-quoted scalar, [], {{}} or an integer"));
    };
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'"' => return Err(format!("{text:?} has a quote inside")),
            b'\\' => match bytes.next() {
                Some(b'"' | b'\\' | b'n' | b't' | b'r' | b'b' | b'f') => {}
                Some(b'u') => {
                    if !(0..4).all(|_| bytes.next().is_some_and(|h| h.is_ascii_hexdigit())) {
                        return Err(format!("{text:?} has a short \\u escape"));
                    }
                }
                other => return Err(format!("{text:?} has an escape YAML 1.1 and JSON do not share: {other:?}")),
            },
            _ => {}
        }
    }
    serde_json::from_str::<String>(text).map(Value::String).map_err(|e| format!("{text:?}: {e}"))
}
