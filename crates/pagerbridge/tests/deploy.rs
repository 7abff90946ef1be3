//! The deploy files hold what docs/kubernetes.md promises: the kustomize overlays of
//! `deploy/kubernetes/` and the `Dockerfile`.
//!
//! Each overlay is rendered with `kubectl kustomize`, and every object (with the example
//! Secrets) is validated against the Kubernetes schemas by `kubernetes-validate`, for the oldest
//! and the newest Kubernetes version the guide names. The rendered objects are then checked for
//! the security the guide states (non-root, read-only root filesystem, no privilege escalation,
//! no capabilities, only namespaced get/list/watch on Secrets) and for what must agree across
//! them (ports, probes, selectors, mounts and the paths of the config). Last, the pod is run:
//! the real `pagerbridge` binary with the container's arguments and environment, over a
//! directory holding what the pod's volumes would hold, must start, answer its probes and stop
//! within the pod's grace period.
//!
//! There is no Docker daemon to build the image with; the Dockerfile's test checks what must
//! agree with the workspace and with the manifests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Bridge;
use pagerbridge_testkit::kube_api::FakeKubeApi;
use pagerbridge_testkit::needs;
use pagerbridge_testkit::postgres::TestDatabase;
use serde_json::Value;

/// The oldest Kubernetes the manifests are for (StatefulSet's
/// `persistentVolumeClaimRetentionPolicy` is GA from 1.32) and the newest that
/// `kubernetes-validate` 1.37.0 knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.32.0", "1.37.0"];
/// The overlays' `namespace:`.
const NAMESPACE: &str = "pagerbridge";
/// The example Secret's routing key, which no log line may hold.
const FAKE_KEY: &str = "FAKE0000FAKE0000FAKE0000FAKE0000";
/// The routing key of the target the pod discovers from a Secret (fake too).
const SECRET_KEY: &str = "SECRET00SECRET00SECRET00SECRET00";

