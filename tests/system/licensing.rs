//! Licensing through the gateway: software provisioned from orders, product
//! keys, download links that expire after two weeks or 50 downloads, the
//! race for the last downloads, revocation, roles, isolation, and secrets
//! that are neither stored in the clear nor logged.

use std::time::Duration;

use csp_kit::clock::{DAY, ManualClock, SECOND};
use csp_kit::roles::Role;
use csp_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use csp_proto::licensing::v1::{
    EntitlementStatus, GetKeysAndDownloadsRequest, ListSoftwareRequest, Software,
};
use csp_proto::ordering::v1::CancelSubscriptionRequest;
use csp_tests::{Bearer, TestSystem, http};
use sha2::Digest as _;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;
use uuid::Uuid;

pub(crate) type Licensing = LicensingServiceClient<InterceptedService<Channel, Bearer>>;

/// A customer with an order of Windows Server Datacenter, SQL Server and an
/// Azure reservation; returns (customer, order lines' subscription ids).
pub(crate) async fn bought(system: &TestSystem, domain: &str) -> (String, Vec<String>) {
    let (customer, order) = system
        .purchase(
            domain,
            &[
                "windows-server-datacenter-p1y",
                "sql-server-standard-p3y",
                "azure-reserved-vm-d2s-v3-p1y",
            ],
        )
        .await;
    (
        customer,
        order.lines.into_iter().map(|l| l.subscription_id).collect(),
    )
}

