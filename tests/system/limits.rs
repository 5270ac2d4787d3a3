//! One partner cannot hurt another (issue 13): oversized strings in every
//! field of every public RPC are refused call by call with INVALID_ARGUMENT
//! naming each field (before any lookup: the codec checks the documented
//! limits on the wire), with short messages, while another partner's calls
//! over the same gateway all succeed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use csp_kit::access;
use csp_kit::roles::Role;
use csp_proto::catalog::v1::{ListMarketsRequest, ListProductsRequest};
use csp_tests::{TestSystem, raw};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value};
use tonic::Code;
use tonic_types::StatusExt as _;

/// `method`'s request with every string field, at every depth, set to
/// `size` bytes (one element of each list), and the paths of those fields.
fn oversized(
    pool: &DescriptorPool,
    service: &str,
    method: &str,
    size: usize,
) -> (Vec<u8>, Vec<String>) {
    let service = pool.get_service_by_name(service).unwrap();
    let method = service.methods().find(|m| m.name() == method).unwrap();
    let mut paths = Vec::new();
    let message = fill(&method.input(), "", size, 0, &mut paths);
    (message.encode_to_vec(), paths)
}

fn fill(
    descriptor: &MessageDescriptor,
    prefix: &str,
    size: usize,
    depth: usize,
    paths: &mut Vec<String>,
) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    let mut oneofs_filled = std::collections::HashSet::new();
    for field in descriptor.fields() {
        if field.is_map() || depth > 4 {
            continue;
        }
        // One member of each oneof: setting another would clear it.
        if let Some(oneof) = field.containing_oneof()
            && !oneofs_filled.insert(oneof.full_name().to_owned())
        {
            continue;
        }
        let path = if field.is_list() {
            format!("{prefix}{}[0]", field.name())
        } else {
            format!("{prefix}{}", field.name())
        };
        let value = match field.kind() {
            Kind::String => {
                paths.push(path);
                Value::String("x".repeat(size))
            }
            Kind::Message(inner) if inner.package_name().starts_with("csp.") => {
                Value::Message(fill(&inner, &format!("{path}."), size, depth + 1, paths))
            }
            _ => continue,
        };
        if field.is_list() {
            message.set_field(&field, Value::List(vec![value]));
        } else {
            message.set_field(&field, value);
        }
    }
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_strings_fail_their_own_call_briefly_and_never_another_partners() {
    let system = TestSystem::start().await;
    let pool = DescriptorPool::decode(csp_proto::FILE_DESCRIPTOR_SET).unwrap();
    let methods = access::public_methods(csp_proto::FILE_DESCRIPTOR_SET).unwrap();

    // Another partner reads the catalog in a loop the whole time.
    let mut reader = system.catalog(&[Role::SalesAgent]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let loop_task = {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = reader
                    .list_products(ListProductsRequest {
                        market: "US".into(),
                        ..Default::default()
                    })
                    .await;
                if answer.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // The attacker holds every role, so every call gets past the gateway.
    let attacker = system.token_of(uuid::Uuid::new_v4(), &Role::ALL);
    let authorization = format!("Bearer {attacker}");
    let mut checked = 0;
    for size in [8 * 1024, 300 * 1024] {
        for method in &methods {
            let (body, fields) = oversized(&pool, &method.service, &method.method, size);
            let status = raw::call(
                system.gateway().await,
                &method.path,
                method.server_streaming,
                Some(&authorization),
                body,
            )
            .await;
            assert!(
                !matches!(
                    status.code(),
                    Code::Unavailable | Code::Internal | Code::Unknown
                ),
                "{} with {size}-byte strings: {:?} {}",
                method.path,
                status.code(),
                &status.message()[..status.message().len().min(200)]
            );
            if !fields.is_empty() {
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{} with {size}-byte strings: {}",
                    method.path,
                    &status.message()[..status.message().len().min(200)]
                );
                let details = status.get_error_details();
                let named: Vec<&str> = details
                    .bad_request()
                    .map(|b| {
                        b.field_violations
                            .iter()
                            .map(|v| v.field.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                assert!(!named.is_empty(), "{}: no field violations", method.path);
                // Every documented limit is below 300 KiB (the longest text,
                // 10,000 characters, is above 8 KiB).
                let expected = if size > 10_000 { fields.len() } else { 0 };
                for field in fields
                    .iter()
                    .take(expected.min(csp_proto::bounds::MAX_VIOLATIONS))
                {
                    assert!(
                        named.contains(&field.as_str()),
                        "{} with {size}-byte strings: {field} is not named in {named:?}",
                        method.path
                    );
                }
                checked += 1;
            }
            assert!(
                status.message().len() < 1024,
                "{} with {size}-byte strings repeats too much: {} bytes of message",
                method.path,
                status.message().len()
            );
            assert!(
                status.details().len() < 4096,
                "{} with {size}-byte strings: {} bytes of details",
                method.path,
                status.details().len()
            );
        }
    }
    assert!(
        checked >= 2 * 20,
        "only {checked} calls had string fields to refuse"
    );
    stop.store(true, Ordering::Relaxed);
    loop_task.await.unwrap();
    assert!(done.load(Ordering::Relaxed) > 0, "the reader made calls");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "another partner's calls failed while the oversized ones were refused"
    );
    // The gateway still serves.
    system
        .catalog(&[Role::SalesAgent])
        .await
        .list_markets(ListMarketsRequest {})
        .await
        .unwrap();
    system.stop().await;
}
