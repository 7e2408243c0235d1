//! Bad configuration is a clear CLI error naming the setting; role subcommands that are not
//! implemented yet refuse to start.

use std::process::Command;

fn cloudlysis() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cloudlysis"));
    c.env_remove("CLOUDLYSIS_NATS_URL")
        .env_remove("CLOUDLYSIS_CONFIG")
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        );
    c
}

#[test]
fn every_role_refuses_to_start_without_a_node_secret() {
    for role in ["aggregate", "projection", "runner", "gateway"] {
        let mut c = cloudlysis();
        c.env_remove("CLOUDLYSIS_NODE_SECRET")
            .env(
                "CLOUDLYSIS_JWT_SECRET",
                "a-gateway-token-secret-of-32-bytes-or-more",
            )
            .args([role, "--http-addr", "127.0.0.1:0"]);
        if role != "gateway" {
            c.args([
                "--nats-url",
                "nats://127.0.0.1:1",
                "--grpc-addr",
                "127.0.0.1:0",
            ]);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success(), "{role}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("node.secret"), "{role}: {stderr}");
        assert!(
            stderr.contains("CLOUDLYSIS_NODE_SECRET"),
            "{role}: {stderr}"
        );
        // It says the setting is not set — not that some value from the variable is invalid.
        assert!(
            stderr.contains("setting `node.secret` is not set"),
            "{role}: {stderr}"
        );
        assert!(!stderr.contains("invalid value"), "{role}: {stderr}");
    }
    // A short one is refused as well.
    let out = cloudlysis()
        .env("CLOUDLYSIS_NODE_SECRET", "short")
        .args(["aggregate", "--nats-url", "nats://127.0.0.1:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node.secret") && stderr.contains("32"),
        "{stderr}"
    );
}

#[test]
fn a_bad_env_value_names_the_setting_and_variable() {
    let out = cloudlysis()
        .args(["streams", "check", "--nats-url", "nats://127.0.0.1:1"])
        .env("CLOUDLYSIS_NATS_CONNECT_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nats.connect_timeout_ms"), "{stderr}");
    assert!(
        stderr.contains("CLOUDLYSIS_NATS_CONNECT_TIMEOUT_MS"),
        "{stderr}"
    );
}

#[test]
fn a_bad_nats_url_flag_is_named() {
    // An empty one too (found by using the platform: it was tried and failed as a DNS error).
    for url in ["http://[::1", "", "nats://a:4222,"] {
        let out = cloudlysis()
            .args(["streams", "check", "--nats-url", url])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("nats.url") && stderr.contains("--nats-url"),
            "{url:?}: {stderr}"
        );
    }
}

#[test]
fn an_unknown_config_file_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloudlysis.toml");
    std::fs::write(&file, "[nats]\nurll = \"nats://x:4222\"\n").unwrap();
    let out = cloudlysis()
        .args(["--config", file.to_str().unwrap(), "streams", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown setting `nats.urll`"), "{stderr}");
}

#[test]
fn a_configured_deliver_group_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloudlysis.toml");
    std::fs::write(&file, "[projection]\ndeliver_group = \"workers\"\n").unwrap();
    let out = cloudlysis()
        .args(["--config", file.to_str().unwrap(), "projection"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("projection.deliver_group"), "{stderr}");
    assert!(stderr.contains("pull consumers"), "{stderr}");
}

#[test]
fn bad_runner_settings_are_refused_before_anything_starts() {
    for (env, value, setting) in [
        ("CLOUDLYSIS_RUNNER_LANES", "100", "runner.lanes"),
        ("RUNNER_MAX_IN_FLIGHT", "0", "runner.max_in_flight"),
        (
            "CLOUDLYSIS_RUNNER_OUTBOX_SWEEP_MS",
            "soon",
            "runner.outbox_sweep_ms",
        ),
    ] {
        let out = cloudlysis()
            .args(["runner", "--nats-url", "nats://127.0.0.1:1"])
            .env(env, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{env}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(setting), "{env}={value}: {stderr}");
    }
}

#[test]
fn bad_http_limits_are_refused_before_anything_starts() {
    for (env, value, setting) in [
        (
            "CLOUDLYSIS_HTTP_HEADER_READ_TIMEOUT_MS",
            "0",
            "http.header_read_timeout_ms",
        ),
        (
            "CLOUDLYSIS_HTTP_MAX_CONNECTIONS",
            "none",
            "http.max_connections",
        ),
    ] {
        for role in ["gateway", "aggregate", "dev"] {
            let out = cloudlysis()
                .args([role, "--http-addr", "127.0.0.1:0"])
                .env(env, value)
                .env("CLOUDLYSIS_NATS_URL", "nats://127.0.0.1:1")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{role} {env}={value}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(setting) && stderr.contains(env),
                "{role} {env}={value}: {stderr}"
            );
        }
    }
}

