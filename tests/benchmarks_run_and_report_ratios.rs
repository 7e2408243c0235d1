//! The load generators stay runnable: `cloudlysis bench views`, `commands`, `workflows`,
//! `rehydration`, `overload` and `entities` run end to end on a tiny load (each against its own private
//! nats-server) and print every phase and the ratio against the raw baseline. Their numbers are
//! not asserted — speed is measured by running them, see docs/performance.md.

use std::process::Command;

fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .env_remove("CLOUDLYSIS_NATS_URL")
        .env_remove("CLOUDLYSIS_CONFIG")
        .env("RUST_LOG", "warn")
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn bench_views_reports_every_phase_and_the_ratio() {
    let out = bench(&["views", "--events", "300", "--rate", "20", "--seconds", "1"]);
    for line in [
        "raw_drain",
        "view_apply",
        "ratio view_apply / raw_drain throughput",
        "cpu per event view_apply",
        "nats per event view_apply",
        "view node start",
        "command -> document written",
        "command -> read-your-writes query",
        "raw publish -> delivered",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}

#[test]
fn bench_commands_reports_both_phases_and_the_ratio() {
    let out = bench(&["commands", "--concurrency", "2", "--commands", "50"]);
    for line in [
        "raw_publish",
        "gateway_command",
        "ratio gateway_command / raw_publish",
        "cpu per op gateway_command / raw_publish",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}

#[test]
fn bench_commands_with_keys_and_the_node_in_process_reports_both_phases() {
    let out = bench(&[
        "commands",
        "--concurrency",
        "2",
        "--commands",
        "50",
        "--idempotency-keys",
        "--local-node",
    ]);
    for line in [
        "each with an Idempotency-Key",
        "the aggregate node called in process",
        "raw_publish",
        "gateway_local",
        "ratio gateway_local / raw_publish",
        // A keyed command: the key's lookup, the commit, the record.
        "nats per op gateway_local: 3.00 messages",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}

#[test]
fn bench_commands_over_http_reports_every_phase_and_the_ratios() {
    let out = bench(&[
        "commands",
        "--concurrency",
        "2",
        "--commands",
        "50",
        "--http",
    ]);
    for line in [
        "raw_publish",
        "gateway_http",
        "health_http",
        "ratio gateway_http / raw_publish",
        "ratio gateway_http / health_http",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}

#[test]
fn bench_workflows_reports_both_phases_and_the_ratio() {
    let out = bench(&["workflows", "--concurrency", "2", "--transfers", "10"]);
    for line in [
        "gateway_command",
        "workflow_transfer",
        "ratio workflow_transfer x3 / gateway_command",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}

#[test]
fn bench_rehydration_reports_both_aggregates_and_the_ratio() {
    let out = bench(&[
        "rehydration",
        "--lengths",
        "10,30",
        "--every",
        "10",
        "--runs",
        "1",
    ]);
    for line in ["plain ms", "snapshot ms", "snapshot / plain"] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
    assert_eq!(
        out.lines()
            .filter(|l| l.trim_start().starts_with("10 ") || l.trim_start().starts_with("30 "))
            .count(),
        2,
        "one row per length:\n{out}"
    );
}

/// A tiny overload run: one-second phases, a budget of 4 (its `gateway.max_in_flight`).
const TINY_OVERLOAD: &[&str] = &[
    "--seconds",
    "1",
    "--max-in-flight",
    "4",
    "--accounts",
    "8",
    "--factor",
    "2",
    "--connections",
    "64",
];

#[test]
fn bench_overload_reports_every_phase_goodput_and_refusals() {
    let out = bench(&[&["overload"], TINY_OVERLOAD].concat());
    for line in [
        "idle",
        "capacity",
        "overload",
        "goodput overload / capacity",
        "refusals without Retry-After or problem+json: 0",
        "resident memory during overload",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}

#[test]
fn bench_entities_reports_both_rates_and_memory_per_entity() {
    let out = bench(&[
        "entities",
        "--entities",
        "200",
        "--existing",
        "4",
        "--deposits",
        "100",
        "--workers",
        "4",
    ]);
    for line in [
        "deposits to live entities",
        "opens of new entities",
        "ratio opens / deposits",
        "KiB per live entity",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}

#[test]
fn bench_views_refuses_bad_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .args(["bench", "views", "--rate", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
}

/// `bench overload --target` drives a Gateway it did not start (here `cloudlysis dev`'s, with
/// its printed dev token): the load generator alone, for running it on CPUs of its own.
#[tokio::test]
async fn bench_overload_drives_a_running_gateway_given_its_url_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let dev = cloudlysis_test_support::Dev::start(
        env!("CARGO_BIN_EXE_cloudlysis"),
        &dir.path().join("data"),
        &[
            ("CLOUDLYSIS_GATEWAY_MAX_IN_FLIGHT", "4"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let (http, token) = (dev.http.clone(), dev.token.clone().expect("token printed"));
    let out = tokio::task::spawn_blocking(move || {
        bench(
            &[
                &["overload", "--target", &http, "--token", &token],
                TINY_OVERLOAD,
            ]
            .concat(),
        )
    })
    .await
    .unwrap();
    for line in [
        "http://127.0.0.1:",
        "capacity",
        "goodput overload / capacity",
        "refusals without Retry-After or problem+json: 0",
        "CPU of this process (the load generator) during overload",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}