/// `deploy/kubernetes/overlays/single`: one replica on SQLite, on a PersistentVolumeClaim.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kubectl and kubernetes_validate"]
async fn single_overlay_is_valid_secure_and_serves_kubectl_kubernetes_validate() {
    let rendered = render_and_validate("single");
    let pod = check_objects(&rendered, "StatefulSet");
    let workload = one(&rendered, "StatefulSet");
    assert_eq!(
        workload["spec"]["replicas"], 1,
        "SQLite: exactly one process"
    );

    // The database is on the claim, which every pod of the StatefulSet gets.
    let claims = workload["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates");
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(
        claim["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );
    let data = mount(&pod, str_at(&claim["metadata"], "name"));
    let config = pod.config();
    assert_eq!(config["storage"]["backend"], "sqlite");
    assert!(
        str_at(&config["storage"], "path").starts_with(&format!("{data}/")),
        "the SQLite database is on the claim mounted at {data}"
    );

    // The example Secret provides the target's key file, with a fake key.
    let examples = examples();
    let key_file = str_at(&config["targets"][0], "routing_key_file");
    let provided = examples.iter().find_map(|s| pod.secret_file(s, key_file));
    assert_eq!(
        provided,
        Some(FAKE_KEY),
        "the example Secret provides {key_file}"
    );

    let files = PodFiles::lay_out(&pod, &examples, &BTreeMap::new());
    let run = files.serve(&pod).await;
    assert!(run.storage.ends_with("(SQLite)"), "{}", run.storage);
    assert!(
        files
            .host_path(str_at(&config["storage"], "path"))
            .is_file(),
        "the database was created on the claim"
    );
}

/// `deploy/kubernetes/overlays/ha`: three replicas on PostgreSQL, its URL from a Secret. The pod
/// is run against a fresh database of the test server, whose URL takes the example Secret's
/// place.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kubectl, kubernetes_validate and postgres"]
async fn ha_overlay_is_valid_secure_and_serves_on_postgres_kubectl_kubernetes_validate() {
    let rendered = render_and_validate("ha");
    let pod = check_objects(&rendered, "Deployment");
    let workload = one(&rendered, "Deployment");
    assert_eq!(workload["spec"]["replicas"], 3);
    assert_eq!(
        workload["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
        "a rolling update keeps every replica until its successor is ready"
    );
    assert_eq!(pod.env("PAGERBRIDGE_STORAGE__BACKEND"), Some("postgres"));
    let url_file = pod
        .env("PAGERBRIDGE_STORAGE__URL_FILE")
        .expect("the database URL comes from a file");

    // The example Secret holds a URL the bridge accepts, under the key the file is named after.
    let examples = examples();
    let db_secret = examples
        .iter()
        .find(|secret| pod.secret_file(secret, url_file).is_some())
        .unwrap_or_else(|| panic!("no example Secret provides {url_file}"));
    let example_url = pod.secret_file(db_secret, url_file).expect("the URL");
    pagerbridge::config::SecretUrl::parse(example_url).expect("the example URL is valid");
    assert!(
        example_url.contains("FAKE"),
        "the example is marked as fake"
    );

    let database = TestDatabase::create().await;
    let secret_name = str_at(&db_secret["metadata"], "name").to_owned();
    let key = Path::new(url_file)
        .file_name()
        .and_then(|name| name.to_str())
        .expect("file name")
        .to_owned();
    let replaced = BTreeMap::from([((secret_name, key), database.url.clone())]);
    let files = PodFiles::lay_out(&pod, &examples, &replaced);
    let run = files.serve(&pod).await;
    assert!(run.storage.ends_with("(PostgreSQL)"), "{}", run.storage);
}

/// What the Dockerfile builds and runs must agree with the workspace and with the pod the
/// manifests describe. (Building the image needs a Docker daemon, which the tests do not have.)
#[test]
fn dockerfile_agrees_with_the_workspace_and_the_manifests() {
    let root = repo_root();
    let dockerfile = read(&root.join("Dockerfile"));
    let instructions: Vec<(&str, &str)> = dockerfile
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split_once(' '))
        .filter(|(word, _)| !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase()))
        .collect();
    let all = |word: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(w, _)| *w == word)
            .map(|(_, rest)| rest.trim())
            .collect()
    };

    // Built with a Rust at least as new as the workspace's rust-version, on the Debian release
    // the runtime image is (the binary links glibc).
    let from = all("FROM");
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    let (rust, debian) = from[0]
        .strip_prefix("rust:")
        .and_then(|rest| rest.split_once(' '))
        .map(|(tag, _)| tag)
        .and_then(|tag| tag.split_once('-'))
        .unwrap_or_else(|| panic!("the build stage is rust:<version>-<debian>: {}", from[0]));
    let workspace = read(&root.join("Cargo.toml"));
    let minimum = workspace
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|version| version.trim_matches('"'))
        .expect("the workspace's rust-version");
    assert!(
        version(rust) >= version(minimum),
        "the builder's Rust {rust} is older than the workspace's rust-version {minimum}"
    );
    let release = match debian {
        "bookworm" => "12",
        "trixie" => "13",
        other => panic!("unknown Debian release {other}"),
    };
    assert_eq!(
        from[1],
        format!("gcr.io/distroless/cc-debian{release}:nonroot"),
        "the runtime is distroless, on the builder's Debian release"
    );
    assert!(dockerfile.contains("cargo build --release --locked -p pagerbridge"));

    // The user, the command and the port are the pod's.
    let pod: Value = serde_saphyr::from_str(&read(
        &root.join("deploy/kubernetes/components/pod/pod.yaml"),
    ))
    .expect("pod.yaml is YAML");
    let spec = &pod["spec"]["template"]["spec"];
    let security = &spec["securityContext"];
    assert_eq!(
        all("USER"),
        [format!(
            "{}:{}",
            security["runAsUser"], security["runAsGroup"]
        )]
    );
    let container = &spec["containers"][0];
    let cmd: Value = serde_json::from_str(all("CMD")[0]).expect("CMD is an exec-form array");
    assert_eq!(cmd, container["args"], "the image runs what the pod runs");
    assert_eq!(
        all("ENTRYPOINT"),
        [r#"["/usr/local/bin/pagerbridge"]"#],
        "exec form: no shell in the image"
    );
    assert_eq!(
        all("EXPOSE"),
        [container["ports"][0]["containerPort"].to_string()]
    );

    // The manifests run the image of this version.
    let version_tag = env!("CARGO_PKG_VERSION");
    assert_eq!(
        container["image"],
        format!("registry.example.com/pagerbridge:{version_tag}")
    );
    for overlay in ["single", "ha"] {
        let kustomization: Value = serde_saphyr::from_str(&read(&root.join(format!(
            "deploy/kubernetes/overlays/{overlay}/kustomization.yaml"
        ))))
        .expect("kustomization.yaml is YAML");
        assert_eq!(
            kustomization["images"][0]["newTag"], version_tag,
            "{overlay}"
        );
    }

    let ignored = read(&root.join(".dockerignore"));
    for needed in ["target", ".git", "*.db"] {
        assert!(
            ignored.lines().any(|line| line == needed),
            ".dockerignore leaves out {needed}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering and validating

/// `kubectl kustomize` of the overlay, validated with the example Secrets by
/// `kubernetes-validate` for every version in [`KUBERNETES_VERSIONS`]; the rendered objects.
fn render_and_validate(overlay: &str) -> Vec<Value> {
    let kubectl = needs::kubectl();
    let validate = needs::kubernetes_validate();
    let root = repo_root();
    let rendered = Command::new(kubectl)
        .arg("kustomize")
        .arg(root.join("deploy/kubernetes/overlays").join(overlay))
        .output()
        .expect("kubectl runs");
    assert!(
        rendered.status.success(),
        "kubectl kustomize {overlay} failed:\n{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).expect("UTF-8");
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rendered YAML");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(format!("{overlay}.yaml"));
    std::fs::write(&file, &text).expect("rendered file");
    let example_files = example_files();
    let example_objects: Vec<Value> = example_files
        .iter()
        .map(|path| serde_saphyr::from_str(&read(path)).expect("example YAML"))
        .collect();
    for version in KUBERNETES_VERSIONS {
        let output = Command::new(&validate)
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file)
            .args(&example_files)
            .output()
            .expect("kubernetes-validate runs");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "kubernetes-validate {version} failed for {overlay}:\n{report}"
        );
        // Every object was validated, none skipped (an unknown kind would be).
        let minor = version.rsplit_once('.').map_or(version, |(minor, _)| minor);
        for object in objects.iter().chain(&example_objects) {
            let line = format!(
                "passed for resource {}/{} against version {minor}",
                str_at(object, "kind").to_lowercase(),
                str_at(&object["metadata"], "name")
            );
            assert!(report.contains(&line), "missing {line:?} in:\n{report}");
        }
    }
    objects
}

/// The example Secrets (`deploy/kubernetes/examples/`), which the overlays do not apply.
fn example_files() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/kubernetes/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
}

fn examples() -> Vec<Value> {
    example_files()
        .iter()
        .map(|path| {
            let text = read(path);
            assert!(
                text.starts_with("# EXAMPLE ONLY"),
                "{} says first that it is an example",
                path.display()
            );
            serde_saphyr::from_str(&text).expect("example YAML")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The rendered objects

/// The pod of the overlay's workload, with the objects it refers to.
struct Pod {
    spec: Value,
    labels: Value,
    container: Value,
    /// The config file, as the ConfigMap holds it.
    config_text: String,
    /// Volume name → the volume (or, for a claim template, `{"persistentVolumeClaim": …}`).
    volumes: BTreeMap<String, Value>,
}

impl Pod {
    fn config(&self) -> Value {
        serde_saphyr::from_str(&self.config_text).expect("the config is YAML")
    }

    fn env(&self, name: &str) -> Option<&str> {
        self.env_vars()
            .into_iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// The container's environment: plain values only (a `valueFrom` would hide what the
    /// bridge gets from this test).
    fn env_vars(&self) -> Vec<(&str, &str)> {
        self.container["env"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|var| (str_at(var, "name"), str_at(var, "value")))
            .collect()
    }

    fn mounts(&self) -> impl Iterator<Item = &Value> {
        self.container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
    }

    /// The value `secret` gives the file at `path`, if it is mounted from that Secret.
    fn secret_file<'a>(&self, secret: &'a Value, path: &str) -> Option<&'a str> {
        let (dir, key) = path.rsplit_once('/')?;
        let mount = self.mounts().find(|m| str_at(m, "mountPath") == dir)?;
        let volume = &self.volumes[str_at(mount, "name")];
        (volume["secret"]["secretName"] == secret["metadata"]["name"])
            .then(|| secret["stringData"][key].as_str())?
    }
}

/// The one object of `kind`.
fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {value}"))
}

/// The mount path of the volume `name` in the pod's container.
fn mount<'a>(pod: &'a Pod, name: &str) -> &'a str {
    pod.mounts()
        .find(|m| m["name"] == name)
        .map(|m| str_at(m, "mountPath"))
        .unwrap_or_else(|| panic!("volume {name} is not mounted"))
}

