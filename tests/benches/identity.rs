//! What a caller identity costs per call: the gateway signing a user's
//! identity (fresh, and reused for the same user and path) and a backend
//! verifying one (first sight, and seen before), against an HS256 token of
//! the same claims as the floor (the shared-key identity this replaced).
//!
//!   cargo bench -p csp-tests --bench identity
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failure report

use std::time::Instant;

use csp_kit::identity::keys::KeySet;
use csp_kit::identity::{IdentityArgs, Signer, UserCaller};
use csp_kit::roles::Role;
use csp_kit::service_name::ServiceName;

const N: usize = 20_000;

fn per_call(label: &str, n: usize, started: Instant) -> f64 {
    let micros = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{label:<58} {micros:>8.2} us/call");
    micros
}

fn main() {
    let keys = KeySet::generate().unwrap();
    let signer = Signer::new(keys.key(ServiceName::Gateway).clone());
    let verifier = IdentityArgs {
        identity_key: Some(keys.key(ServiceName::Catalog).to_config()),
        identity_trust: Some(keys.trust()),
        dev: false,
    }
    .resolve(ServiceName::Catalog)
    .unwrap()
    .verifier;
    let user = UserCaller {
        partner_id: uuid::Uuid::new_v4().into(),
        user_id: "bench-user".into(),
        display_name: "Bench User".into(),
        roles: [Role::SalesAgent].into_iter().collect(),
    };
    // Distinct paths defeat the reuse cache (the policy is not asked here).
    let paths: Vec<String> = (0..N)
        .map(|i| format!("/csp.catalog.v1.CatalogService/ListProducts{i}"))
        .collect();
    println!("caller identity cost, {N} calls each, one thread");
    let started = Instant::now();
    let tokens: Vec<_> = paths
        .iter()
        .map(|path| signer.mint_for_user(&user, path).unwrap())
        .collect();
    let sign = per_call("gateway signs a fresh user identity (EdDSA)", N, started);
    let path = "/csp.catalog.v1.CatalogService/ListProducts";
    let started = Instant::now();
    for _ in 0..N {
        std::hint::black_box(signer.mint_for_user(&user, path).unwrap());
    }
    let reuse = per_call(
        "gateway reuses one (same user and path, < 20 s)",
        N,
        started,
    );
    let started = Instant::now();
    for (token, path) in tokens.iter().zip(&paths) {
        std::hint::black_box(verifier.verify(token, path).unwrap());
    }
    let verify = per_call("backend verifies an identity it has not seen", N, started);
    // Seen before: the same identity on every call (a busy user and path).
    let started = Instant::now();
    for _ in 0..N {
        std::hint::black_box(verifier.verify(&tokens[0], &paths[0]).unwrap());
    }
    let seen = per_call("backend verifies one it has seen (cache)", N, started);

    // The floor: HS256 over the same kind of claims, as before.
    let secret = jsonwebtoken::EncodingKey::from_secret(b"bench-secret-0123456789abcdef0123456789");
    let decoding =
        jsonwebtoken::DecodingKey::from_secret(b"bench-secret-0123456789abcdef0123456789");
    let claims = serde_json::json!({
        "aud": "csp-internal", "exp": 4_000_000_000u64, "mth": path,
        "pid": user.partner_id.to_string(), "sub": user.user_id,
        "name": user.display_name, "roles": ["sales_agent"],
    });
    let started = Instant::now();
    let mut hs = String::new();
    for _ in 0..N {
        hs = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &secret).unwrap();
    }
    let hs_sign = per_call("floor: HS256 sign (the shared key it replaced)", N, started);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["csp-internal"]);
    let started = Instant::now();
    for _ in 0..N {
        std::hint::black_box(
            jsonwebtoken::decode::<serde_json::Value>(&hs, &decoding, &validation).unwrap(),
        );
    }
    let hs_verify = per_call("floor: HS256 verify", N, started);
    println!();
    println!(
        "per call on the hot path (reused + seen): {:.2} us, {:.2}x the HS256 floor ({:.2} us)",
        reuse + seen,
        (reuse + seen) / (hs_sign + hs_verify),
        hs_sign + hs_verify
    );
    println!(
        "per call with a new user or path (sign + verify): {:.2} us, {:.2}x the HS256 floor",
        sign + verify,
        (sign + verify) / (hs_sign + hs_verify)
    );
}
