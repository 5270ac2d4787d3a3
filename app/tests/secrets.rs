//! A service started without its keys, or with the public development
//! values, refuses to start and names the variable; `--dev` lets development
//! values through. `csp keys generate` prints keys the services accept.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::{Command, Output};

const CSP: &str = env!("CARGO_BIN_EXE_csp");

/// Runs `csp ARGS` with only `env` set among the CSP_* variables, on free
/// ports and a scratch data directory; expects it to exit on its own.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_for(args, env, 20)
}

/// The same, killed after `seconds` if it has not exited.
fn run_for(args: &[&str], env: &[(&str, &str)], seconds: u64) -> Output {
    let dir = std::env::temp_dir().join(format!("csp-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(CSP);
    command
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CSP_DATA_DIR", &dir)
        .env("CSP_HTTP_LISTEN", "127.0.0.1:0");
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A refusal is immediate; a service that starts is stopped (SIGTERM)
    // after `seconds`.
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let output = child.wait_with_output().unwrap();
    drop(killer);
    let _ = std::fs::remove_dir_all(&dir);
    output
}

fn refused(output: &Output, variable: &str, reason: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started: {stderr}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(variable) && stderr.contains(reason),
        "expected {variable} and {reason:?} in: {stderr}"
    );
}

/// The development values each service knows.
const DEV_JWT: &str = "csp-development-jwt-secret-change-me";
const DEV_LICENSING: &str = "csp-development-licensing-key-change-me";
const DEV_AUDIT: &str = "csp-development-audit-key-change-me";

/// `keys generate` output (env format) for one service: its variables.
fn generated() -> std::collections::HashMap<String, Vec<(String, String)>> {
    let output = Command::new(CSP)
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let mut by_service = std::collections::HashMap::new();
    let mut service = "all".to_owned();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("# ")
            && !name.contains(' ')
        {
            service = name.to_owned();
        } else if let Some((name, value)) = line.split_once('=')
            && !line.starts_with('#')
        {
            by_service
                .entry(service.clone())
                .or_insert_with(Vec::new)
                .push((name.to_owned(), value.to_owned()));
        }
    }
    by_service
}

#[test]
fn every_service_refuses_to_start_without_its_identity_key() {
    for service in [
        "gateway",
        "catalog",
        "ordering",
        "licensing",
        "audit",
        "support",
    ] {
        let output = run(&[service], &[]);
        let expected = match service {
            // Checked before the identity: the service's own secret.
            "licensing" => "CSP_LICENSING_KEY",
            "audit" => "CSP_AUDIT_KEY",
            _ => "CSP_IDENTITY_KEY",
        };
        refused(&output, expected, "is not set");
    }
}

#[test]
fn development_values_are_refused_unless_dev() {
    let keys = generated();
    let trust = &keys["all"][0].1;
    let key_of = |service: &str| {
        keys[service]
            .iter()
            .find(|(name, _)| name == "CSP_IDENTITY_KEY")
            .map(|(_, value)| value.clone())
            .unwrap()
    };
    // Licensing and audit with fresh identity keys but the public secret.
    let licensing_key = key_of("licensing");
    let output = run(
        &["licensing"],
        &[
            ("CSP_IDENTITY_KEY", &licensing_key),
            ("CSP_IDENTITY_TRUST", trust),
            ("CSP_LICENSING_KEY", DEV_LICENSING),
        ],
    );
    refused(&output, "CSP_LICENSING_KEY", "public development value");
    let audit_key = key_of("audit");
    let output = run(
        &["audit"],
        &[
            ("CSP_IDENTITY_KEY", &audit_key),
            ("CSP_IDENTITY_TRUST", trust),
            ("CSP_AUDIT_KEY", DEV_AUDIT),
        ],
    );
    refused(&output, "CSP_AUDIT_KEY", "public development value");
    let output = run(
        &["audit"],
        &[
            ("CSP_IDENTITY_KEY", &audit_key),
            ("CSP_IDENTITY_TRUST", trust),
            ("CSP_AUDIT_KEY", "short-secret-1234567"),
        ],
    );
    refused(&output, "CSP_AUDIT_KEY", "shorter than 32");
    // The gateway with its fresh key: development (HS256) tokens only with
    // --dev, and without them an identity provider is required.
    let gateway_key = key_of("gateway");
    let output = run(
        &["gateway"],
        &[
            ("CSP_IDENTITY_KEY", &gateway_key),
            ("CSP_IDENTITY_TRUST", trust),
            ("CSP_JWT_SECRET", DEV_JWT),
        ],
    );
    refused(&output, "CSP_JWT_SECRET", "only with --dev");
    let output = run(
        &["gateway"],
        &[
            ("CSP_IDENTITY_KEY", &gateway_key),
            ("CSP_IDENTITY_TRUST", trust),
        ],
    );
    refused(&output, "CSP_OIDC_ISSUERS", "is not set");
    // No identity key given: development keys only with --dev.
    let output = run(&["catalog"], &[("CSP_IDENTITY_TRUST", trust)]);
    refused(&output, "CSP_IDENTITY_KEY", "is not set");
}

#[test]
fn with_dev_the_development_values_start() {
    let output = run_for(
        &["licensing", "--dev"],
        &[("CSP_LICENSING_KEY", DEV_LICENSING)],
        5,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("serving"), "{text}");
}

#[test]
fn licensing_refuses_to_start_without_its_content_store_and_signing_key() {
    let keys = generated();
    let trust = keys["all"][0].1.clone();
    let licensing = &keys["licensing"];
    let var = |name: &str| {
        licensing
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let (identity, sealing, signing) = (
        var("CSP_IDENTITY_KEY"),
        var("CSP_LICENSING_KEY"),
        var("CSP_CONTENT_SIGNING_KEY"),
    );
    let base = [
        ("CSP_IDENTITY_KEY", identity.as_str()),
        ("CSP_IDENTITY_TRUST", trust.as_str()),
        ("CSP_LICENSING_KEY", sealing.as_str()),
    ];
    let output = run(&["licensing"], &base);
    refused(&output, "CSP_CONTENT_STORE", "is not set");
    let store = format!(
        "file://{}",
        std::env::temp_dir()
            .join(format!("csp-content-{}", uuid::Uuid::new_v4().simple()))
            .display()
    );
    let with_store: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .chain([("CSP_CONTENT_STORE", store.as_str())])
        .collect();
    let output = run(&["licensing"], &with_store);
    refused(&output, "CSP_CONTENT_SIGNING_KEY", "is not set");
    let with_dev_key: Vec<(&str, &str)> = with_store
        .iter()
        .copied()
        .chain([(
            "CSP_CONTENT_SIGNING_KEY",
            "csp-development-content-signing-key-change-me",
        )])
        .collect();
    let output = run(&["licensing"], &with_dev_key);
    refused(
        &output,
        "CSP_CONTENT_SIGNING_KEY",
        "public development value",
    );
    let complete: Vec<(&str, &str)> = with_store
        .iter()
        .copied()
        .chain([("CSP_CONTENT_SIGNING_KEY", signing.as_str())])
        .collect();
    let output = run(&["licensing"], &complete);
    refused(&output, "CSP_CONTENT_PUBLIC_URL", "is not set");
}
