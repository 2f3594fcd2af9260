//! How results are shown: `-o table|json|yaml|name|id`, and the only way the CLI writes to
//! stdout ([`write_stdout`], which turns a closed pipe into a quiet [`OutputError::Closed`]).
//!
//! - `json` is the API's object (or, for a list, the array of every item of every page): a
//!   stable contract for scripts, pretty-printed, with fields the CLI does not know kept.
//! - `yaml` is the same value as YAML (block style, strings quoted only where YAML needs it).
//! - `table` is for people: a list is one row per item under upper-case headers; one object
//!   is `FIELD  VALUE` lines. Sizes are shown as `256MiB`, times to the second.
//! - `name` / `id` print one value per line, for `xargs` and `$(…)`.
//!
//! Every render function is pure (value in, text out), so golden tests check them on fixed data.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::client::{
    FleetLiveness, Host, Image, Instance, InstanceAccepted, JoinToken, Member, Operation, Project, ProjectQuotas,
    Snapshot, SnapshotAccepted, SnapshotPolicy, SshKey, Token, TokenCreated, UserAccount, WhoAmI,
};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people (the default on a terminal).
    Table,
    /// The API's JSON (the default when stdout is not a terminal).
    Json,
    /// The API's objects as YAML.
    Yaml,
    /// Names, one per line.
    Name,
    /// Ids, one per line.
    Id,
}

impl Format {
    /// Parses a format name as written in the config file.
    pub fn parse(text: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(text, true).ok()
    }

    /// `table` when stdout is a terminal, else `json`.
    pub fn default_for_stdout() -> Self {
        if std::io::stdout().is_terminal() { Self::Table } else { Self::Json }
    }
}

/// Why output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader of stdout went away (`| head -1`): not an error, the command stops quietly.
    #[error("stdout was closed")]
    Closed,
    #[error("cannot write to stdout")]
    Write(#[source] std::io::Error),
    #[error("cannot encode the output")]
    Encode(#[source] serde_json::Error),
}

/// Writes `text` to stdout; a closed pipe is [`OutputError::Closed`], never a panic.
pub fn write_stdout(text: &str) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => OutputError::Closed,
        _ => OutputError::Write(e),
    })
}

/// Writes raw bytes to stdout (console and tunnel output), with the same closed-pipe rule.
pub fn write_stdout_bytes(bytes: &[u8]) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => OutputError::Closed,
        _ => OutputError::Write(e),
    })
}

/// A JSON value that keeps the order of object keys (serde_json's `Value` sorts them), so YAML
/// and `FIELD  VALUE` output list fields in the API's order, like the JSON output.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    /// The node of a serializable value.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, OutputError> {
        let text = serde_json::to_string(value).map_err(OutputError::Encode)?;
        serde_json::from_str(&text).map_err(OutputError::Encode)
    }
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Node::Null, Node::Number))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::String(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Node>()? {
                    fields.push((k, v));
                }
                Ok(Node::Object(fields))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Something the CLI shows: how it looks in a table, and its name and id.
pub trait Resource: Serialize {
    /// Column headers of a list.
    fn columns() -> &'static [&'static str];
    /// The cells of its row, in [`Resource::columns`] order.
    fn row(&self) -> Vec<String>;
    /// What `-o name` prints.
    fn name(&self) -> String;
    /// What `-o id` prints.
    fn id(&self) -> String;
    /// `FIELD  VALUE` lines of `table` output for one object; by default every field of its JSON.
    fn details(&self) -> Vec<(String, String)> {
        Node::of(self).map(|v| flatten_fields("", &v)).unwrap_or_default()
    }
}

/// A list in `format`.
pub fn render_list<T: Resource>(items: &[T], format: Format) -> Result<String, OutputError> {
    Ok(match format {
        Format::Json => json(items)?,
        Format::Yaml => to_yaml(&Node::of(items)?),
        Format::Name => lines(items.iter().map(T::name)),
        Format::Id => lines(items.iter().map(T::id)),
        Format::Table => table(T::columns(), items.iter().map(T::row).collect()),
    })
}