/// Found by using the platform: `dev` started with `gateway.placement = bogus`, which `gateway`
/// and `all` refuse.
#[test]
fn a_bad_placement_is_refused_by_every_role_that_runs_a_gateway() {
    for role in ["gateway", "all", "dev"] {
        let out = cloudlysis()
            .args([role, "--http-addr", "127.0.0.1:0"])
            .env("CLOUDLYSIS_GATEWAY_PLACEMENT", "bogus")
            .env(
                "CLOUDLYSIS_JWT_SECRET",
                "cli-test-secret-cli-test-secret-cli",
            )
            .env("CLOUDLYSIS_NATS_URL", "nats://127.0.0.1:1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{role}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("gateway.placement") && stderr.contains("CLOUDLYSIS_GATEWAY_PLACEMENT"),
            "{role}: {stderr}"
        );
    }
}

/// Found by using the platform: a Gateway started with `--aggregate-addr http://127.0.0.1:99999`,
/// `--projection-addr ftp://…` or `--runner-addr ''` (which fell back to the default), and
/// failed only later with "tcp connect error"; a runner with a bad aggregate address too.
#[test]
fn a_node_address_that_cannot_be_one_is_refused_at_start_naming_the_setting() {
    for (role, flag, value, setting, why) in [
        (
            "gateway",
            "--aggregate-addr",
            "http://127.0.0.1:99999",
            "gateway.aggregate_addr",
            "port 99999",
        ),
        (
            "gateway",
            "--projection-addr",
            "ftp://127.0.0.1:1",
            "gateway.projection_addr",
            "scheme",
        ),
        (
            "gateway",
            "--runner-addr",
            "",
            "gateway.runner_addr",
            "empty",
        ),
        (
            "gateway",
            "--runner-addr",
            "http://127.0.0.1:1,,http://127.0.0.1:2",
            "gateway.runner_addr",
            "empty",
        ),
        (
            "runner",
            "--aggregate-addr",
            "http://127.0.0.1:0",
            "runner.aggregate_addr",
            "port 0",
        ),
    ] {
        let out = cloudlysis()
            .args([role, "--http-addr", "127.0.0.1:0", flag, value])
            .args(if role == "runner" {
                &[
                    "--grpc-addr",
                    "127.0.0.1:0",
                    "--nats-url",
                    "nats://127.0.0.1:1",
                ][..]
            } else {
                &[]
            })
            .env(
                "CLOUDLYSIS_JWT_SECRET",
                "cli-test-secret-cli-test-secret-cli",
            )
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = exits_within(out, 20);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{role} {flag} {value:?}: {stderr}"
        );
        assert!(
            stderr.contains(setting) && stderr.contains(flag) && stderr.contains(why),
            "{role} {flag} {value:?}: {stderr}"
        );
    }
}

/// Waits for `child` to exit within `secs` (one that keeps running — it started — is killed and
/// fails the test) and returns its output.
fn exits_within(mut child: std::process::Child, secs: u64) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "started instead of refusing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Found by using the platform: `all` with static placement took addresses to advertise and
/// ignored them.
#[test]
fn all_with_static_placement_refuses_addresses_to_advertise() {
    for env in [
        "CLOUDLYSIS_NODE_ADVERTISE_ADDR",
        "CLOUDLYSIS_AGGREGATE_ADVERTISE_ADDR",
    ] {
        let out = cloudlysis()
            .args(["all", "--http-addr", "127.0.0.1:0"])
            .env(env, "127.0.0.1:5")
            .env(
                "CLOUDLYSIS_JWT_SECRET",
                "cli-test-secret-cli-test-secret-cli",
            )
            .env("CLOUDLYSIS_NATS_URL", "nats://127.0.0.1:1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = exits_within(out, 20);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{env}: {stderr}");
        assert!(
            stderr.contains(env) && stderr.contains("gateway.placement = registry"),
            "{env}: {stderr}"
        );
    }
}

/// Found by using the platform: huge values panicked (`overflow when adding duration to
/// instant`, `capacity overflow`, `period must be non-zero`) and `--seconds 0` measured nothing.
#[test]
fn bench_flags_out_of_range_are_refused_without_a_panic() {
    for (args, says) in [
        (
            &["bench", "overload", "--seconds", "18446744073709551615"][..],
            "--seconds",
        ),
        (
            &[
                "bench",
                "views",
                "--seconds",
                "18446744073709551615",
                "--events",
                "10",
            ][..],
            "--seconds",
        ),
        (
            &[
                "bench",
                "fairness",
                "--rate",
                "18446744073709551615",
                "--seconds",
                "1",
            ][..],
            "--rate",
        ),
        (&["bench", "fairness", "--seconds", "0"][..], "--seconds"),
        (
            &[
                "bench",
                "entities",
                "--entities",
                "10",
                "--existing",
                "18446744073709551610",
            ][..],
            "--existing",
        ),
    ] {
        let out = cloudlysis()
            .args(args)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = exits_within(out, 20);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn help_lists_every_subcommand() {
    let out = cloudlysis().arg("--help").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "gateway",
        "aggregate",
        "projection",
        "runner",
        "dev",
        "streams",
    ] {
        assert!(stdout.contains(cmd), "{cmd} missing from:\n{stdout}");
    }
}

#[test]
fn an_unreachable_nats_fails_within_the_connect_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = cloudlysis()
        .args([
            "streams",
            "check",
            "--nats-url",
            &format!("nats://127.0.0.1:{port}"),
        ])
        .env("CLOUDLYSIS_NATS_CONNECT_TIMEOUT_MS", "500")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not connect to NATS"), "{stderr}");
}