/// Checks what every overlay must hold and returns its pod.
fn check_objects(objects: &[Value], workload_kind: &str) -> Pod {
    let kinds: BTreeSet<&str> = objects.iter().map(|o| str_at(o, "kind")).collect();
    let expected: BTreeSet<&str> = [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Service",
        "PodDisruptionBudget",
        workload_kind,
    ]
    .into();
    assert_eq!(kinds, expected, "no ClusterRole, nothing cluster-wide");
    for object in objects {
        assert_eq!(
            object["metadata"]["namespace"], NAMESPACE,
            "{} {} is namespaced",
            object["kind"], object["metadata"]["name"]
        );
    }

    // Read access to Secrets, in the namespace, granted to the pods' ServiceAccount only.
    let role = one(objects, "Role");
    assert_eq!(
        role["rules"],
        serde_json::json!([{
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get", "list", "watch"],
        }]),
        "only get/list/watch on Secrets"
    );
    let binding = one(objects, "RoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = one(objects, "ServiceAccount");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": NAMESPACE,
        }])
    );

    let workload = one(objects, workload_kind);
    let template = &workload["spec"]["template"];
    let spec = template["spec"].clone();
    assert_eq!(spec["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(
        spec["automountServiceAccountToken"], true,
        "the Secrets watch needs the ServiceAccount's token"
    );
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(spec[host].is_null() || spec[host] == false, "{host}");
    }

    // Non-root, with the runtime's seccomp profile.
    let security = &spec["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert!(security["runAsUser"].as_u64().is_some_and(|uid| uid > 0));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    let containers = spec["containers"].as_array().expect("containers");
    assert!(spec["initContainers"].is_null(), "no init containers");
    assert_eq!(containers.len(), 1);
    let container = containers[0].clone();
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(
        security["capabilities"]["add"].is_null(),
        "no capability added"
    );
    for resource in ["cpu", "memory"] {
        for kind in ["requests", "limits"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "{kind}.{resource}"
            );
        }
    }

    // Volumes: the pod's, and the claims of a StatefulSet.
    let mut volumes: BTreeMap<String, Value> = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|volume| (str_at(volume, "name").to_owned(), volume.clone()))
        .collect();
    for claim in workload["spec"]["volumeClaimTemplates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = str_at(&claim["metadata"], "name").to_owned();
        let claimed = serde_json::json!({"persistentVolumeClaim": {"claimName": name}});
        volumes.insert(name, claimed);
    }
    for volume in volumes.values() {
        assert!(volume["hostPath"].is_null(), "no hostPath volume");
    }

    // The config file, from the ConfigMap the pod mounts.
    let config_mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| !volumes[str_at(m, "name")]["configMap"].is_null())
        .expect("the config is mounted");
    let config_map_name = str_at(&volumes[str_at(config_mount, "name")]["configMap"], "name");
    let config_map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == config_map_name)
        .unwrap_or_else(|| panic!("ConfigMap {config_map_name} is rendered"));
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config_path = match args.as_slice() {
        ["serve", "--config", path] => *path,
        other => panic!("the pod runs `serve --config FILE`, not {other:?}"),
    };
    let (config_dir, config_file) = config_path.rsplit_once('/').expect("a path");
    assert_eq!(config_dir, str_at(config_mount, "mountPath"));
    let config_text = str_at(&config_map["data"], config_file).to_owned();

    let pod = Pod {
        labels: template["metadata"]["labels"].clone(),
        spec,
        container,
        config_text,
        volumes,
    };
    check_mounts_and_paths(&pod);
    check_network(objects, workload, &pod);
    pod
}

