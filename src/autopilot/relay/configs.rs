//! The relay's check of the feature configs in a `RegisterSession`: what litd is about to send
//! the Autopilot server (already obfuscated by litd when the mapper is on), held with the public
//! face's inspector (`feature_config`) to the flags the registration carries, and recorded for
//! the ledger as paths, never values. Features in `[privacy] skip_config_inspection` are
//! recorded and never refused; with `[privacy] relay_config_check = "warn"` a config that would
//! be refused is forwarded, logged, counted and recorded as sent. Never logs an identifier (the
//! inspector's refusals name paths and kinds only).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use arc_swap::ArcSwap;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::{
    autopilot::{
        feature_config::{self, ConfigRefusal, Fate, FeatureConfigRefusal, Inspection, Privacy},
        privacy::config::{PrivacyConfig, RelayConfigCheck},
    },
    store::{ConfigSent, SentPath, NOT_REPLACED},
    telemetry::metrics::registered,
};

/// At most this many paths are listed per feature and list; the rest are counted. A config may
/// hold thousands of identifiers, and every ledger write is flushed.
pub(super) const MAX_LISTED: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    outcome: &'static str,
    reason: &'static str,
}

/// The check, with the operator's `[privacy]` keys and its counter.
#[derive(Debug, Clone)]
pub(super) struct ConfigCheck {
    /// `skip_config_inspection` and `relay_config_check`, swapped by a reload.
    keys: Arc<ArcSwap<CheckKeys>>,
    outcomes: Family<Labels, Counter>,
}

/// The `[privacy]` keys the check reads.
#[derive(Debug)]
pub(super) struct CheckKeys {
    skip: Vec<String>,
    mode: RelayConfigCheck,
}

impl CheckKeys {
    pub(super) fn of(privacy: &PrivacyConfig) -> Self {
        CheckKeys {
            skip: privacy.skip_config_inspection.clone(),
            mode: privacy.relay_config_check,
        }
    }
}

impl ConfigCheck {
    /// The check of `[privacy]`, its counter registered in the relay's registry.
    pub(super) fn new(privacy: &PrivacyConfig, registry: &mut Registry) -> Self {
        ConfigCheck {
            keys: Arc::new(ArcSwap::from_pointee(CheckKeys::of(privacy))),
            outcomes: registered(
                registry,
                "config_checks",
                "RegisterSession feature configs that would show the Autopilot server an \
                 identifier the session's flags keep private, or that could not be inspected, by \
                 outcome (refused, warned) and reason",
            ),
        }
    }

    /// The swappable keys, for a reload.
    pub(super) fn keys(&self) -> Arc<ArcSwap<CheckKeys>> {
        self.keys.clone()
    }

    /// Checks every config, in feature-name order, as litd sends it under `privacy`; returns
    /// what each shows the server, or the first refusal.
    pub(super) fn check(
        &self,
        session: &str,
        configs: &HashMap<String, Vec<u8>>,
        privacy: Privacy,
    ) -> Result<BTreeMap<String, ConfigSent>, FeatureConfigRefusal> {
        let keys = self.keys.load();
        let mut names: Vec<&String> = configs.keys().collect();
        names.sort();
        let mut out = BTreeMap::new();
        for name in names {
            let bytes = &configs[name];
            let inspected = feature_config::inspect(bytes, privacy);
            let trusted = keys.skip.contains(name);
            let verdict = match &inspected {
                Ok(inspection) => inspection.check().map(drop),
                Err(refusal) => Err(refusal.clone()),
            };
            if let (Err(reason), false) = (verdict, trusted) {
                match keys.mode {
                    RelayConfigCheck::Refuse => {
                        self.count("refused", &reason);
                        return Err(FeatureConfigRefusal {
                            feature: name.clone(),
                            reason,
                        });
                    }
                    RelayConfigCheck::Warn => {
                        self.count("warned", &reason);
                        tracing::warn!(
                            %session,
                            feature = %name,
                            %reason,
                            "registration forwarded although its feature config would be refused \
                             ([privacy] relay_config_check = \"warn\")"
                        );
                    }
                }
            }
            out.insert(name.clone(), sent(bytes.len(), &inspected, trusted));
        }
        Ok(out)
    }

    fn count(&self, outcome: &'static str, reason: &ConfigRefusal) {
        self.outcomes
            .get_or_create(&Labels {
                outcome,
                reason: reason.reason(),
            })
            .inc();
    }
}

