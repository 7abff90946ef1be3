//! `pagerbridge check-config` as a subprocess: a valid configuration is summarised with masked
//! keys (exit 0); each kind of mistake is named on stderr (exit 1); no raw key is ever printed.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

const FILE_KEY: &str = "CheckConfigFileKey00000000001abc";
const ENV_KEY: &str = "CheckConfigEnvKey000000000002xyz";
const INLINE_KEY: &str = "CheckConfigInlineKey0000000003qq";

/// A temporary working directory holding a key file (`pd-db`) and the config under test.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("pd-db"), format!("{FILE_KEY}\n")).expect("key file");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self, yaml: &str) -> PathBuf {
        let path = self.path("pagerbridge.yaml");
        std::fs::write(&path, yaml).expect("config file");
        path
    }

    /// Runs `check-config --config FILE` in the fixture's directory, with no PAGERBRIDGE_*
    /// variables but `env`.
    fn check(&self, config: &Path, env: &[(&str, &str)]) -> Checked {
        let config = config.display().to_string();
        self.run(&["check-config", "--config", &config], env)
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Checked {
        let mut command = Command::cargo_bin("pagerbridge").expect("binary");
        command.current_dir(self.dir.path()).args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PAGERBRIDGE_") {
                command.env_remove(name);
            }
        }
        command.env_remove("PD_ENV_KEY");
        command.envs(env.iter().copied());
        Checked(command.output().expect("runs"))
    }
}

struct Checked(Output);

impl Checked {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts exit 0 and returns stdout.
    fn ok(&self) -> String {
        assert_eq!(self.0.status.code(), Some(0), "stderr: {}", self.stderr());
        self.assert_no_raw_key();
        self.stdout()
    }

    /// Asserts exit 1 with `error: …` and returns stderr.
    fn failed(&self) -> String {
        assert_eq!(self.0.status.code(), Some(1), "stdout: {}", self.stdout());
        self.assert_no_raw_key();
        let stderr = self.stderr();
        assert!(stderr.contains("error: "), "{stderr}");
        stderr
    }

    fn assert_no_raw_key(&self) {
        let all = format!("{}{}", self.stdout(), self.stderr());
        for key in [FILE_KEY, ENV_KEY, INLINE_KEY] {
            assert!(!all.contains(key), "raw key printed:\n{all}");
        }
    }
}

const VALID: &str = r#"
listen: "127.0.0.1:9095"
storage:
  path: "data/pagerbridge.db"
targets:
  - name: db
    routing_key_file: pd-db
    match: { team: "db", severity: "~critical|warning" }
    severity_map: { p1: critical }
    dedup: group
    rate_limit: { requests: 60, window: "30s" }
  - name: web.frontend
    routing_key_env: PD_ENV_KEY
    url: "https://events.eu.pagerduty.com"
"#;

