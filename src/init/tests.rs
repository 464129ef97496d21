use super::*;

fn conf(text: &str) -> LitConf {
    LitConf::parse(text, Path::new("lit.conf")).unwrap()
}

fn found(text: &str) -> Found {
    Found {
        lit_dir: "/home/lit/.lit".into(),
        network: None,
        conf: conf(text),
        home: Some("/home/lit".into()),
    }
}

fn all_exist(_: &Path) -> bool {
    true
}

fn setting<'a>(plan: &'a Plan, key: &str) -> Option<&'a toml::Value> {
    plan.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn flags(plan: &Plan) -> Vec<&str> {
    plan.flags.iter().map(|f| f.flag.as_str()).collect()
}

#[test]
fn lit_conf_comments_sections_quotes_and_repeats() {
    let c = conf(
        "# Application Options\n\
         ; another comment\n\
         [Application Options]\n\
         httpslisten=0.0.0.0:8443\n\
         HTTPSListen = 0.0.0.0:9443\n\
         uipassword=\"a # not a comment\"\n\
         autopilot.insecure=true\n\
         [Autopilot]\n\
         address = 127.0.0.1:12010\n\
         [application options]\n\
         network=testnet\n",
    );
    assert_eq!(
        c.get("httpslisten"),
        Some("0.0.0.0:9443"),
        "last value wins"
    );
    assert_eq!(c.get("uipassword"), Some("a # not a comment"));
    assert_eq!(c.get("autopilot.address"), Some("127.0.0.1:12010"));
    assert_eq!(c.get("network"), Some("testnet"));
    assert!(c.flag("autopilot.insecure"));
    assert!(!c.flag("autopilot.disable"));
    assert_eq!(c.get("address"), None);
}

#[test]
fn lit_conf_rejects_a_line_litd_would_reject() {
    let err =
        LitConf::parse("network=testnet\nhttpslisten\n", Path::new("/x/lit.conf")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/x/lit.conf:2: not `key=value`, a [section] or a comment: \"httpslisten\""
    );
}

#[test]
fn defaults_give_mainnet_paths_and_two_flags() {
    let plan = plan(&found(""), all_exist).unwrap();
    assert_eq!(plan.network, "mainnet");
    assert_eq!(
        setting(&plan, "upstream.addr"),
        Some(&"127.0.0.1:8443".into())
    );
    assert_eq!(
        setting(&plan, "upstream.tls_cert"),
        Some(&"/home/lit/.lit/tls.cert".into())
    );
    assert_eq!(
        setting(&plan, "upstream.macaroon"),
        Some(&"/home/lit/.lit/mainnet/lit.macaroon".into())
    );
    assert_eq!(
        setting(&plan, "autopilot.server"),
        Some(&"autopilot.lightning.finance:12010".into())
    );
    // litd's default httpslisten is already loopback: no --httpslisten.
    assert_eq!(
        flags(&plan),
        [
            "--autopilot.address=127.0.0.1:12010",
            "--autopilot.insecure"
        ]
    );
}

#[test]
fn public_listener_moves_to_loopback_and_paths_follow_lit_conf() {
    let f = found(
        "httpslisten=0.0.0.0:8443\nnetwork=testnet\ntlscertpath=~/certs/lit.cert\n\
         macaroonpath=/srv/lit.macaroon\n",
    );
    let plan = plan(&f, all_exist).unwrap();
    assert_eq!(plan.network, "testnet");
    assert_eq!(
        setting(&plan, "upstream.addr"),
        Some(&"127.0.0.1:8443".into())
    );
    assert_eq!(plan.tls_cert, Path::new("/home/lit/certs/lit.cert"));
    assert_eq!(
        plan.macaroon.as_deref(),
        Some(Path::new("/srv/lit.macaroon"))
    );
    assert_eq!(
        setting(&plan, "autopilot.server"),
        Some(&"test.autopilot.lightning.finance:12010".into())
    );
    assert_eq!(flags(&plan)[0], "--httpslisten=127.0.0.1:8443");
    assert!(plan.flags[0].reason.contains("0.0.0.0:8443"));
}

#[test]
fn network_flag_wins_and_picks_the_macaroon_dir() {
    let mut f = found("network=testnet\n");
    f.network = Some("mainnet".into());
    let plan = plan(&f, all_exist).unwrap();
    assert_eq!(
        plan.macaroon.as_deref(),
        Some(Path::new("/home/lit/.lit/mainnet/lit.macaroon"))
    );
    f.network = Some("bitcoin".into());
    assert!(super::plan(&f, all_exist)
        .unwrap_err()
        .to_string()
        .contains("not one of litd's"));
}

