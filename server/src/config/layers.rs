//! Where settings come from: embedded defaults < the TOML file < `PUSH_*` environment variables
//! (command-line flags, applied by the binary, come last). Every key can come from the
//! environment, nested ones with `__` (`PUSH_AMQP__URL`, `PUSH_TLS__CERT`); values are parsed
//! like TOML (`PUSH_WS_ALLOWED_ORIGINS=["https://a.example"]`, `PUSH_API_KEYS=[{name="x",...}]`).

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::{self, Deserialize, Visitor};

use super::{AmqpConfig, ApiKey, Config, ConfigError};
use crate::tls::TlsConfig;

/// Prefix of the environment variables read as settings.
pub const ENV_PREFIX: &str = "PUSH_";

/// `PUSH_*` variables that are not settings but are used by the tools around the server.
const NOT_SETTINGS: [&str; 2] = ["config", "api_token"];

/// String settings taken verbatim from the environment: parsed like TOML, a secret or a name
/// that looks like a number or `true` would no longer be a string.
const RAW_STRINGS: [&str; 17] = [
    "api_tokens",
    "data_dir",
    "jwt_secret",
    "jwt_jwks_file",
    "jwt_issuer",
    "jwt_audience",
    "amqp.url",
    "amqp.queue",
    "amqp.dead_letter_exchange",
    "amqp.dead_letter_queue",
    "tls.cert",
    "tls.key",
    "cluster.nats_urls",
    "cluster.prefix",
    "tracing.otlp_endpoint",
    "tracing.service_name",
    "tracing.instance",
];

/// List settings that the environment may also give comma-separated.
const LISTS: [&str; 2] = ["api_tokens", "cluster.nats_urls"];

