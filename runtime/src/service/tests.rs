use super::*;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

fn endpoints() -> (ServiceEndpoints, Readiness) {
    let readiness = Readiness::new();
    let handle = crate::metrics::install().unwrap();
    (
        ServiceEndpoints {
            readiness: readiness.clone(),
            metrics: handle,
        },
        readiness,
    )
}

async fn get(router: Router, path: &str) -> (StatusCode, String, Option<String>) {
    let resp = router
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap(), ctype)
}

#[tokio::test]
async fn health_is_ok() {
    let (e, _) = endpoints();
    let (status, body, _) = get(router(e), "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"status":"ok"}"#);
}

#[tokio::test]
async fn ready_follows_the_registered_checks() {
    let (e, readiness) = endpoints();
    let streams = readiness.flag("streams", false);
    readiness.register("always", || async { Ok(()) });
    let (status, body, _) = get(router(e.clone()), "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["ready"], false);
    assert_eq!(report["checks"][0]["name"], "streams");
    assert_eq!(report["checks"][0]["ok"], false);
    assert_eq!(report["checks"][1]["ok"], true);

    streams.set(true);
    let (status, _, _) = get(router(e), "/ready").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn ready_with_no_checks_is_ready() {
    let (e, _) = endpoints();
    assert_eq!(get(router(e), "/ready").await.0, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_check_fails_at_its_deadline() {
    let readiness = Readiness::new();
    readiness.register("hangs", std::future::pending);
    let report = readiness.evaluate().await;
    assert!(!report.ready);
    assert!(
        report.checks[0]
            .error
            .as_deref()
            .unwrap()
            .contains("timed out")
    );
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let (e, _) = endpoints();
    crate::metrics::record_build_info("test");
    metrics::counter!(crate::metrics::names::NATS_CONNECTION_EVENTS, "event" => "connected")
        .increment(1);
    // Generate some request counters first.
    let _ = get(router(e.clone()), "/health").await;
    let (status, body, ctype) = get(router(e), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ctype.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(body.contains("cloudlysis_build_info{"), "{body}");
    assert!(body.contains("cloudlysis_http_requests_total{"), "{body}");
    check_exposition(&body);
}

/// Checks the text exposition format 0.0.4 strictly enough to catch broken output: every line is
/// a `# HELP`/`# TYPE` comment or a sample `name{label="value",...} number`, names and labels are
/// valid, TYPE appears once per family before its samples, and counters end in `_total`.
fn check_exposition(text: &str) {
    let name_ok = |n: &str| {
        let mut c = n.chars();
        matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    };
    let mut typed = std::collections::HashMap::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name_ok(name), "bad HELP name in {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name_ok(name), "bad TYPE name in {line:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type in {line:?}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {line:?}");
            }
            assert!(
                typed.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {line:?}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
        let name = match series.split_once('{') {
            None => series,
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels close");
                for pair in split_labels(labels) {
                    let (k, v) = pair.split_once('=').expect("label has =");
                    assert!(name_ok(k) && !k.contains(':'), "bad label name in {line:?}");
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "bad label value in {line:?}"
                    );
                }
                name
            }
        };
        assert!(name_ok(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "sample before its TYPE: {line:?}"
        );
    }
}

fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    for (i, ch) in labels.char_indices() {
        match ch {
            '\\' if in_quotes && !escaped => escaped = true,
            '"' if !escaped => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => escaped = false,
        }
        if ch != '\\' {
            escaped = false;
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}
