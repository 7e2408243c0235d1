//! W3C Trace Context end to end (Gateway → aggregate node → `AGGREGATE_EVENTS`): a command with
//! an invalid `traceparent` is stored with a fresh trace and no `tracestate` — the state belonged
//! to the discarded trace; a valid pair is stored with the trace id kept and the `tracestate`
//! unchanged; an invalid `tracestate` is dropped without touching a valid `traceparent`.

mod common;

use common::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Sends one command with `headers`; returns the stored commit's `traceparent` and `tracestate`.
async fn stored(p: &Platform, id: &str, headers: &[(&str, &str)]) -> (String, Option<String>) {
    let token = p.token("acme", &["commands:account"]);
    let (status, resp) = p
        .command(
            &format!("/v1/commands/account/{id}"),
            Some(&token),
            headers,
            r#"{"type":"Open","payload":{"owner":"alice"}}"#,
        )
        .await;
    assert_eq!(status, 200, "{}", body_json(resp).await);
    let subject = format!("tenant.acme.aggregate.account.{id}");
    let (_, _, h, _) = p
        .commits()
        .await
        .into_iter()
        .find(|(_, _, _, s)| *s == subject)
        .expect("the commit is stored");
    (
        h.get("traceparent").unwrap().as_str().to_string(),
        h.get("tracestate").map(|v| v.as_str().to_string()),
    )
}

#[tokio::test]
async fn an_invalid_traceparent_restarts_the_trace_without_the_old_tracestate() {
    let p = Platform::start().await;
    let (tp, ts) = stored(
        &p,
        "bad-parent",
        &[
            ("traceparent", "ff-bad"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert!(tp.starts_with("00-"), "{tp}");
    assert_eq!(ts, None, "a restarted trace carries no tracestate");
    let (_, ts) = stored(&p, "no-parent", &[("tracestate", "congo=t61rcWkgMzE")]).await;
    assert_eq!(
        ts, None,
        "a tracestate without a traceparent is not propagated"
    );
}

#[tokio::test]
async fn a_valid_pair_is_stored_with_the_trace_id_and_the_tracestate_unchanged() {
    let p = Platform::start().await;
    let (tp, ts) = stored(
        &p,
        "good",
        &[
            ("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-01")),
            ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert!(tp.starts_with(&format!("00-{TRACE}-")), "{tp}");
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "a new span id for the next hop: {tp}"
    );
    assert_eq!(
        ts.as_deref(),
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    );
}

#[tokio::test]
async fn an_invalid_tracestate_is_dropped_and_the_trace_kept() {
    let p = Platform::start().await;
    for (i, bad) in ["foo=1,foo=2", "FOO=1", "foo=,bar=3", "foo@=1,bar=2"]
        .iter()
        .enumerate()
    {
        let (tp, ts) = stored(
            &p,
            &format!("bad-state-{i}"),
            &[
                ("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-01")),
                ("tracestate", bad),
            ],
        )
        .await;
        assert!(tp.starts_with(&format!("00-{TRACE}-")), "{bad}: {tp}");
        assert_eq!(ts, None, "{bad}");
    }
}
