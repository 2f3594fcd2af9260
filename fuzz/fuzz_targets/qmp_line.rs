//! The QMP reader's decision about each line QEMU writes: `vmm::qmp::QmpLine::classify`.
//!
//! The input is a stream, cut into lines as the reader's `tokio::io::Lines` cuts it (at `\n`,
//! a `\r` before it dropped). Properties, per line:
//! - the classification agrees with the protocol as the module documents it, restated here on
//!   the parsed JSON: an object with `event` is an event if the name is a string (else ignored),
//!   otherwise one with an unsigned integer `id` is a reply, `return` (any JSON, null included)
//!   winning over `error`, an error's class and text being its strings (empty otherwise);
//! - what it classifies as an event or a reply, written back the way QEMU writes it, is
//!   classified the same again (nothing is lost or invented on the way), floats to within their
//!   last digits: serde_json reads a decimal float to the nearest double or one next to it (its
//!   exact `float_roundtrip` is off), so `474E90` and its written form may differ in the last bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use vmm::qmp::{QmpEvent, QmpFailure, QmpLine};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Lines reports bytes that are not UTF-8 as a read error, which ends the session.
        let Ok(line) = std::str::from_utf8(line) else { continue };
        let got = QmpLine::classify(line);
        assert_eq!(got, expected(line), "{line:?}");
        if let Some(written) = as_qemu_writes(&got) {
            let again = QmpLine::classify(&written);
            assert!(same_line(&again, &got), "{line:?} written back as {written:?}: {again:?}, not {got:?}");
        }
    }
});

fn expected(line: &str) -> QmpLine {
    let Ok(v) = serde_json::from_str::<Value>(line) else { return QmpLine::NotJson };
    let Value::Object(msg) = &v else { return QmpLine::Ignored };
    if let Some(event) = msg.get("event") {
        let Some(event) = event.as_str() else { return QmpLine::Ignored };
        let field = |k: &str| msg.get(k).cloned().unwrap_or(Value::Null);
        return QmpLine::Event(QmpEvent {
            event: event.to_owned(),
            data: field("data"),
            timestamp: field("timestamp"),
        });
    }
    let Some(id) = msg.get("id").and_then(Value::as_u64) else { return QmpLine::Ignored };
    let reply = match msg.get("return") {
        Some(ret) => Ok(ret.clone()),
        None => {
            let text = |k: &str| msg.get("error").and_then(|e| e.get(k)?.as_str()).unwrap_or("").to_owned();
            Err(QmpFailure { class: text("class"), desc: text("desc") })
        }
    };
    QmpLine::Reply { id, reply }
}

fn as_qemu_writes(line: &QmpLine) -> Option<String> {
    let msg = match line {
        QmpLine::Event(ev) => json!({"event": ev.event, "data": ev.data, "timestamp": ev.timestamp}),
        QmpLine::Reply { id, reply: Ok(ret) } => json!({"return": ret, "id": id}),
        QmpLine::Reply { id, reply: Err(f) } => json!({"error": {"class": f.class, "desc": f.desc}, "id": id}),
        QmpLine::NotJson | QmpLine::Ignored => return None,
    };
    Some(msg.to_string())
}

/// `a` and `b` are the same classification, their floats equal to a relative 1e-12.
fn same_line(a: &QmpLine, b: &QmpLine) -> bool {
    match (a, b) {
        (QmpLine::Event(a), QmpLine::Event(b)) => {
            a.event == b.event && same_value(&a.data, &b.data) && same_value(&a.timestamp, &b.timestamp)
        }
        (QmpLine::Reply { id: i, reply: Ok(a) }, QmpLine::Reply { id: j, reply: Ok(b) }) => i == j && same_value(a, b),
        _ => a == b,
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}
