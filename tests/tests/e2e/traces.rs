//! Traces across the fleet: a create carrying a caller's W3C `traceparent` becomes one trace
//! from the API request through the operation's steps, the gRPC call and the host agent down
//! to QEMU's launch, exported by both services over OTLP to a receiver of the test's; the
//! operation shows the trace's id, in the API and in `cloudctl operation get`.

use std::time::Duration;

use cloud_tests::cloud::OneHostCloud;
use cloud_tests::guest::minimal_image;
use cloud_tests::otlp::ReceivedSpan;
use reqwest::Method;
use serde_json::{Value, json};

/// The (service, name) of each ancestor of `span` received, nearest first.
fn ancestors<'a>(spans: &'a [ReceivedSpan], span: &ReceivedSpan) -> Vec<(&'a str, &'a str)> {
    let mut chain = Vec::new();
    let mut parent = spans.iter().find(|s| s.span_id == span.parent_span_id);
    while let Some(p) = parent {
        chain.push((p.service.as_str(), p.name.as_str()));
        parent = spans.iter().find(|s| s.span_id == p.parent_span_id);
    }
    chain
}

fn named<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.service == service && s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_spans_the_request_the_operation_the_agent_and_qemu() {
    let cloud = OneHostCloud::start_traced().await;
    cloud.cli.create_minimal_image(&minimal_image()).await;
    let otlp = cloud.otlp.as_ref().unwrap();

    // The caller's trace: the request is a span of it, and so is everything it starts.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let body = json!({"name": "web-1", "image": "minimal", "vcpus": 1, "memory_mib": 256, "ssh_keys": ["alice"]});
    let resp = cloud
        .cp
        .request(Method::POST, "/v1/projects/default/instances")
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let accepted: Value = resp.json().await.unwrap();
    assert_eq!(accepted["operation"]["trace_id"], trace_id, "{accepted}");
    let op = accepted["operation"]["id"].as_str().unwrap().to_owned();

    // cloudctl shows it, as JSON and in its table.
    let got = cloud.cli.run(&["operation", "get", &op, "-o", "json"]).await.ok("operation get");
    assert_eq!(got.out["trace_id"], trace_id, "{}", got.out);
    let table = cloud.cli.run(&["operation", "get", &op]).await.ok("operation get");
    assert!(table.text().contains(trace_id), "the table shows the trace id: {}", table.text());
    let waited = cloud.cli.run(&["operation", "wait", &op]).await.ok("operation wait");
    assert!(waited.text().contains("succeeded"), "{}", waited.text());

    let spans = otlp
        .wait_for_trace(trace_id, Duration::from_secs(60), |spans| {
            // Complete once QEMU's launch reaches the request through every span between.
            named(spans, "host-agent", "vmm.launch")
                .iter()
                .any(|launch| ancestors(spans, launch).contains(&("control-plane", "request")))
        })
        .await;
    let by_id = |id: &str| spans.iter().find(|s| s.span_id == id);
    // The request is the caller's child; the operation continues the request's trace.
    let request = named(&spans, "control-plane", "request");
    assert!(request.iter().any(|s| s.parent_span_id == caller_span), "{request:#?}");
    let operation = named(&spans, "control-plane", "operation");
    assert!(!operation.is_empty(), "the operation is a span of the trace: {spans:#?}");
    // The agent's gRPC span is the child of one of the control plane's steps: the context
    // crossed the process boundary in the call's metadata.
    let grpc = named(&spans, "host-agent", "grpc");
    assert!(
        grpc.iter().any(|g| by_id(&g.parent_span_id).is_some_and(|p| p.service == "control-plane" && p.name == "step")),
        "no agent span whose parent is a control-plane step: {spans:#?}"
    );
    // And QEMU's launch sits under an instance action of the agent, in the same trace.
    let launch = named(&spans, "host-agent", "vmm.launch");
    let chain = ancestors(&spans, launch[0]);
    for hop in [
        ("host-agent", "instance"),
        ("host-agent", "grpc"),
        ("control-plane", "step"),
        ("control-plane", "operation"),
        ("control-plane", "request"),
    ] {
        assert!(chain.contains(&hop), "QEMU's launch is not under {hop:?}: {chain:?}");
    }

    // A caller without a trace gets one of the control plane's, shown the same way.
    let created = cloud
        .cli
        .line("instance create web-2 --image minimal --memory 256MiB --ssh-key alice")
        .await
        .ok("instance create");
    let own = created.out["operation"]["trace_id"].as_str().unwrap_or_else(|| panic!("no trace id: {}", created.out));
    assert!(own.len() == 32 && own != trace_id && own.bytes().all(|b| b.is_ascii_hexdigit()), "{own}");
}