/// The ledger's record of one config.
fn sent(bytes: usize, inspected: &Result<Inspection, ConfigRefusal>, trusted: bool) -> ConfigSent {
    let mut sent = ConfigSent {
        bytes,
        trusted,
        ..ConfigSent::default()
    };
    let inspection = match inspected {
        Ok(inspection) => inspection,
        Err(refusal) => {
            sent.uninspected = Some(refusal.to_string());
            return sent;
        }
    };
    for finding in inspection.findings() {
        let (list, why) = match finding.fate {
            Fate::Replaced => (&mut sent.pseudonyms, ""),
            Fate::ClearByFlag => (&mut sent.in_clear, finding.kind.clear_flag_name()),
            Fate::ClearNoMapper => (&mut sent.in_clear, "no privacy mapper"),
            Fate::Leaked => (&mut sent.in_clear, NOT_REPLACED),
        };
        // A kind the flags keep private that went in clear anyway is always listed once, so
        // the ledger's summary of what the server saw never misses it.
        let first_leak_of_kind = why == NOT_REPLACED
            && !list
                .iter()
                .any(|p| p.why == NOT_REPLACED && p.kind == finding.kind.as_str());
        if list.len() < MAX_LISTED || first_leak_of_kind {
            list.push(SentPath {
                path: finding.path.to_string(),
                kind: finding.kind.as_str().to_owned(),
                why: why.to_owned(),
            });
        } else {
            sent.unlisted += 1;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "024a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a";
    const CP: &str = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3:1";

    fn check(privacy: &PrivacyConfig) -> ConfigCheck {
        ConfigCheck::new(privacy, &mut Registry::default())
    }

    fn configs(list: &[(&str, String)]) -> HashMap<String, Vec<u8>> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.clone().into_bytes()))
            .collect()
    }

    fn path(p: &str, kind: &str, why: &str) -> SentPath {
        SentPath {
            path: p.into(),
            kind: kind.into(),
            why: why.into(),
        }
    }

    #[test]
    fn records_paths_and_why_never_values() {
        let c = check(&PrivacyConfig::default());
        let cfg = configs(&[
            ("A", format!(r#"{{"peers":["{PK}"],"chan":"{CP}"}}"#)),
            ("B", String::new()),
        ]);
        let out = c.check("s", &cfg, Privacy::Mapper { flags: 0x04 }).unwrap();
        assert_eq!(out["A"].pseudonyms, [path("$.peers[0]", "pubkey", "")]);
        assert_eq!(
            out["A"].in_clear,
            [path("$.chan", "channel_point", "ClearChanIDs")]
        );
        assert_eq!(out["B"], ConfigSent::default());
        let json = serde_json::to_string(&out).unwrap();
        assert!(!json.contains(PK) && !json.contains(&CP[..64]), "{json}");

        let out = c.check("s", &cfg, Privacy::NoMapper).unwrap();
        assert_eq!(out["A"].in_clear.len(), 2);
        assert!(out["A"]
            .in_clear
            .iter()
            .all(|p| p.why == "no privacy mapper"));
    }

    #[test]
    fn a_reload_swaps_the_mode_and_the_deny_list_for_the_next_registration() {
        let leaking = configs(&[("A", "[1]".into())]);
        let full = Privacy::Mapper { flags: 0 };
        let c = check(&PrivacyConfig::default());
        let live = super::super::LivePrivacy {
            flags: Arc::new(ArcSwap::from_pointee(
                crate::autopilot::privacy::FlagPolicy::new(&[]),
            )),
            configs: c.keys(),
        };
        assert!(c.check("s", &leaking, full).is_err());
        // ClearPubkeys (bit 0), needed by no feature here: allowed before the reload.
        assert!(live.flags.load().check_session(1, 1).is_ok());

        live.set(&PrivacyConfig {
            relay_config_check: RelayConfigCheck::Warn,
            deny_clear: vec!["ClearPubkeys".into()],
            ..Default::default()
        });
        assert!(
            c.check("s", &leaking, full).is_ok(),
            "now warned, not refused"
        );
        assert!(
            live.flags.load().check_session(1, 1).is_err(),
            "pubkeys in the clear now refused"
        );
    }

    #[test]
    fn refuses_the_first_feature_by_name_or_warns() {
        let leaking = configs(&[("B", format!(r#"{{"peer":"{PK}"}}"#)), ("A", "[1]".into())]);
        let full = Privacy::Mapper { flags: 0 };
        let err = check(&PrivacyConfig::default())
            .check("s", &leaking, full)
            .unwrap_err();
        assert_eq!(err.feature, "A");
        assert_eq!(err.reason.reason(), "config_not_an_object");

        let warn = check(&PrivacyConfig {
            relay_config_check: RelayConfigCheck::Warn,
            ..Default::default()
        });
        let out = warn.check("s", &leaking, full).unwrap();
        assert_eq!(
            out["A"].uninspected.as_deref(),
            Some("json: cannot unmarshal array into Go value of type map[string]interface {}")
        );
        assert_eq!(
            out["B"].in_clear,
            [path("$.peer", "pubkey", "not replaced by litd")]
        );
        let counted = |c: &ConfigCheck, outcome, reason| {
            c.outcomes.get_or_create(&Labels { outcome, reason }).get()
        };
        assert_eq!(counted(&warn, "warned", "config_not_an_object"), 1);
        assert_eq!(counted(&warn, "warned", "config_reveals_identifier"), 1);
        assert_eq!(counted(&warn, "refused", "config_reveals_identifier"), 0);
    }

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn warnings_name_the_path_never_the_identifier() {
        let sink = Captured::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let warn = check(&PrivacyConfig {
            relay_config_check: RelayConfigCheck::Warn,
            ..Default::default()
        });
        let cfg = configs(&[(
            "A",
            format!(r#"{{"peer":"{PK}","x":{{"{PK}":1}},"c":"{CP}"}}"#),
        )]);
        tracing::subscriber::with_default(subscriber, || {
            warn.check("0a1b2c3d", &cfg, Privacy::Mapper { flags: 0 })
                .unwrap();
        });
        let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            logged.contains("WARN")
                && logged.contains("feature=A")
                && logged.contains("reason=$.peer: a node pubkey"),
            "{logged}"
        );
        assert!(
            !logged.contains(&PK[2..]) && !logged.contains(&CP[..64]),
            "{logged}"
        );
    }

    #[test]
    fn trusted_features_are_recorded_not_refused() {
        let c = check(&PrivacyConfig {
            skip_config_inspection: vec!["B".into()],
            ..Default::default()
        });
        let cfg = configs(&[("B", format!(r#"{{"peer":"{PK}"}}"#))]);
        let out = c.check("s", &cfg, Privacy::Mapper { flags: 0 }).unwrap();
        assert!(out["B"].trusted);
        assert_eq!(out["B"].in_clear[0].why, "not replaced by litd");
        assert_eq!(
            c.outcomes
                .get_or_create(&Labels {
                    outcome: "refused",
                    reason: "config_reveals_identifier"
                })
                .get(),
            0,
            "a trusted feature's config is not counted as refused"
        );
    }

    #[test]
    fn long_lists_are_bounded_and_counted() {
        let items = vec![format!("\"{PK}\""); MAX_LISTED + 5].join(",");
        let cfg = configs(&[("A", format!(r#"{{"peers":[{items}]}}"#))]);
        let out = check(&PrivacyConfig::default())
            .check("s", &cfg, Privacy::Mapper { flags: 0 })
            .unwrap();
        assert_eq!(out["A"].pseudonyms.len(), MAX_LISTED);
        assert_eq!(out["A"].unlisted, 5);

        // A leak of a kind the flags keep private is listed even past the bound.
        let chans: Vec<String> = (0..MAX_LISTED + 3)
            .map(|i| format!("\"c{i}\":\"{CP}\""))
            .collect();
        let cfg = configs(&[(
            "A",
            format!(r#"{{{},"z":{{"peer":"{PK}"}}}}"#, chans.join(",")),
        )]);
        let warn = check(&PrivacyConfig {
            relay_config_check: RelayConfigCheck::Warn,
            ..Default::default()
        });
        let out = warn
            .check("s", &cfg, Privacy::Mapper { flags: 0x04 })
            .unwrap();
        assert_eq!(out["A"].in_clear.len(), MAX_LISTED + 1);
        assert_eq!(
            out["A"].in_clear.last(),
            Some(&path("$.z.peer", "pubkey", NOT_REPLACED))
        );
        assert_eq!(out["A"].unlisted, 3);
    }
}
