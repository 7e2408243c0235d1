use super::*;

const S: Setting = Setting {
    key: "projection.max_deliver",
    env: "PROJECTION_MAX_DELIVER",
    flag: "--max-deliver",
    doc: "test",
};

#[test]
fn flag_beats_env_beats_file() {
    let src = ConfigSource::from_env([("PROJECTION_MAX_DELIVER", "7")])
        .with_toml_str("[projection]\nmax_deliver = 9", "c.toml")
        .unwrap();
    assert_eq!(src.get::<u64>(&S, Some("3")).unwrap(), Some(3));
    assert_eq!(src.get::<u64>(&S, None).unwrap(), Some(7));
    let file_only = ConfigSource::default()
        .with_toml_str("[projection]\nmax_deliver = 9", "c.toml")
        .unwrap();
    assert_eq!(file_only.get::<u64>(&S, None).unwrap(), Some(9));
    assert_eq!(ConfigSource::default().get::<u64>(&S, None).unwrap(), None);
    assert_eq!(
        ConfigSource::default().get_or::<u64>(&S, None, 5).unwrap(),
        5
    );
}

#[test]
fn parse_error_names_the_setting_and_the_env_var() {
    let src = ConfigSource::from_env([("PROJECTION_MAX_DELIVER", "lots")]);
    let err = src.get::<u64>(&S, None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("projection.max_deliver"), "{msg}");
    assert!(msg.contains("PROJECTION_MAX_DELIVER"), "{msg}");
    assert!(msg.contains("\"lots\""), "{msg}");
    assert!(
        msg.contains("expected a whole number"),
        "says what fits: {msg}"
    );
}

#[test]
fn parse_error_from_a_flag_names_the_flag() {
    let err = ConfigSource::default()
        .get::<u64>(&S, Some("-1"))
        .unwrap_err();
    assert!(err.to_string().contains("flag --max-deliver"), "{err}");
}

#[test]
fn parse_error_from_the_file_names_the_file_and_key() {
    let src = ConfigSource::default()
        .with_toml_str("[projection]\nmax_deliver = \"x\"", "/etc/c.toml")
        .unwrap();
    let msg = src.get::<u64>(&S, None).unwrap_err().to_string();
    assert!(
        msg.contains("key `projection.max_deliver` in /etc/c.toml"),
        "{msg}"
    );
}

#[test]
fn out_of_range_names_the_setting_and_the_bounds() {
    let src = ConfigSource::from_env([("PROJECTION_MAX_DELIVER", "0")]);
    let err = src.get_in_range(&S, None, 5, 1, 100).unwrap_err();
    assert_eq!(
        err,
        ConfigError::Invalid {
            setting: "projection.max_deliver",
            origin: Origin::Env("PROJECTION_MAX_DELIVER"),
            value: "0".into(),
            reason: "must be between 1 and 100".into(),
        }
    );
}

#[test]
fn malformed_file_names_the_file() {
    let err = ConfigSource::default()
        .with_toml_str("[nats\nurl=", "bad.toml")
        .unwrap_err();
    assert!(matches!(err, ConfigError::File { ref path, .. } if path == Path::new("bad.toml")));
}

#[test]
fn missing_file_names_the_file() {
    let err = ConfigSource::default()
        .with_file(Path::new("/nonexistent/cloudlysis.toml"))
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/cloudlysis.toml"),
        "{err}"
    );
}

#[test]
fn unknown_file_keys_are_named() {
    let src = ConfigSource::default()
        .with_toml_str("[nats]\nurl = \"x\"\nulr = \"typo\"", "c.toml")
        .unwrap();
    let err = src.reject_unknown_keys(&[&settings::NATS_URL]).unwrap_err();
    assert_eq!(
        err,
        ConfigError::UnknownKey {
            path: "c.toml".into(),
            key: "nats.ulr".into()
        }
    );
    assert!(
        src.reject_unknown_keys(&[
            &settings::NATS_URL,
            &Setting {
                key: "nats.ulr",
                ..S
            }
        ])
        .is_ok()
    );
}

#[test]
fn refused_setting_names_itself_and_its_origin() {
    let g = Setting {
        key: "projection.deliver_group",
        env: "PROJECTION_DELIVER_GROUP",
        flag: "",
        doc: "",
    };
    let src = ConfigSource::from_env([("PROJECTION_DELIVER_GROUP", "workers")]);
    let msg = src
        .refuse(&g, "use pull consumers")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("projection.deliver_group"), "{msg}");
    assert!(msg.contains("PROJECTION_DELIVER_GROUP"), "{msg}");
    assert!(ConfigSource::default().refuse(&g, "x").is_ok());
}

#[test]
fn millisecond_settings_become_durations() {
    let src = ConfigSource::from_env([("PROJECTION_MAX_DELIVER", "1500")]);
    let d = src
        .get_millis(
            &S,
            None,
            Duration::from_secs(1),
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(d, Duration::from_millis(1500));
}

const ADDR: Setting = Setting {
    key: "gateway.runner_addr",
    env: "CLOUDLYSIS_RUNNER_ADDR",
    flag: "--runner-addr",
    doc: "test",
};

#[test]
fn node_addresses_are_uris_with_a_host_and_a_port_or_refused_naming_the_setting() {
    let src = ConfigSource::default();
    let addrs = |v: &str| src.node_addrs(&ADDR, Some(v), "http://127.0.0.1:50053");
    assert_eq!(
        addrs("127.0.0.1:1, https://n:2,http://[::1]:3,https://node-a.example,http://[::1]")
            .unwrap(),
        [
            "http://127.0.0.1:1",
            "https://n:2",
            "http://[::1]:3",
            "https://node-a.example",
            "http://[::1]"
        ]
    );
    assert_eq!(
        src.node_addrs(&ADDR, None, "http://127.0.0.1:50053")
            .unwrap(),
        ["http://127.0.0.1:50053"],
        "the default"
    );
    for (bad, why) in [
        ("", "empty"),
        ("http://a:1,,http://b:2", "empty"),
        ("http://127.0.0.1:99999", "port 99999"),
        ("http://127.0.0.1:0", "port 0"),
        ("http://h:+5", "port +5"),
        ("http://u:p@h:1", "no user name"),
        ("ftp://127.0.0.1:1", "scheme"),
        ("http://:1", "host"),
        ("http://a:1/path", "path"),
        ("not a uri", "not a URI"),
    ] {
        let msg = addrs(bad).unwrap_err().to_string();
        assert!(msg.contains("gateway.runner_addr"), "{bad:?}: {msg}");
        assert!(msg.contains("--runner-addr"), "{bad:?}: {msg}");
        assert!(msg.contains(why), "{bad:?}: {msg}");
    }
    let one = src.node_addr(&ADDR, Some("a:1,b:2"), "http://127.0.0.1:1");
    assert!(one.unwrap_err().to_string().contains("not a list"));
}