/// Every mount is of a volume the pod has; Secrets and the config are read-only and mounted
/// whole (a `subPath` mount never sees a rotated key); every path the bridge is given is on a
/// mount, so that nothing is written to the read-only root filesystem.
fn check_mounts_and_paths(pod: &Pod) {
    let mut writable = Vec::new();
    let mut all = Vec::new();
    for m in pod.mounts() {
        let volume = &pod.volumes[str_at(m, "name")];
        let path = str_at(m, "mountPath");
        assert!(m["subPath"].is_null(), "{path} is mounted whole");
        if !volume["secret"].is_null() || !volume["configMap"].is_null() {
            assert_eq!(m["readOnly"], true, "{path} is read-only");
        } else {
            assert!(
                !volume["emptyDir"].is_null() || !volume["persistentVolumeClaim"].is_null(),
                "{path}: unexpected kind of volume {volume}"
            );
            writable.push(path.to_owned());
        }
        all.push(path.to_owned());
    }
    let on =
        |mounts: &[String], path: &str| mounts.iter().any(|m| path.starts_with(&format!("{m}/")));

    let config = pod.config();
    assert!(
        pod.env("PAGERBRIDGE_LISTEN").is_none(),
        "listen comes from the config file"
    );
    let backend = pod
        .env("PAGERBRIDGE_STORAGE__BACKEND")
        .or_else(|| config["storage"]["backend"].as_str())
        .unwrap_or("sqlite");
    let mut paths: Vec<String> = Vec::new();
    if backend == "sqlite" {
        let db = str_at(&config["storage"], "path");
        assert!(
            on(&writable, db),
            "the SQLite database {db} is on a writable volume"
        );
        paths.push(db.to_owned());
    }
    for target in config["targets"].as_array().expect("targets") {
        paths.push(str_at(target, "routing_key_file").to_owned());
    }
    for section in ["ingest", "admin", "fallback"] {
        if let Some(path) = config[section]["bearer_token_file"].as_str() {
            paths.push(path.to_owned());
        }
    }
    if let Some(path) = config["storage"]["url_file"].as_str() {
        paths.push(path.to_owned());
    }
    for (name, value) in pod.env_vars() {
        assert!(
            name != "PAGERBRIDGE_STORAGE__URL",
            "no database URL in the environment"
        );
        if value.starts_with('/') {
            paths.push(value.to_owned());
        }
    }
    for path in paths {
        assert!(on(&all, &path), "{path} is on a mounted volume");
    }
}

