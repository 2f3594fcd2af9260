//! A `multipart/mixed` document split into its parts, with the most liberal boundary rule: any
//! line (ended by `\r\n`, `\r` or `\n`, as Python's `email` reads lines) that starts with
//! `--boundary` is a delimiter. The line break before a delimiter belongs to it (RFC 2046).

/// A part: its header lines and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    pub headers: Vec<&'a str>,
    pub body: &'a str,
}

/// A document's top-level header lines and its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart<'a> {
    pub headers: Vec<&'a str>,
    pub boundary: &'a str,
    pub parts: Vec<Part<'a>>,
}

/// Splits `doc`; an error says why it is not a well-formed multipart document with nothing
/// before its first delimiter and nothing after its closing one.
pub fn split(doc: &str) -> Result<Multipart<'_>, String> {
    let (headers, body) = headers_and_body(doc)?;
    let content_type = headers
        .iter()
        .find_map(|h| h.strip_prefix("Content-Type: multipart/mixed; boundary=\""))
        .ok_or("no multipart/mixed Content-Type with a quoted boundary")?;
    let boundary = content_type.strip_suffix('"').filter(|b| !b.contains('"')).ok_or("a malformed boundary")?;
    if boundary.is_empty() {
        return Err("an empty boundary".into());
    }
    let delimiter = format!("--{boundary}");
    let lines = lines(body);
    let found: Vec<_> = lines.iter().filter(|l| body[l.start..l.end].starts_with(&delimiter)).collect();
    let Some((close, opens)) = found.split_last() else {
        return Err("no delimiter".into());
    };
    if opens.first().map(|l| l.start) != Some(0) {
        return Err("text before the first delimiter".into());
    }
    if body[close.start..close.end] != format!("{delimiter}--") || close.next != body.len() {
        return Err("the last delimiter is not a closing one at the very end".into());
    }
    let mut parts = Vec::new();
    for (open, next) in opens.iter().zip(found.iter().skip(1)) {
        if body[open.start..open.end] != delimiter {
            return Err(format!("a delimiter line with more after it: {:?}", &body[open.start..open.end]));
        }
        let text = &body[open.next..next.start];
        let text = text.strip_suffix("\r\n").or_else(|| text.strip_suffix(['\n', '\r'])).unwrap_or(text);
        let (headers, body) = headers_and_body(text)?;
        parts.push(Part { headers, body });
    }
    Ok(Multipart { headers, boundary, parts })
}

/// The header lines up to the first empty line (`\n` line ends), and the rest.
fn headers_and_body(text: &str) -> Result<(Vec<&str>, &str), String> {
    let (head, body) = text.split_once("\n\n").ok_or("no empty line after the headers")?;
    let headers: Vec<&str> = head.split('\n').collect();
    if let Some(bad) = headers.iter().find(|h| !h.contains(": ") || h.starts_with([' ', '\t']) || h.contains('\r')) {
        return Err(format!("not a header line: {bad:?}"));
    }
    Ok((headers, body))
}

/// A line of a text: where it starts and ends (before its line break), and where the next starts.
#[derive(Debug, Clone, Copy)]
struct LineAt {
    start: usize,
    end: usize,
    next: usize,
}

fn lines(text: &str) -> Vec<LineAt> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let eol = match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => 2,
            b'\r' | b'\n' => 1,
            _ => 0,
        };
        if eol > 0 {
            out.push(LineAt { start, end: i, next: i + eol });
            start = i + eol;
            i += eol;
        } else {
            i += 1;
        }
    }
    if start < bytes.len() {
        out.push(LineAt { start, end: bytes.len(), next: bytes.len() });
    }
    out
}