#[test]
fn valid_config_is_summarised_with_masked_keys() {
    let fixture = Fixture::new();
    let config = fixture.write_config(VALID);
    let stdout = fixture.check(&config, &[("PD_ENV_KEY", ENV_KEY)]).ok();
    for expected in [
        "listen:       127.0.0.1:9095",
        "storage:      data/pagerbridge.db",
        "pagerduty:    https://events.pagerduty.com",
        "budget:       120 requests per 1m per routing key",
        "- db (default",
        "key:      …1abc (file pd-db)",
        r#"match:    severity=~"critical|warning", team="db""#,
        "dedup:    group",
        "severity: default error, map p1→critical",
        "budget:   60 requests per 30s",
        "- web.frontend",
        "key:      …2xyz (env $PD_ENV_KEY)",
        "match:    everything",
        "url:      https://events.eu.pagerduty.com/",
        "configuration OK",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn secrets_discovery_is_named_without_contacting_kubernetes() {
    let fixture = Fixture::new();
    let yaml = format!("kubernetes:\n  secrets:\n    namespace: alerts\n{VALID}");
    let config = fixture.write_config(&yaml);
    let stdout = fixture.check(&config, &[("PD_ENV_KEY", ENV_KEY)]).ok();
    assert!(
        stdout.contains(
            "kubernetes:   targets from Secrets in alerts matching \"publishing-target=true,type=pagerduty\""
        ),
        "{stdout}"
    );
}

#[test]
fn inline_key_is_masked_and_warned_about() {
    let fixture = Fixture::new();
    let config = fixture.write_config(&format!(
        "targets:\n  - name: demo\n    routing_key: {INLINE_KEY}\n"
    ));
    let checked = fixture.check(&config, &[]);
    let stdout = checked.ok();
    assert!(
        stdout.contains("…03qq (inline in the config file)"),
        "{stdout}"
    );
    assert!(checked.stderr().contains("inline"), "{}", checked.stderr());
}

#[test]
fn unknown_field_is_named() {
    let fixture = Fixture::new();
    let config = fixture.write_config("pagerduty:\n  timeout: 5s\n  rate_limt: {}\n");
    let stderr = fixture.check(&config, &[]).failed();
    assert!(stderr.contains("unknown field `rate_limt`"), "{stderr}");
    assert!(stderr.contains("line 3, column 3"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let fixture = Fixture::new();
    let config = fixture.write_config("listen: 127.0.0.1:9095\nstorage:\n  path: a\n    b: c\n");
    let stderr = fixture.check(&config, &[]).failed();
    assert!(stderr.contains("line 4, column 6"), "{stderr}");
    assert!(stderr.contains("pagerbridge.yaml"), "{stderr}");
}

#[test]
fn missing_key_file_names_target_and_path() {
    let fixture = Fixture::new();
    let config =
        fixture.write_config("targets:\n  - name: db\n    routing_key_file: /nonexistent/pd-db\n");
    let stderr = fixture.check(&config, &[]).failed();
    assert!(stderr.contains("target \"db\""), "{stderr}");
    assert!(stderr.contains("/nonexistent/pd-db"), "{stderr}");
}

#[test]
fn invalid_key_uses_pagerduty_wording_and_is_not_shown() {
    let fixture = Fixture::new();
    // One character too many: it must not be printed either.
    let too_long = format!("{FILE_KEY}X");
    std::fs::write(fixture.path("pd-db"), &too_long).expect("key file");
    let config = fixture.write_config(VALID);
    let stderr = fixture.check(&config, &[("PD_ENV_KEY", ENV_KEY)]).failed();
    assert!(
        stderr.contains("Length of 'routing_key' is incorrect (should be 32 characters)"),
        "{stderr}"
    );
    assert!(stderr.contains("target \"db\""), "{stderr}");
    assert!(!stderr.contains(&too_long), "{stderr}");

    // The same from an environment variable, named but not shown.
    std::fs::write(fixture.path("pd-db"), FILE_KEY).expect("key file");
    let stderr = fixture
        .check(&config, &[("PD_ENV_KEY", "sk-live-abcdef")])
        .failed();
    assert!(stderr.contains("$PD_ENV_KEY"), "{stderr}");
    assert!(stderr.contains("non-alphanumeric"), "{stderr}");
    assert!(!stderr.contains("sk-live-abcdef"), "{stderr}");
}

#[test]
fn duplicate_target_names_are_refused() {
    let fixture = Fixture::new();
    let config = fixture.write_config(
        "targets:\n  - { name: db, routing_key_file: pd-db }\n  - { name: db, routing_key_file: pd-db }\n",
    );
    let stderr = fixture.check(&config, &[]).failed();
    assert!(
        stderr.contains("name \"db\" is already used by targets[0]"),
        "{stderr}"
    );
}

#[test]
fn bad_target_name_is_refused() {
    let fixture = Fixture::new();
    let config =
        fixture.write_config("targets:\n  - { name: \"db/primary\", routing_key_file: pd-db }\n");
    let stderr = fixture.check(&config, &[]).failed();
    assert!(
        stderr.contains("\"db/primary\" may only contain"),
        "{stderr}"
    );
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let fixture = Fixture::new();
    let config = fixture.write_config(&format!(
        "{VALID}pagerduty:\n  url: http://events.example.com\n"
    ));
    let stderr = fixture.check(&config, &[("PD_ENV_KEY", ENV_KEY)]).failed();
    assert!(stderr.contains("pagerduty.url"), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[test]
fn environment_overrides_the_file() {
    let fixture = Fixture::new();
    let config = fixture.write_config(VALID);
    let stdout = fixture
        .check(
            &config,
            &[
                ("PD_ENV_KEY", ENV_KEY),
                ("PAGERBRIDGE_LISTEN", "0.0.0.0:9999"),
                ("PAGERBRIDGE_PAGERDUTY__URL", "http://127.0.0.1:8787"),
                ("PAGERBRIDGE_PAGERDUTY__RATE_LIMIT__REQUESTS", "960"),
                // Not config: must neither apply nor break loading.
                ("PAGERBRIDGE_LOG", "info"),
                ("PAGERBRIDGE_PORT", "tcp://10.0.0.1:9095"),
            ],
        )
        .ok();
    assert!(stdout.contains("listen:       0.0.0.0:9999"), "{stdout}");
    assert!(
        stdout.contains("pagerduty:    http://127.0.0.1:8787"),
        "{stdout}"
    );
    assert!(
        stdout.contains("budget:       960 requests per 1m"),
        "{stdout}"
    );
    assert!(stdout.contains("PAGERBRIDGE_LISTEN"), "{stdout}");
    assert!(!stdout.contains("PAGERBRIDGE_PORT"), "{stdout}");
}

#[test]
fn environment_selects_the_database_backend_and_never_prints_its_password() {
    let fixture = Fixture::new();
    let config = fixture.write_config(VALID);
    // Nothing listens there: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("postgres://pb:s3cret-pw@127.0.0.1:{port}/pb");
    let url_file = fixture.path("db-url");
    std::fs::write(&url_file, format!("{url}\n")).expect("url file");
    let url_file = url_file.display().to_string();
    for source in [
        ("PAGERBRIDGE_STORAGE__URL", url.as_str()),
        ("PAGERBRIDGE_STORAGE__URL_FILE", url_file.as_str()),
    ] {
        let checked = fixture.check(
            &config,
            &[
                ("PD_ENV_KEY", ENV_KEY),
                ("PAGERBRIDGE_STORAGE__BACKEND", "postgres"),
                source,
            ],
        );
        let stderr = checked.failed();
        assert!(
            stderr.contains("is not reachable"),
            "{}: {stderr}",
            source.0
        );
        assert!(
            stderr.contains(&format!("postgres://pb:***@127.0.0.1:{port}/pb")),
            "{}: {stderr}",
            source.0
        );
        assert!(!format!("{}{stderr}", checked.stdout()).contains("s3cret-pw"));
    }
    let stderr = fixture
        .check(
            &config,
            &[
                ("PD_ENV_KEY", ENV_KEY),
                ("PAGERBRIDGE_STORAGE__BACKEND", "postgres"),
            ],
        )
        .failed();
    assert!(
        stderr.contains("neither storage.url nor storage.url_file"),
        "{stderr}"
    );
}

#[test]
fn bad_environment_override_is_named() {
    let fixture = Fixture::new();
    let config = fixture.write_config(VALID);
    let stderr = fixture
        .check(
            &config,
            &[
                ("PD_ENV_KEY", ENV_KEY),
                ("PAGERBRIDGE_DELIVERY__MAX_BACKOF", "1m"),
            ],
        )
        .failed();
    assert!(stderr.contains("max_backof"), "{stderr}");
    assert!(stderr.contains("PAGERBRIDGE_DELIVERY"), "{stderr}");
}

#[test]
fn config_file_from_environment_or_working_directory() {
    let fixture = Fixture::new();
    let config = fixture.write_config(VALID);
    let env_only = [("PD_ENV_KEY", ENV_KEY)];

    // ./pagerbridge.yaml is found without being named.
    let stdout = fixture.run(&["check-config"], &env_only).ok();
    assert!(
        stdout.contains("config file:  pagerbridge.yaml"),
        "{stdout}"
    );

    // $PAGERBRIDGE_CONFIG wins over ./pagerbridge.yaml.
    let other = fixture.path("other.yaml");
    std::fs::write(
        &other,
        "listen: 127.0.0.1:1\ntargets: [{ name: x, routing_key_file: pd-db }]\n",
    )
    .expect("other config");
    let other = other.display().to_string();
    let stdout = fixture
        .run(&["check-config"], &[("PAGERBRIDGE_CONFIG", &other)])
        .ok();
    assert!(stdout.contains("listen:       127.0.0.1:1"), "{stdout}");

    std::fs::remove_file(&config).expect("remove");
    let stderr = fixture
        .run(
            &["check-config"],
            &[("PAGERBRIDGE_CONFIG", "/nonexistent.yaml")],
        )
        .failed();
    assert!(stderr.contains("/nonexistent.yaml"), "{stderr}");
}

#[test]
fn no_targets_is_an_error() {
    let fixture = Fixture::new();
    let config = fixture.write_config("listen: 127.0.0.1:9095\n");
    let stderr = fixture.check(&config, &[]).failed();
    assert!(stderr.contains("no targets configured"), "{stderr}");
}