/// The settings as layered from `file` (if any) and the process environment, not yet validated.
/// Also returns the `PUSH_*` variables that name no setting (probably typos).
pub fn load(file: Option<&Path>) -> Result<(Config, Vec<String>), ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        // Toml::file skips a missing file silently; a named file must exist.
        std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    let keys = field_names::<Config>();
    // Before `split`, nested keys are `AMQP__URL`; after it (in the filter), `amqp.url`.
    let top = |key: &str| {
        let first = key.split("__").next().unwrap_or_default();
        first
            .split('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    // Names that are not Unicode cannot be settings; skipping them also keeps
    // `std::env::vars` from panicking on them.
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    let mut unknown = Vec::new();
    let mut raw = Vec::new();
    for (name, value) in &vars {
        let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        let t = top(&key);
        if NOT_SETTINGS.contains(&t.as_str()) {
            continue;
        }
        if !keys.contains(&t.as_str()) {
            unknown.push(name.clone());
        } else if let Some(k) = RAW_STRINGS.iter().find(|k| **k == key.replace("__", ".")) {
            raw.push((*k, value.clone()));
        }
    }
    let env = Env::prefixed(ENV_PREFIX).split("__").filter(move |key| {
        let t = top(key.as_str());
        let dotted = key.as_str().to_ascii_lowercase();
        keys.contains(&t.as_str()) && !RAW_STRINGS.contains(&dotted.as_str())
    });
    figment = figment.merge(env);
    for (key, value) in raw {
        if LISTS.contains(&key) {
            if value.trim_start().starts_with('[') {
                let only = [key];
                figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__").only(&only));
            } else {
                // Comma-separated, as the flag takes it (and as earlier versions read it).
                let list: Vec<&str> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .collect();
                figment = figment.merge(Serialized::default(key, list));
            }
        } else {
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    let config: Config = figment.extract().map_err(|e| ConfigError::Layered {
        file: file.map(PathBuf::from),
        source: Box::new(e),
    })?;
    Ok((config, unknown))
}

/// Every key the settings file (and the environment) may set, nested ones as `table.key`.
pub fn all_keys() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for key in field_names::<Config>() {
        let nested = match *key {
            "amqp" => field_names::<AmqpConfig>(),
            "cluster" => field_names::<super::ClusterConfig>(),
            "tls" => field_names::<TlsConfig>(),
            "tracing" => field_names::<super::TracingConfig>(),
            "api_keys" => field_names::<ApiKey>(),
            "jwt_public_keys" => field_names::<super::JwtPublicKey>(),
            _ => &[],
        };
        out.push(key.to_string());
        out.extend(nested.iter().map(|n| format!("{key}.{n}")));
    }
    out
}

/// The field names of a struct, as its derived `Deserialize` announces them.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut names = FieldNames(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}

/// A deserializer that only records the fields a struct asks for.
struct FieldNames(&'static [&'static str]);

impl<'de> de::Deserializer<'de> for &mut FieldNames {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(de::Error::custom("field names only"))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field names only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn every_key_comes_from_the_file_or_the_environment_with_the_environment_winning() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "push.toml",
                "listen = \"127.0.0.1:9000\"\nmax_connections = 5\n[amqp]\nurl = \"amqp://file\"\nqueue = \"from-file\"\n",
            )?;
            jail.set_env("PUSH_MAX_CONNECTIONS", "7");
            jail.set_env("PUSH_AMQP__URL", "amqp://user:secret@env:5672/%2f");
            jail.set_env("PUSH_TLS__CERT", "/etc/push/cert.pem");
            jail.set_env("PUSH_TLS__KEY", "/etc/push/key.pem");
            jail.set_env("PUSH_WS_ALLOWED_ORIGINS", "[\"https://app.example\"]");
            jail.set_env("PUSH_API_TOKENS", "token-one-1, token-two-2");
            jail.set_env("PUSH_MAX_ROOM_OPS_PER_SEC", "3");
            jail.set_env("PUSH_MAX_CONECTIONS", "9");
            jail.set_env("PUSH_JWT_SECRET", "12345678901234567890");
            jail.set_env("PUSH_JWT_AUDIENCE", "true");
            let (c, unknown) = load(Some(Path::new("push.toml"))).expect("loads");
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.max_connections, 7);
            let amqp = c.amqp.expect("amqp from file and environment");
            assert_eq!(amqp.url, "amqp://user:secret@env:5672/%2f");
            assert_eq!(amqp.queue, "from-file");
            let tls = c.tls.expect("tls from the environment alone");
            assert_eq!(tls.cert, PathBuf::from("/etc/push/cert.pem"));
            assert_eq!(
                c.ws_allowed_origins,
                vec!["https://app.example".to_string()]
            );
            assert_eq!(c.api_tokens, vec!["token-one-1", "token-two-2"]);
            assert_eq!(c.jwt_secret, "12345678901234567890");
            assert_eq!(c.jwt_audience.as_deref(), Some("true"));
            assert_eq!(c.max_room_ops_per_sec, 3);
            assert!(
                unknown.contains(&"PUSH_MAX_CONECTIONS".to_string()),
                "{unknown:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn cluster_settings_come_from_the_environment_with_comma_separated_urls() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "PUSH_CLUSTER__NATS_URLS",
                "nats://127.0.0.1:4222, nats://127.0.0.1:4223",
            );
            jail.set_env("PUSH_CLUSTER__PREFIX", "123");
            jail.set_env("PUSH_CLUSTER__REPLICAS", "5");
            let (c, unknown) = load(None).expect("loads");
            // (The test runner's own PUSH_TEST_* variables are unknown, rightly.)
            assert!(
                !unknown.iter().any(|k| k.starts_with("PUSH_CLUSTER")),
                "{unknown:?}"
            );
            let cluster = c.cluster.expect("cluster from the environment alone");
            assert_eq!(
                cluster.nats_urls,
                vec!["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
            );
            assert_eq!((cluster.prefix.as_str(), cluster.replicas), ("123", 5));
            assert_eq!(cluster.request_timeout_ms, 2000);
            jail.set_env("PUSH_CLUSTER__NATS_URLS", "[\"nats://a:4222\"]");
            let (c, _) = load(None).expect("loads");
            assert_eq!(c.cluster.expect("cluster").nats_urls, vec!["nats://a:4222"]);
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key_and_a_missing_file_is_an_error() {
        Jail::expect_with(|jail| {
            jail.set_env("PUSH_MAX_CONNECTIONS", "lots");
            let e = load(None).unwrap_err().to_string();
            assert!(e.to_lowercase().contains("max_connections"), "{e}");
            assert!(e.contains("PUSH_"), "{e}");
            Ok(())
        });
        let e = load(Some(Path::new("/nonexistent/push.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/push.toml"), "{e}");
    }

    #[test]
    fn the_example_config_lists_every_key() {
        let example = include_str!("../../../push-server.example.toml");
        let keys = all_keys();
        assert!(keys.len() > 50, "{keys:?}");
        for key in keys {
            let leaf = key.rsplit('.').next().unwrap();
            let listed = example.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{leaf} ="))
                    || l.starts_with(&format!("[{leaf}]"))
                    || l.starts_with(&format!("[[{leaf}]]"))
            });
            assert!(listed, "push-server.example.toml does not list {key}");
        }
    }
}