#[test]
fn token_prints_a_token_the_gateway_accepts() {
    let secret = "cli-test-secret-cli-test-secret-cli";
    let out = cloudlysis()
        .args([
            "token",
            "--tenant",
            "acme",
            "--rights",
            "commands:account,queries:*",
            "--ttl",
            "2h",
        ])
        .env("CLOUDLYSIS_JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = cloudlysis_gateway::Authenticator::new(secret.as_bytes())
        .unwrap()
        .verify(Some(&format!("Bearer {}", token.trim())))
        .unwrap();
    assert_eq!(claims.tenant, "acme");
    assert_eq!(claims.rights, ["commands:account", "queries:*"]);
}

#[test]
fn token_without_a_secret_names_the_setting() {
    let out = cloudlysis()
        .args(["token", "--tenant", "acme", "--rights", "commands:*"])
        .env_remove("CLOUDLYSIS_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CLOUDLYSIS_JWT_SECRET"), "{stderr}");
}

#[test]
fn token_refuses_bad_rights_and_ttl() {
    // Found by using the platform: `:`, `commands:`, `:account` and `commands :account` were
    // accepted.
    for args in [
        ["--rights", "everything"],
        ["--rights", ":"],
        ["--rights", "commands:"],
        ["--rights", ":account"],
        ["--rights", "commands :account"],
        ["--rights", "commands:account:operate:more"],
        ["--ttl", "1w"],
    ] {
        let out = cloudlysis()
            .args(["token", "--tenant", "acme"])
            .args(args)
            .env(
                "CLOUDLYSIS_JWT_SECRET",
                "cli-test-secret-cli-test-secret-cli",
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid {}", args[0])),
            "{args:?}: {stderr}"
        );
    }
    // What the Gateway grants is still accepted.
    let out = cloudlysis()
        .args(["token", "--tenant", "acme", "--rights"])
        .arg("commands:*, workflows:transfer:operate,workflows:*:operate,admin:read")
        .env(
            "CLOUDLYSIS_JWT_SECRET",
            "cli-test-secret-cli-test-secret-cli",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Found by using the platform: `token --subject ''`, `credential --subject ''` and
/// `poison --actor ''` were accepted, and the audit trail then named the actor `unknown`.
#[test]
fn an_empty_subject_or_actor_is_refused() {
    for (args, says) in [
        (
            &["token", "--tenant", "acme", "--subject", ""][..],
            "names no subject",
        ),
        (
            &["credential", "--subject", " "][..],
            "the subject is empty",
        ),
        (
            &[
                "poison",
                "--actor",
                "",
                "--node-addr",
                "http://127.0.0.1:1",
                "list",
            ][..],
            "--actor is empty",
        ),
    ] {
        let out = cloudlysis()
            .args(args)
            .env(
                "CLOUDLYSIS_JWT_SECRET",
                "cli-test-secret-cli-test-secret-cli",
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn token_refuses_a_ttl_past_ten_years_instead_of_saturating_its_expiry() {
    let out = cloudlysis()
        .args(["token", "--tenant", "acme", "--ttl", "99999999999999999d"])
        .env(
            "CLOUDLYSIS_JWT_SECRET",
            "cli-test-secret-cli-test-secret-cli",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--ttl") && stderr.contains("at most 3650d"),
        "{stderr}"
    );
}

#[test]
fn projection_lanes_out_of_range_is_named() {
    let out = cloudlysis()
        .args([
            "projection",
            "--lanes",
            "0",
            "--nats-url",
            "nats://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("projection.lanes") && stderr.contains("between 1 and 64"),
        "{stderr}"
    );
}

#[test]
fn a_gateway_without_a_token_secret_says_it_is_not_set() {
    let out = cloudlysis()
        .env_remove("CLOUDLYSIS_JWT_SECRET")
        .args(["gateway", "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("setting `gateway.jwt_secret` is not set")
            && stderr.contains("CLOUDLYSIS_JWT_SECRET"),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid value"), "{stderr}");
}