/// One object in `format`.
pub fn render_one<T: Resource>(item: &T, format: Format) -> Result<String, OutputError> {
    Ok(match format {
        Format::Json => json(item)?,
        Format::Yaml => to_yaml(&Node::of(item)?),
        Format::Name => lines([item.name()]),
        Format::Id => lines([item.id()]),
        Format::Table => {
            let rows = item.details().into_iter().map(|(k, v)| vec![k.to_uppercase(), v]).collect();
            table(&[], rows)
        }
    })
}

fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, OutputError> {
    let mut text = serde_json::to_string_pretty(value).map_err(OutputError::Encode)?;
    text.push('\n');
    Ok(text)
}

fn lines(values: impl IntoIterator<Item = String>) -> String {
    values.into_iter().map(|v| v + "\n").collect()
}

/// Aligned columns, two spaces apart, no trailing spaces; no header line when `headers` is empty.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut all: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    if !headers.is_empty() {
        all.push(headers.iter().map(|h| (*h).to_owned()).collect());
    }
    all.extend(rows);
    let columns = all.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| all.iter().filter_map(|r| r.get(c)).map(|v| v.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &all {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let cell = cell.replace(['\n', '\r', '\t'], " ");
            if c + 1 == row.len() {
                line.push_str(&cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `FIELD  VALUE` pairs of a JSON object, nested objects as `outer.inner`.
pub fn flatten_fields(prefix: &str, value: &Node) -> Vec<(String, String)> {
    let Node::Object(map) = value else {
        return vec![(prefix.to_owned(), cell(prefix, value))];
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Node::Object(inner) if !inner.is_empty() => out.extend(flatten_fields(&key, v)),
            _ => out.push((key.clone(), cell(&key, v))),
        }
    }
    out
}

/// A JSON value as a table cell: `-` for null, times to the second, byte counts with a unit.
fn cell(key: &str, value: &Node) -> String {
    match value {
        Node::Null => "-".to_owned(),
        Node::Bool(b) => b.to_string(),
        Node::String(s) => DateTime::parse_from_rfc3339(s).map_or_else(|_| s.clone(), |t| time(&t.with_timezone(&Utc))),
        Node::Number(n) => match n.as_i64() {
            Some(b) if key.ends_with("_bytes") => format!("{b} ({})", bytes(b)),
            _ => n.to_string(),
        },
        Node::Array(items) => items
            .iter()
            .map(|i| match i {
                Node::Object(o) => {
                    let field = |name: &str| o.iter().find(|(k, _)| k == name).map(|(_, n)| cell("", n));
                    match (field("name"), field("key_type"), field("fingerprint")) {
                        (Some(name), _, _) => name,
                        // an SSH key: what `ssh-keygen -l` shows of it
                        (None, Some(kind), Some(fingerprint)) => format!("{kind} {fingerprint}"),
                        _ => "{…}".to_owned(),
                    }
                }
                other => cell("", other),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Node::Object(o) if o.is_empty() => "-".to_owned(),
        Node::Object(_) => "{…}".to_owned(),
    }
}

/// A time to the second, in UTC: `2025-01-02T03:04:05Z`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt_time(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

/// A size in bytes with the largest binary unit that divides it evenly (or one decimal).
pub fn bytes(n: i64) -> String {
    const UNITS: [(&str, i64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return if n % size == 0 {
                format!("{}{unit}", n / size)
            } else {
                format!("{:.1}{unit}", n as f64 / size as f64)
            };
        }
    }
    format!("{n}B")
}

fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

/// YAML of a JSON value (block style; a trailing newline).
pub fn to_yaml(value: &Node) -> String {
    let mut out = String::new();
    match value {
        Node::Object(m) if !m.is_empty() => yaml_map(m, 0, &mut out),
        Node::Array(a) if !a.is_empty() => yaml_seq(a, 0, &mut out),
        other => {
            out.push_str(&yaml_inline(other));
            out.push('\n');
        }
    }
    out
}

fn yaml_map(map: &[(String, Node)], indent: usize, out: &mut String) {
    for (i, (k, v)) in map.iter().enumerate() {
        // The first key of a map inside a sequence item follows the "- " on the same line.
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&yaml_scalar(k));
        out.push(':');
        yaml_value(v, indent, out);
    }
}

fn yaml_seq(items: &[Node], indent: usize, out: &mut String) {
    for (i, v) in items.iter().enumerate() {
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match v {
            Node::Object(m) if !m.is_empty() => yaml_map(m, indent + 2, out),
            Node::Array(a) if !a.is_empty() => yaml_seq(a, indent + 2, out),
            other => {
                out.push_str(&yaml_inline(other));
                out.push('\n');
            }
        }
    }
}

/// The value after `key:`: inline for scalars and empty collections, else on the next lines.
fn yaml_value(v: &Node, indent: usize, out: &mut String) {
    match v {
        Node::Object(m) if !m.is_empty() => {
            out.push('\n');
            yaml_map(m, indent + 2, out);
        }
        Node::Array(a) if !a.is_empty() => {
            out.push('\n');
            yaml_seq(a, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&yaml_inline(other));
            out.push('\n');
        }
    }
}

fn yaml_inline(v: &Node) -> String {
    match v {
        Node::Null => "null".to_owned(),
        Node::Bool(b) => b.to_string(),
        Node::Number(n) => n.to_string(),
        Node::String(s) => yaml_scalar(s),
        Node::Array(_) => "[]".to_owned(),
        Node::Object(_) => "{}".to_owned(),
    }
}

/// A string as a plain YAML scalar when that reads back as the same string, else double-quoted
/// (JSON's escapes are valid in YAML double-quoted scalars).
fn yaml_scalar(s: &str) -> String {
    const RESERVED: [&str; 12] = ["null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", ".nan", ".inf"];
    let needs_quotes = s.is_empty()
        || s.trim() != s
        || s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c))
        || s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || s.chars().any(char::is_control)
        || RESERVED.contains(&s.to_ascii_lowercase().as_str())
        || s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with("0o");
    if needs_quotes { serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}")) } else { s.to_owned() }
}

impl Resource for Instance {
    fn columns() -> &'static [&'static str] {
        &["NAME", "STATE", "VCPUS", "MEMORY", "DISK", "ADDRESS", "CREATED", "ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.state.clone(),
            self.vcpus.to_string(),
            bytes(self.memory_bytes),
            if self.disk_bytes == 0 { "-".to_owned() } else { bytes(self.disk_bytes) },
            or_dash(self.address.as_deref()),
            time(&self.created_at),
            self.id.to_string(),
        ]
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for SshKey {
    fn columns() -> &'static [&'static str] {
        &["NAME", "FINGERPRINT", "CREATED", "ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![self.name.clone(), self.fingerprint.clone(), time(&self.created_at), self.id.to_string()]
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for Snapshot {
    fn columns() -> &'static [&'static str] {
        &["NAME", "KIND", "STATE", "SIZE", "INSTANCE", "CREATED", "ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.kind.clone(),
            self.state.clone(),
            self.size_bytes.map_or_else(|| "-".to_owned(), bytes),
            self.instance_id.map_or_else(|| "-".to_owned(), |i| i.to_string()),
            time(&self.created_at),
            self.id.to_string(),
        ]
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for SnapshotAccepted {
    fn columns() -> &'static [&'static str] {
        &["SNAPSHOT", "STATE", "OPERATION", "KIND", "OPERATION STATE"]
    }
    fn row(&self) -> Vec<String> {
        accepted_row(&self.snapshot.name, &self.snapshot.state, &self.operation)
    }
    fn name(&self) -> String {
        self.snapshot.name.clone()
    }
    fn id(&self) -> String {
        self.snapshot.id.to_string()
    }
}

impl Resource for SnapshotPolicy {
    fn columns() -> &'static [&'static str] {
        &["INSTANCE", "EVERY", "KEEP", "MEMORY", "LAST RUN"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.instance_id.to_string(),
            format!("{}s", self.every_secs),
            self.keep.to_string(),
            if self.memory { "yes" } else { "no" }.to_owned(),
            self.last_run_at.as_ref().map_or_else(|| "-".to_owned(), time),
        ]
    }
    fn name(&self) -> String {
        self.instance_id.to_string()
    }
    fn id(&self) -> String {
        self.instance_id.to_string()
    }
}

/// The row of an accepted change: what changes, its state, and the operation carrying it out.
fn accepted_row(name: &str, state: &str, operation: &Operation) -> Vec<String> {
    vec![name.to_owned(), state.to_owned(), operation.id.to_string(), operation.kind.clone(), operation.state.clone()]
}

impl Resource for Image {
    fn columns() -> &'static [&'static str] {
        &["NAME", "STATE", "BOOT", "PUBLIC", "SIZE", "CREATED", "ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.state.clone(),
            self.boot_mode.clone(),
            if self.public { "yes" } else { "no" }.to_owned(),
            self.disk_size_bytes.map_or_else(|| "-".to_owned(), bytes),
            time(&self.created_at),
            self.id.to_string(),
        ]
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for Operation {
    fn columns() -> &'static [&'static str] {
        &["ID", "KIND", "STATE", "STEP", "TARGET", "CREATED", "ERROR"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.kind.clone(),
            self.state.clone(),
            or_dash(self.current_step.as_deref()),
            self.target_id.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            time(&self.created_at),
            or_dash(self.error_message.as_deref()),
        ]
    }
    fn name(&self) -> String {
        self.id.to_string()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for InstanceAccepted {
    fn columns() -> &'static [&'static str] {
        &["INSTANCE", "STATE", "OPERATION", "KIND", "OPERATION STATE"]
    }
    fn row(&self) -> Vec<String> {
        accepted_row(&self.instance.name, &self.instance.state, &self.operation)
    }
    fn name(&self) -> String {
        self.instance.name.clone()
    }
    fn id(&self) -> String {
        self.instance.id.to_string()
    }
    fn details(&self) -> Vec<(String, String)> {
        let (i, o) = (&self.instance, &self.operation);
        vec![
            ("instance".into(), i.name.clone()),
            ("instance id".into(), i.id.to_string()),
            ("state".into(), i.state.clone()),
            ("address".into(), or_dash(i.address.as_deref())),
            ("operation".into(), o.id.to_string()),
            ("operation kind".into(), o.kind.clone()),
            ("operation state".into(), o.state.clone()),
            ("operation step".into(), or_dash(o.current_step.as_deref())),
            ("operation error".into(), or_dash(o.error_message.as_deref())),
        ]
    }
}

impl Resource for Host {
    fn columns() -> &'static [&'static str] {
        &["HOSTNAME", "STATE", "ACCEL", "VCPUS", "MEMORY", "DISK", "SUBNET", "LAST REPORT", "ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.hostname.clone(),
            self.state.clone(),
            self.accelerator.clone(),
            format!("{}/{}", self.reserved_vcpus, self.total_vcpus),
            format!("{}/{}", bytes(self.reserved_memory_bytes), bytes(self.total_memory_bytes)),
            format!("{}/{}", bytes(self.reserved_disk_bytes), bytes(self.total_disk_bytes)),
            self.instance_subnet.clone(),
            opt_time(self.last_report_at.as_ref()),
            self.id.to_string(),
        ]
    }
    fn name(&self) -> String {
        self.hostname.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for FleetLiveness {
    fn columns() -> &'static [&'static str] {
        &["STATE", "SILENT", "HOSTS", "DEAD", "DEGRADED SINCE"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.state.clone(),
            self.silent_hosts.to_string(),
            self.hosts.to_string(),
            self.dead_hosts.to_string(),
            opt_time(self.degraded_since.as_ref()),
        ]
    }
    fn name(&self) -> String {
        self.state.clone()
    }
    fn id(&self) -> String {
        self.state.clone()
    }
}

/// One line per quota: `QUOTA  USAGE  LIMIT` (0: no limit).
impl Resource for ProjectQuotas {
    fn columns() -> &'static [&'static str] {
        &["QUOTA", "USAGE", "LIMIT"]
    }
    fn row(&self) -> Vec<String> {
        Vec::new()
    }
    fn name(&self) -> String {
        String::new()
    }
    fn id(&self) -> String {
        String::new()
    }
    fn details(&self) -> Vec<(String, String)> {
        let (l, u) = (self.limits, self.usage);
        let limit = |n: i64| if n == 0 { "no limit".to_owned() } else { n.to_string() };
        [
            ("instances", u.instances, l.instances),
            ("vcpus", u.vcpus, l.vcpus),
            ("memory_bytes", u.memory_bytes, l.memory_bytes),
            ("disk_bytes", u.disk_bytes, l.disk_bytes),
            ("snapshots", u.snapshots, l.snapshots),
        ]
        .into_iter()
        .map(|(what, used, max)| (what.to_owned(), format!("{used} of {}", limit(max))))
        .collect()
    }
}

impl Resource for Project {
    fn columns() -> &'static [&'static str] {
        &["NAME", "ROLE", "CREATED", "ID", "DESCRIPTION"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.role.clone(),
            time(&self.created_at),
            self.id.to_string(),
            self.description.clone(),
        ]
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for JoinToken {
    fn columns() -> &'static [&'static str] {
        &["ID", "EXPIRES", "COMMAND"]
    }
    fn row(&self) -> Vec<String> {
        vec![self.id.to_string(), time(&self.expires_at), self.command.clone()]
    }
    fn name(&self) -> String {
        self.token.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for TokenCreated {
    fn columns() -> &'static [&'static str] {
        &["NAME", "SECRET", "EXPIRES", "LIMITED TO", "ID"]
    }
    fn row(&self) -> Vec<String> {
        let row = self.token.row();
        vec![self.token.name.clone(), self.secret.clone(), row[4].clone(), row[5].clone(), self.token.id.to_string()]
    }
    /// The secret: `cloudctl token create ci -o name` prints just what a script needs.
    fn name(&self) -> String {
        self.secret.clone()
    }
    fn id(&self) -> String {
        self.token.id.to_string()
    }
}

impl Resource for Member {
    fn columns() -> &'static [&'static str] {
        &["NAME", "ROLE", "EMAIL", "SINCE", "USER ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.role.clone(),
            or_dash(self.email.as_deref()),
            time(&self.created_at),
            self.user_id.to_string(),
        ]
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn id(&self) -> String {
        self.user_id.to_string()
    }
}

impl Resource for UserAccount {
    fn columns() -> &'static [&'static str] {
        &["NAME", "OPERATOR", "EMAIL", "CREATED", "ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            if self.is_operator { "yes" } else { "no" }.to_owned(),
            or_dash(self.email.as_deref()),
            time(&self.created_at),
            self.id.to_string(),
        ]
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for Token {
    fn columns() -> &'static [&'static str] {
        &["NAME", "STATUS", "PREFIX", "CREATED", "EXPIRES", "LIMITED TO", "ID"]
    }
    fn row(&self) -> Vec<String> {
        let limited = match (&self.project_id, &self.role) {
            (Some(project), Some(role)) => format!("{role} in {project}"),
            _ => "-".to_owned(),
        };
        vec![
            self.name.clone(),
            self.status.clone(),
            self.token_prefix.clone(),
            time(&self.created_at),
            opt_time(self.expires_at.as_ref()),
            limited,
            self.id.to_string(),
        ]
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn id(&self) -> String {
        self.id.to_string()
    }
}

impl Resource for WhoAmI {
    fn columns() -> &'static [&'static str] {
        &["USER", "OPERATOR", "PROJECTS", "TOKEN"]
    }
    fn row(&self) -> Vec<String> {
        let d = self.details();
        d.into_iter().skip(1).map(|(_, v)| v).collect()
    }
    fn name(&self) -> String {
        self.user.name.clone()
    }
    fn id(&self) -> String {
        self.user.id.to_string()
    }
    fn details(&self) -> Vec<(String, String)> {
        let projects: Vec<String> = self.projects.iter().map(|p| format!("{} ({})", p.name, p.role)).collect();
        vec![
            ("user id".into(), self.user.id.to_string()),
            ("user".into(), self.user.name.clone()),
            ("operator".into(), if self.is_operator { "yes" } else { "no" }.into()),
            ("projects".into(), if projects.is_empty() { "-".into() } else { projects.join(", ") }),
            ("token".into(), self.token_id.map_or_else(|| "- (a console session)".to_owned(), |t| t.to_string())),
        ]
    }
}

/// A spinner on stderr with the current step of a wait; draws nothing when disabled (stderr
/// is not a terminal), so piped runs print nothing extra.
#[derive(Debug)]
pub struct Progress {
    state: Option<Arc<Mutex<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing `label` (if `enabled`); needs a tokio runtime.
    pub fn start(enabled: bool, label: &str) -> Self {
        if !enabled {
            return Self { state: None, task: None };
        }
        let state = Arc::new(Mutex::new(label.to_owned()));
        let shared = state.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            for frame in FRAMES.iter().cycle() {
                let text = shared.lock().map(|s| s.clone()).unwrap_or_default();
                let line = format!("\r\x1b[2K{frame} {text} ({}s)", started.elapsed().as_secs());
                let _ = std::io::stderr().write_all(line.as_bytes());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { state: Some(state), task: Some(task) }
    }

    /// Replaces the text after the spinner.
    pub fn set(&self, text: String) {
        if let Some(state) = &self.state
            && let Ok(mut s) = state.lock()
        {
            *s = text;
        }
    }

    /// Stops drawing and clears the line.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_the_largest_even_unit() {
        assert_eq!(bytes(256 << 20), "256MiB");
        assert_eq!(bytes(2 << 30), "2GiB");
        assert_eq!(bytes(1536 << 20), "1.5GiB");
        assert_eq!(bytes(512), "512B");
    }

    #[test]
    fn yaml_quotes_only_what_needs_quoting() {
        let yaml = |v: serde_json::Value| to_yaml(&Node::of(&v).unwrap_or(Node::Null));
        let v = serde_json::json!({"a": "plain", "b": "yes", "c": "12", "d": "", "e": "x: y", "f": null,
            "g": [1, {"h": "-x", "i": []}], "j": {}});
        let expected =
            "a: plain\nb: \"yes\"\nc: \"12\"\nd: \"\"\ne: \"x: y\"\nf: null\ng:\n- 1\n- h: \"-x\"\n  i: []\nj: {}\n";
        assert_eq!(yaml(v), expected);
        assert_eq!(yaml(serde_json::json!([])), "[]\n");
        assert_eq!(yaml(serde_json::json!([{"a": 1, "b": {"c": 2}}])), "- a: 1\n  b:\n    c: 2\n");
    }

    #[test]
    fn tables_align_and_trim() {
        let t = table(&["A", "BB"], vec![vec!["xxx".into(), "y".into()], vec!["z".into(), String::new()]]);
        assert_eq!(t, "A    BB\nxxx  y\nz\n");
    }
}