/// The config's listen address, the container port, the probes, the Service and the
/// PodDisruptionBudget agree.
fn check_network(objects: &[Value], workload: &Value, pod: &Pod) {
    let listen: SocketAddr = str_at(&pod.config(), "listen")
        .parse()
        .expect("listen is an address");
    assert!(
        listen.ip().is_unspecified(),
        "{listen}: reachable from outside the pod"
    );
    let ports = pod.container["ports"].as_array().expect("ports");
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    assert_eq!(http["containerPort"], listen.port());

    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &pod.container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe}");
    }

    let service = one(objects, "Service");
    let service_ports = service["spec"]["ports"].as_array().expect("ports");
    assert_eq!(service_ports.len(), 1);
    assert_eq!(service_ports[0]["targetPort"], "http");
    let selects_the_pod = |selector: &Value| {
        let selector = selector.as_object().expect("a selector");
        !selector.is_empty() && selector.iter().all(|(k, v)| pod.labels[k] == *v)
    };
    assert!(selects_the_pod(&service["spec"]["selector"]), "Service");
    let budget = one(objects, "PodDisruptionBudget");
    assert!(
        selects_the_pod(&budget["spec"]["selector"]["matchLabels"]),
        "PodDisruptionBudget"
    );
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert!(
        selects_the_pod(&workload["spec"]["selector"]["matchLabels"]),
        "the workload's selector"
    );

    // More than the bridge's drain on SIGTERM (delivery.shutdown_drain, 10 s by default).
    let grace = pod.spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(grace > 10, "{grace} s");
}

// ---------------------------------------------------------------------------------------------
// Running the pod

/// A directory standing for the pod's filesystem: each mount is `root/<mountPath>`, holding
/// what its volume would (the ConfigMap's files, the example Secrets' files, an empty
/// directory for an emptyDir or a claim).
struct PodFiles {
    root: tempfile::TempDir,
    mount_paths: Vec<String>,
}

/// What a run of the pod showed.
struct Served {
    /// The storage the bridge said it listens with (`… (SQLite)`, `… (PostgreSQL)`).
    storage: String,
}

impl PodFiles {
    /// Lays out the pod's volumes; `replaced` gives other values to some Secret files
    /// ((Secret, key) → value).
    fn lay_out(
        pod: &Pod,
        examples: &[Value],
        replaced: &BTreeMap<(String, String), String>,
    ) -> Self {
        let files = PodFiles {
            root: tempfile::tempdir().expect("temp dir"),
            mount_paths: pod
                .mounts()
                .map(|m| str_at(m, "mountPath").to_owned())
                .collect(),
        };
        for m in pod.mounts() {
            let dir = files.host_path(str_at(m, "mountPath"));
            std::fs::create_dir_all(&dir).expect("mount directory");
            let volume = &pod.volumes[str_at(m, "name")];
            if !volume["configMap"].is_null() {
                // The pod's only ConfigMap is its config file.
                let (_, file) = pod.container["args"][2]
                    .as_str()
                    .and_then(|path| path.rsplit_once('/'))
                    .expect("the config path");
                std::fs::write(dir.join(file), files.rewrite(&pod.config_text)).expect("config");
            } else if !volume["secret"].is_null() {
                let name = str_at(&volume["secret"], "secretName");
                let secret = examples
                    .iter()
                    .find(|s| s["metadata"]["name"] == name)
                    .unwrap_or_else(|| panic!("no example of the Secret {name}"));
                let mode = volume["secret"]["defaultMode"]
                    .as_u64()
                    .expect("defaultMode");
                for (key, value) in secret["stringData"].as_object().expect("stringData") {
                    let value = replaced
                        .get(&(name.to_owned(), key.clone()))
                        .map(String::as_str)
                        .or_else(|| value.as_str())
                        .expect("a string");
                    let path = dir.join(key);
                    std::fs::write(&path, value).expect("secret file");
                    common::set_mode(&path, u32::try_from(mode).expect("a mode"));
                }
            }
        }
        files
    }

