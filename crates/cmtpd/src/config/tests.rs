//! Tests of the configuration: defaults, validation, overrides and what a reload keeps.

use super::*;

#[test]
fn example_config_is_the_default() {
    let parsed = Config::from_toml(EXAMPLE_CONFIG, Path::new("example")).unwrap();
    // The data dir default depends on the environment; the example shows the plain one.
    let def = Config {
        data_dir: PathBuf::from("./cmtp-data"),
        ..Default::default()
    };
    assert_eq!(parsed, def);
}

#[test]
fn reload_keeps_restart_only_settings() {
    let running = Config::default();
    let mut new = Config::from_toml(
        "domains = [\"other.example\"]\n[limits]\nmax_message_size = 10\nmax_connections = 3\n",
        Path::new("x"),
    )
    .unwrap();
    new.validate().unwrap();
    let (effective, kept) = new.for_reload(&running);
    assert_eq!(effective.limits.max_message_size, 10);
    assert_eq!(effective.domains, running.domains);
    assert_eq!(
        effective.limits.max_connections,
        running.limits.max_connections
    );
    assert_eq!(kept, ["domains", "limits.max_connections"]);
}

#[test]
fn postmaster_is_canonical() {
    let mut c = Config::from_toml("postmaster = \"Alice\"\n", Path::new("x")).unwrap();
    c.validate().unwrap();
    assert_eq!(c.postmaster.as_deref(), Some("alice"));
    let mut c = Config::from_toml("postmaster = \"a b\"\n", Path::new("x")).unwrap();
    assert!(c.validate().is_err());
}

#[test]
fn unknown_keys_are_refused() {
    let err = Config::from_toml("nonsense = 1\n", Path::new("x")).unwrap_err();
    assert!(err.to_string().contains("nonsense"), "{err}");
    let err = Config::from_toml("[limits]\nmax_mesage_size = 1\n", Path::new("x")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
}

#[test]
fn cli_wins_over_file() {
    let mut c = Config::from_toml("domains = [\"a.example\"]\n", Path::new("x")).unwrap();
    c.apply(&Overrides {
        domains: vec!["B.example".into()],
        ..Default::default()
    });
    c.validate().unwrap();
    assert_eq!(c.domains, vec!["B.example".to_owned()]);
    assert_eq!(c.limits, Limits::default());
}

#[test]
fn bad_domains_are_refused() {
    for d in ["", "..", "a/b", "a\\b"] {
        let mut c = Config {
            domains: vec![d.into()],
            ..Default::default()
        };
        assert!(c.validate().is_err(), "{d:?}");
    }
}

#[test]
fn federation_routes_and_flags() {
    assert_eq!(
        parse_host_port("127.0.0.1:19002"),
        Some(("127.0.0.1".into(), 19002))
    );
    assert_eq!(parse_host_port("[::1]:9001"), Some(("::1".into(), 9001)));
    assert_eq!(
        parse_host_port("mx.b.test:25"),
        Some(("mx.b.test".into(), 25))
    );
    assert_eq!(parse_host_port("b.test"), None);
    assert_eq!(parse_host_port(":25"), None);
    assert_eq!(parse_host_port("b.test:0"), None);
    let mut c = Config::from_toml(
        "[federation]\nroutes = { \"B.Test\" = \"127.0.0.1:19002\" }\nretry_secs = [1]\n",
        Path::new("x"),
    )
    .unwrap();
    c.apply(&Overrides {
        routes: vec![("c.test".into(), "127.0.0.1:19003".into())],
        dns: Some("127.0.0.1:5353".parse().unwrap()),
        ..Default::default()
    });
    c.validate().unwrap();
    assert_eq!(c.federation.routes["b.test"], "127.0.0.1:19002");
    assert_eq!(c.federation.routes["c.test"], "127.0.0.1:19003");
    assert_eq!(c.federation.dns, Some("127.0.0.1:5353".parse().unwrap()));
    for bad in [
        "[federation]\nroutes = { \"b.test\" = \"nowhere\" }\n",
        "[federation]\nretry_secs = []\n",
        "[federation]\nretry_secs = [0]\n",
        "[federation]\npipeline = 0\n",
    ] {
        let mut c = Config::from_toml(bad, Path::new("x")).unwrap();
        assert!(c.validate().is_err(), "{bad}");
    }
    // The example file is the defaults.
    let ex = Config::from_toml(EXAMPLE_CONFIG, Path::new("x")).unwrap();
    assert_eq!(ex.federation, Federation::default());
}