/// The customer's software once licensing has it (events arrive through
/// ordering's outbox).
pub(crate) async fn software(
    licensing: &mut Licensing,
    customer: &str,
    expected: usize,
) -> Vec<Software> {
    for _ in 0..500 {
        let found = licensing
            .list_software(ListSoftwareRequest {
                customer_tenant_id: customer.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .software;
        if found.len() == expected {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("licensing never listed {expected} products for {customer}");
}

pub(crate) fn selection(customer: &str, subscription: &str) -> GetKeysAndDownloadsRequest {
    GetKeysAndDownloadsRequest {
        customer_tenant_id: customer.into(),
        subscription_id: subscription.into(),
        version: "2022".into(),
        language: "en-US".into(),
        file_type: "iso-x64".into(),
    }
}

fn is_product_key(key: &str) -> bool {
    let groups: Vec<&str> = key.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| b"BCDFGHJKMPQRTVWXY2346789".contains(&b)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn software_is_listed_and_keys_and_links_are_stable() {
    let system = TestSystem::start().await;
    let (customer, subscriptions) = bought(&system, "software.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    let listed = software(&mut licensing, &customer, 2).await;
    let products: Vec<&str> = listed.iter().map(|s| s.product_id.as_str()).collect();
    assert_eq!(
        products,
        ["sql-server-standard", "windows-server-datacenter"],
        "by title, without the reservation: it has no software"
    );
    let options = listed[1].download_options.clone().unwrap();
    assert!(options.versions.contains(&"2022".to_owned()));
    assert!(options.file_types.iter().any(|f| f.id == "iso-x64"));
    assert!(
        listed
            .iter()
            .all(|s| s.status == EntitlementStatus::Active as i32)
    );

    let first = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner();
    assert!(is_product_key(&first.product_key), "{}", first.product_key);
    let link = first.download_link.clone().unwrap();
    let prefix = format!("http://{}/download/", system.addresses.gateway_http);
    assert!(link.url.starts_with(&prefix), "{}", link.url);
    assert!(
        link.url.len() >= prefix.len() + 43,
        "the token carries at least 128 bits"
    );
    assert_eq!(link.downloads_remaining, 50);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expires = link.expire_time.unwrap().seconds;
    assert!(
        (now + 14 * 86_400 - expires).abs() < 60,
        "expires two weeks from now"
    );

    // The same key and the same link while it works.
    let again = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    // Another version has its own key; another language its own link.
    let mut other = selection(&customer, &subscriptions[0]);
    other.version = "2019".into();
    let other = licensing
        .get_keys_and_downloads(other)
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.product_key, first.product_key);
    let mut german = selection(&customer, &subscriptions[0]);
    german.language = "de-DE".into();
    let german = licensing
        .get_keys_and_downloads(german)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(german.product_key, first.product_key);
    assert_ne!(german.download_link.unwrap().url, link.url);

    // The link shows the file's size and SHA-256: the demo placeholder's.
    let key =
        csp_content::ObjectKey::software("windows-server-datacenter", "2022", "en-US", "iso-x64")
            .unwrap();
    assert_eq!(link.file_sha256, csp_content::placeholder_sha256(&key));
    assert_eq!(
        link.file_size_bytes,
        csp_content::placeholder(&key).len() as u64
    );

    // A download redirects to a URL signed for the file, and counts.
    let answer = http::get(&link.url).await;
    assert_eq!(answer.status, 302, "{answer:?}");
    let location = answer.header("location").unwrap().to_owned();
    assert!(
        location.starts_with(&format!(
            "http://{}/files/software/windows-server-datacenter/2022/en-US/iso-x64?expires=",
            system.addresses.gateway_http
        )),
        "{location}"
    );
    // Following it gives the file, whose SHA-256 is the link's.
    let file = http::get(&location).await;
    assert_eq!(file.status, 200, "{file:?}");
    assert_eq!(
        csp_content::hex(&sha2::Sha256::digest(file.body.as_bytes())),
        link.file_sha256
    );
    let after = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.download_link.unwrap().downloads_remaining, 49);

    // Unknown and malformed tokens.
    let unknown = http::get(&format!("{prefix}{}", "A".repeat(43))).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("does not exist"), "{}", unknown.body);
    assert_eq!(http::get(&format!("{prefix}short")).await.status, 404);
    // A token longer than any link's, or with characters no token has, is
    // unknown too (licensing is not asked; it would refuse the length).
    let long = http::get(&format!("{prefix}{}", "A".repeat(4000))).await;
    assert_eq!(long.status, 404);
    assert!(long.body.contains("does not exist"), "{}", long.body);
    assert_eq!(http::get(&format!("{prefix}a.b")).await.status, 404);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_outside_the_options_is_refused_naming_the_field() {
    let system = TestSystem::start().await;
    let (customer, subscriptions) = bought(&system, "selection.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let mut bad = selection(&customer, &subscriptions[0]);
    bad.version = "2003".into();
    bad.file_type = "floppy".into();
    let status = licensing.get_keys_and_downloads(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["version", "file_type"]);
    let mut bad = selection(&customer, "not-a-uuid");
    bad.subscription_id = "not-a-uuid".into();
    assert_eq!(
        licensing
            .get_keys_and_downloads(bad)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // The reservation has no software.
    let status = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[2]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_agents_get_keys_and_other_partners_find_nothing() {
    let system = TestSystem::start().await;
    let (customer, subscriptions) = bought(&system, "roles.example.com").await;
    let mut admin = system.licensing(&[Role::AdminAgent]).await;
    software(&mut admin, &customer, 2).await;
    for role in [Role::SalesAgent, Role::HelpdeskAgent, Role::GlobalAdmin] {
        let mut other = system.licensing(&[role]).await;
        let status = other
            .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
        let status = other
            .list_software(ListSoftwareRequest {
                customer_tenant_id: customer.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
    }
    let mut stranger = LicensingServiceClient::with_interceptor(
        system.gateway().await,
        Bearer::new(&system.token_of(Uuid::new_v4(), &[Role::AdminAgent])),
    );
    let status = stranger
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = stranger
        .list_software(ListSoftwareRequest {
            customer_tenant_id: customer.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // The right partner but another customer: not found either.
    let status = admin
        .get_keys_and_downloads(selection(&Uuid::new_v4().to_string(), &subscriptions[0]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_expires_at_two_weeks_and_a_new_one_is_issued() {
    let start = 1_800_000_000 * SECOND;
    let clock = ManualClock::new(start);
    let system = TestSystem::start_with_clock(clock.clone()).await;
    let (customer, subscriptions) = bought(&system, "expiry.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let first = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner();
    let url = first.download_link.clone().unwrap().url;
    assert_eq!(
        first.download_link.unwrap().expire_time.unwrap().seconds,
        1_800_000_000 + 14 * 86_400
    );

    clock.set(start + 14 * DAY - SECOND);
    assert_eq!(http::get(&url).await.status, 302);
    clock.set(start + 14 * DAY);
    let gone = http::get(&url).await;
    assert_eq!(gone.status, 410);
    assert!(gone.body.contains("expired"), "{}", gone.body);
    assert!(
        gone.body.contains("partner can enable a new link"),
        "{}",
        gone.body
    );

    let renewed = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        renewed.product_key, first.product_key,
        "the key never changes"
    );
    let new_link = renewed.download_link.unwrap();
    assert_ne!(new_link.url, url);
    assert_eq!(new_link.downloads_remaining, 50);
    assert_eq!(
        new_link.expire_time.unwrap().seconds,
        1_800_000_000 + 28 * 86_400
    );
    assert_eq!(http::get(&new_link.url).await.status, 302);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_fifty_of_five_hundred_racing_downloads_succeed_across_two_replicas() {
    let system = TestSystem::start().await;
    let (customer, subscriptions) = bought(&system, "race.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let link = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner()
        .download_link
        .unwrap();

    // A second licensing replica on the same database, behind a second gateway.
    let replica = csp_tests::Replica::licensing_and_gateway(&system).await;
    let token = link.url.rsplit('/').next().unwrap().to_owned();
    let urls = [
        link.url.clone(),
        format!("http://{}/download/{token}", replica.gateway_http),
    ];
    let mut tasks = Vec::new();
    for i in 0..500 {
        let url = urls[i % 2].clone();
        tasks.push(tokio::spawn(async move { http::get(&url).await }));
    }
    let (mut redirected, mut gone) = (0, 0);
    let mut locations = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap();
        match answer.status {
            302 => {
                redirected += 1;
                locations.push(answer.header("location").unwrap().to_owned());
            }
            410 => {
                assert!(answer.body.contains("50 downloads"), "{}", answer.body);
                gone += 1;
            }
            other => panic!("unexpected status {other}: {}", answer.body),
        }
    }
    assert_eq!((redirected, gone), (50, 450));
    // Every redirect's signed URL gives the file, through either gateway.
    let expected = csp_content::placeholder(
        &csp_content::ObjectKey::software("windows-server-datacenter", "2022", "en-US", "iso-x64")
            .unwrap(),
    );
    let files: Vec<_> = locations
        .into_iter()
        .map(|url| tokio::spawn(async move { http::get(&url).await }))
        .collect();
    for file in files {
        let file = file.await.unwrap();
        assert_eq!(file.status, 200, "{file:?}");
        assert_eq!(file.body.as_bytes(), &expected[..]);
    }

    // Used up, the next call issues a new link.
    let renewed = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner()
        .download_link
        .unwrap();
    assert_ne!(renewed.url, link.url);
    assert_eq!(renewed.downloads_remaining, 50);
    replica.stop().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_subscription_loses_its_keys_and_links() {
    let system = TestSystem::start().await;
    let (customer, subscriptions) = bought(&system, "revoke.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let issued = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner();
    let url = issued.download_link.unwrap().url;
    assert_eq!(http::get(&url).await.status, 302);

    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    let paid = ordering
        .get_subscription(csp_proto::ordering::v1::GetSubscriptionRequest {
            subscription_id: subscriptions[0].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap()
        .amount_paid;
    system
        .ordering_internal()
        .await
        .cancel_subscription(CancelSubscriptionRequest {
            requested_time: None,
            partner_id: system.partner.to_string(),
            subscription_id: subscriptions[0].clone(),
            refund: paid,
            reason: "not needed".into(),
            ticket_id: "ticket".into(),
        })
        .await
        .unwrap();

    // The event reaches licensing through the outbox.
    let mut answer = http::get(&url).await;
    for _ in 0..300 {
        if answer.status == 410 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = http::get(&url).await;
    }
    assert_eq!(answer.status, 410, "{answer:?}");
    assert!(answer.body.contains("cancelled"), "{}", answer.body);
    let status = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("cancelled"),
        "{}",
        status.message()
    );
    let listed = software(&mut licensing, &customer, 2).await;
    for item in listed {
        let expected = if item.subscription_id == subscriptions[0] {
            EntitlementStatus::Revoked
        } else {
            EntitlementStatus::Active
        };
        assert_eq!(item.status, expected as i32, "{}", item.product_id);
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_tokens_are_neither_stored_in_the_clear_nor_logged() {
    let system = TestSystem::start().await;
    let (customer, subscriptions) = bought(&system, "secrets.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let mut secrets = Vec::new();
    for (subscription, version) in [(&subscriptions[0], "2022"), (&subscriptions[1], "2019")] {
        let mut request = selection(&customer, subscription);
        request.version = version.into();
        let issued = licensing
            .get_keys_and_downloads(request)
            .await
            .unwrap()
            .into_inner();
        let url = issued.download_link.unwrap().url;
        assert_eq!(http::get(&url).await.status, 302);
        secrets.push(issued.product_key);
        secrets.push(url.rsplit('/').next().unwrap().to_owned());
    }

    // A copy of the database holds no key and no token in the clear.
    let db = system.service_db("licensing").await;
    let keys: Vec<(String,)> = csp_store::on_db!(&db, pool => csp_tests::sqlx::query_as(
        "SELECT sealed_key FROM product_keys"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    let links: Vec<(String, String)> = csp_store::on_db!(&db, pool => csp_tests::sqlx::query_as(
        "SELECT token_hash, sealed_token FROM download_links"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(links.len(), 2);
    let stored: String = keys
        .iter()
        .map(|k| k.0.clone())
        .chain(links.iter().flat_map(|l| [l.0.clone(), l.1.clone()]))
        .collect::<Vec<_>>()
        .join("\n");
    for secret in &secrets {
        assert!(
            !stored.contains(secret.as_str()),
            "a secret is stored in the clear"
        );
        let first_group = &secret[..5];
        assert!(
            !stored.contains(&format!("{first_group}-")),
            "part of a key is stored in the clear"
        );
    }
    db.close().await;

    // Nor were they logged, though the calls were.
    let logs = csp_tests::logs::captured();
    assert!(
        logs.contains("keys and download link handed out"),
        "the log capture works"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a product key or link token was logged"
        );
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_checks_a_link_without_spending_a_download_or_recording_one() {
    use csp_proto::audit::v1::{ActivityType, ListActivityRequest};
    let system = TestSystem::start().await;
    let (customer, subscriptions) = bought(&system, "previewed.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let remaining = |licensing: &mut Licensing| {
        let mut licensing = licensing.clone();
        let request = selection(&customer, &subscriptions[0]);
        async move {
            licensing
                .get_keys_and_downloads(request)
                .await
                .unwrap()
                .into_inner()
                .download_link
                .unwrap()
        }
    };
    let link = remaining(&mut licensing).await;
    assert_eq!(link.downloads_remaining, 50);

    // A mail scanner and a link previewer look at the link three times.
    for _ in 0..3 {
        let answer = http::head(&link.url).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.header("location"),
            None,
            "HEAD never reveals the file"
        );
        assert!(
            answer.body.is_empty(),
            "HEAD has no body: {:?}",
            answer.body
        );
    }
    assert_eq!(remaining(&mut licensing).await.downloads_remaining, 50);

    // The customer downloads once.
    assert_eq!(http::get(&link.url).await.status, 302);
    assert_eq!(remaining(&mut licensing).await.downloads_remaining, 49);

    // Exactly one download reached the activity log. The HEADs came first in
    // the subscription's stream, so had they been recorded they would be
    // there by the time the download is.
    let mut audit = system.audit(&[Role::GlobalAdmin]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let mut downloads = 0;
    for _ in 0..200 {
        downloads = audit
            .list_activity(ListActivityRequest {
                start_time: at(now - 3600),
                end_time: at(now + 3600),
                r#type: ActivityType::SoftwareDownloaded as i32,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .activities
            .len();
        if downloads > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(downloads, 1, "HEAD recorded no download");

    // HEAD says what GET would about unknown and malformed tokens.
    let prefix = format!("http://{}/download/", system.addresses.gateway_http);
    assert_eq!(
        http::head(&format!("{prefix}{}", "A".repeat(43)))
            .await
            .status,
        404
    );
    assert_eq!(http::head(&format!("{prefix}short")).await.status, 404);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_an_expired_link_is_gone() {
    let clock = ManualClock::new(1_800_000_000 * SECOND);
    let system = TestSystem::start_with_clock(clock.clone()).await;
    let (customer, subscriptions) = bought(&system, "gone-head.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let url = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner()
        .download_link
        .unwrap()
        .url;
    clock.advance(14 * DAY);
    assert_eq!(http::head(&url).await.status, 410, "expired");
    assert_eq!(http::get(&url).await.status, 410);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_guessing_tokens_is_refused_for_a_while_and_spends_no_download() {
    let system = TestSystem::start().await;
    let (customer, subscriptions) = bought(&system, "guessed.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let url = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner()
        .download_link
        .unwrap()
        .url;
    let prefix = format!("http://{}/download/", system.addresses.gateway_http);
    let allowed = csp_gateway::downloads::UNKNOWN_TOKENS_PER_MINUTE;
    for n in 0..allowed {
        let guess = format!("{prefix}{}{n:08}", "G".repeat(35));
        assert_eq!(http::get(&guess).await.status, 404, "guess {n}");
    }
    // One more unknown token spends the allowance; from then on, 429.
    let last = format!("{prefix}{}", "H".repeat(43));
    assert_eq!(http::get(&last).await.status, 404);
    let refused = http::get(&last).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    assert_eq!(http::head(&last).await.status, 429);
    // (Everything here comes from one address: a real link is refused too
    // until the allowance refills; counted downloads are untouched.)
    assert_eq!(http::get(&url).await.status, 429);
    let link = licensing
        .get_keys_and_downloads(selection(&customer, &subscriptions[0]))
        .await
        .unwrap()
        .into_inner()
        .download_link
        .unwrap();
    assert_eq!(link.downloads_remaining, 50);
    system.stop().await;
}