    /// Where `path` of the pod is on this machine.
    fn host_path(&self, path: &str) -> PathBuf {
        self.root.path().join(path.trim_start_matches('/'))
    }

    /// `text` with every path on one of the pod's mounts moved to [`PodFiles::host_path`]. One
    /// pass, so a rewritten path is not rewritten again.
    fn rewrite(&self, text: &str) -> String {
        let mut mounts = self.mount_paths.clone();
        // The longest first, so that a mount inside another wins.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        let alternatives: Vec<String> = mounts.iter().map(|m| regex::escape(m)).collect();
        let pattern = format!(r#"(?m)(^|[\s"'=])({})(/|["'\s]|$)"#, alternatives.join("|"));
        let root = self.root.path().display().to_string();
        regex::Regex::new(&pattern)
            .expect("pattern")
            .replace_all(text, |caps: &regex::Captures<'_>| {
                format!("{}{root}{}{}", &caps[1], &caps[2], &caps[3])
            })
            .into_owned()
    }

    /// Runs the container's command, with its environment, over these files; it must start,
    /// answer every probe with 200, and exit cleanly on SIGTERM within the grace period. It
    /// listens on a free loopback port instead of the config's address (which the test checked),
    /// so that it can run beside other tests.
    async fn serve(&self, pod: &Pod) -> Served {
        let args: Vec<String> = pod.container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|arg| self.rewrite(arg.as_str().expect("a string")))
            .collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pagerbridge"));
        command.args(&args).current_dir(self.root.path());
        // Only the pod's PAGERBRIDGE_* variables (the rest, PATH or a coverage profile's
        // location, is this machine's business).
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PAGERBRIDGE_") {
                command.env_remove(name);
            }
        }
        for (name, value) in pod.env_vars() {
            command.env(name, self.rewrite(value));
        }
        // The API server the pod would reach with its ServiceAccount's token: a fake one here,
        // through KUBECONFIG, holding one Secret that the config's selector picks as a target.
        let api = FakeKubeApi::start().await;
        let secret_config = serde_json::json!({
            "name": "from-a-secret", "type": "pagerduty", "routing_key": SECRET_KEY,
        });
        api.put_secret(
            NAMESPACE,
            "pagerduty-from-a-secret",
            &[("publishing-target", "true"), ("type", "pagerduty")],
            &[("config", secret_config.to_string().as_bytes())],
        );
        let kubeconfig = api.kubeconfig(self.root.path(), NAMESPACE);
        command
            .env("KUBECONFIG", kubeconfig)
            .env("PAGERBRIDGE_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut process = Bridge::spawn(command).await;
        let (addr, storage) = (process.addr, process.storage());
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        assert!(
            metrics.contains("pagerbridge_targets{source=\"secret\"} 1\n"),
            "the labelled Secret became a target: {metrics}"
        );

        let http = reqwest::Client::new();
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let path = str_at(&pod.container[probe]["httpGet"], "path");
            let response = http
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .expect("the probe is answered");
            assert_eq!(response.status().as_u16(), 200, "{probe} {path}");
        }

        let grace = pod.spec["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        let status = process.terminate(Duration::from_secs(grace)).await;
        assert!(status.success(), "SIGTERM: exited with {status}");
        let logs = process.logs();
        assert!(
            !logs
                .iter()
                .any(|line| line.contains(FAKE_KEY) || line.contains(SECRET_KEY)),
            "no log line holds a routing key"
        );
        Served { storage }
    }
}

// ---------------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `1.95` → `[1, 95]`, for comparing versions.
fn version(text: &str) -> Vec<u32> {
    text.split('.')
        .map(|part| part.parse().unwrap_or_else(|_| panic!("version {text}")))
        .collect()
}
