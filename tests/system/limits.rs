//! One partner cannot hurt another (issue 13): oversized strings in every
//! field of every public RPC are refused call by call, with short messages,
//! while another partner's calls over the same gateway all succeed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use csp_kit::access;
use csp_kit::roles::Role;
use csp_proto::catalog::v1::{ListMarketsRequest, ListProductsRequest};
use csp_tests::{TestSystem, raw};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, Value};
use tonic::Code;

/// Every top-level string field of `method`'s request set to `size` bytes.
fn oversized(pool: &DescriptorPool, service: &str, method: &str, size: usize) -> Vec<u8> {
    let service = pool.get_service_by_name(service).unwrap();
    let method = service.methods().find(|m| m.name() == method).unwrap();
    let input = method.input();
    let mut message = DynamicMessage::new(input.clone());
    for field in input.fields() {
        if field.is_list() || field.is_map() {
            continue;
        }
        if matches!(field.kind(), Kind::String) {
            message.set_field(&field, Value::String("x".repeat(size)));
        }
    }
    message.encode_to_vec()
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
    for size in [8 * 1024, 300 * 1024] {
        for method in &methods {
            let body = oversized(&pool, &method.service, &method.method, size);
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