#[test]
fn already_wired_litd_needs_no_flags() {
    let plan = plan(
        &found("autopilot.address=127.0.0.1:12010\nautopilot.insecure=true\n"),
        all_exist,
    )
    .unwrap();
    assert!(plan.flags.is_empty(), "{:?}", plan.flags);
    assert_eq!(
        setting(&plan, "autopilot.server"),
        Some(&"autopilot.lightning.finance:12010".into())
    );
}

#[test]
fn a_custom_autopilot_server_is_kept_behind_the_relay() {
    let plan = plan(
        &found("network=regtest\nautopilot.address=ap.internal:12010\nautopilot.insecure=1\n"),
        all_exist,
    )
    .unwrap();
    assert_eq!(
        setting(&plan, "autopilot.server"),
        Some(&"ap.internal:12010".into())
    );
    assert_eq!(setting(&plan, "autopilot.plaintext"), Some(&true.into()));
    // autopilot.insecure is set already, and the relay needs it too.
    assert_eq!(flags(&plan), ["--autopilot.address=127.0.0.1:12010"]);
    // regtest without a server of its own: nothing to put in [autopilot] server.
    assert!(super::plan(&found("network=regtest\n"), all_exist)
        .unwrap_err()
        .to_string()
        .contains("no public Autopilot server"));
}

#[test]
fn missing_cert_is_an_error_missing_macaroon_a_note() {
    let only_cert = |p: &Path| p.ends_with("tls.cert");
    let plan = plan(&found(""), only_cert).unwrap();
    assert_eq!(plan.macaroon, None);
    assert_eq!(setting(&plan, "upstream.macaroon"), None);
    assert!(plan.notes[0].contains("reconciliation stays off"));
    let err = super::plan(&found(""), |_| false).unwrap_err();
    assert!(err.to_string().contains("start litd once"), "{err}");
    let err = super::plan(&found("letsencrypt=true\n"), all_exist).unwrap_err();
    assert!(err.to_string().contains("Let's Encrypt"), "{err}");
}

#[test]
fn render_sets_planned_keys_and_comments_out_the_rest() {
    let plan = plan(&found("httpslisten=0.0.0.0:8443\n"), all_exist).unwrap();
    let text = render(&plan, "/home/lit/.lit");
    let cfg = Config::parse(&text).unwrap();
    assert_eq!(cfg.upstream.addr, "127.0.0.1:8443");
    assert_eq!(cfg.upstream.tls_cert, Path::new("/home/lit/.lit/tls.cert"));
    assert_eq!(
        cfg.upstream.macaroon,
        Path::new("/home/lit/.lit/mainnet/lit.macaroon")
    );
    assert_eq!(
        cfg.autopilot.relay.addr,
        Some("127.0.0.1:12010".parse().unwrap())
    );
    // The set lines keep the template's explanation; the rest are commented out.
    assert!(text.contains("\ntls_cert = \"/home/lit/.lit/tls.cert\"   # litd's tls.cert, pinned"));
    assert!(text.contains("\n# drain_timeout = \"30s\""));
    assert!(text.contains("\n[listen]"));
    assert!(text.contains("\n# addr = \"0.0.0.0:8445\""));
    // Every key of the template is either set or commented, none dropped.
    let keys = |t: &str| {
        t.lines()
            .filter_map(|l| key_line(l.strip_prefix("# ").unwrap_or(l)).map(|(k, _)| k))
            .count()
    };
    assert_eq!(keys(&text), keys(TEMPLATE));
    // A path with a quote or backslash is written as a valid TOML string.
    let mut odd = plan.clone();
    odd.settings[1].1 = path_value(Path::new("/tmp/a \"b\"\\c"));
    let cfg = Config::parse(&render(&odd, "x")).unwrap();
    assert_eq!(cfg.upstream.tls_cert, Path::new("/tmp/a \"b\"\\c"));
}

#[test]
fn report_lists_flags_with_reasons() {
    let plan = plan(&found("httpslisten=0.0.0.0:8443\n"), all_exist).unwrap();
    let out = report(&plan, Path::new("litgate.toml"));
    assert!(out.starts_with("wrote litgate.toml (check-config: ok) for litd on mainnet:\n"));
    assert!(out.contains("  --httpslisten=127.0.0.1:8443"));
    assert!(out.contains("# litd listens on 0.0.0.0:8443 today"));
    assert!(out.contains("  --autopilot.insecure "));
    assert!(out.contains("litgate run --config litgate.toml"));
}
