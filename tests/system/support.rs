//! Support tickets and the refund workflow through the gateway.

use std::time::Duration;

use csp_kit::clock::{DAY, ManualClock, SECOND};
use csp_kit::roles::Role;
use csp_proto::licensing::v1::{GetKeysAndDownloadsRequest, ListSoftwareRequest};
use csp_proto::ordering::v1::{GetSubscriptionRequest, Order, SubscriptionStatus};
use csp_proto::support::v1::support_service_client::SupportServiceClient;
use csp_proto::support::v1::{
    AddCommentRequest, AttachmentUpload, CloseTicketRequest, Contact, CreateTicketRequest,
    GetAttachmentRequest, GetTicketRequest, Impact, IssueType, ListTicketsRequest, Ticket,
    TicketStatus, refund_request,
};
use csp_tests::{Bearer, Instance, TestSystem, connect, http};
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

pub(crate) fn plain_ticket() -> CreateTicketRequest {
    CreateTicketRequest {
        issue_type: IssueType::Technical as i32,
        impact: Impact::Minimal as i32,
        title: "Download stalls".into(),
        description: "The ISO stops at 40%.".into(),
        contact: csp_tests::contact(),
        refund: None,
        attachments: vec![],
        request_id: Uuid::new_v4().to_string(),
    }
}

fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

async fn settled(system: &TestSystem, ticket: &str) -> Ticket {
    let mut support = system.support(&[Role::AdminAgent]).await;
    for _ in 0..600 {
        let t = support
            .get_ticket(GetTicketRequest {
                ticket_id: ticket.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        if t.status != TicketStatus::Submitted as i32 {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("ticket {ticket} never settled");
}

fn total(order: &Order) -> i64 {
    order.total.as_ref().unwrap().minor_units
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eligible_refund_by_order_cancels_everything_and_revokes_keys_and_links() {
    let system = TestSystem::start().await;
    let (customer, order) = system
        .purchase(
            "refund.example.com",
            &["windows-server-datacenter-p1y", "sql-server-standard-p1y"],
        )
        .await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    let mut link = None;
    for _ in 0..300 {
        let listed = licensing
            .list_software(ListSoftwareRequest {
                customer_tenant_id: customer.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .software;
        if listed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keys = GetKeysAndDownloadsRequest {
        customer_tenant_id: customer.clone(),
        subscription_id: order.lines[0].subscription_id.clone(),
        version: "2022".into(),
        language: "en-US".into(),
        file_type: "iso-x64".into(),
    };
    if let Ok(issued) = licensing.get_keys_and_downloads(keys.clone()).await {
        link = issued.into_inner().download_link.map(|l| l.url);
    }
    let link = link.expect("keys before the refund");
    assert_eq!(http::get(&link).await.status, 302);

    // By domain name and order id, a partial amount spread over both lines.
    let mut support = system.support(&[Role::AdminAgent]).await;
    let requested = total(&order) - 100;
    let ticket = support
        .create_ticket(csp_tests::refund_ticket(
            refund_request::Customer::CustomerDomainName("refund.example.com".into()),
            refund_request::Target::OrderId(order.id.clone()),
            requested,
        ))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(ticket.status, TicketStatus::Submitted as i32);
    let done = settled(&system, &ticket.id).await;
    assert_eq!(
        done.status,
        TicketStatus::Resolved as i32,
        "{}",
        done.rejection_reason
    );
    assert_eq!(done.refunded_amount.unwrap().minor_units, requested);

    let mut ordering = system.ordering(&[Role::AdminAgent]).await;
    for line in &order.lines {
        let s = ordering
            .get_subscription(GetSubscriptionRequest {
                subscription_id: line.subscription_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .subscription
            .unwrap();
        assert_eq!(s.status, SubscriptionStatus::Cancelled as i32);
    }
    let status = licensing.get_keys_and_downloads(keys).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let gone = http::get(&link).await;
    assert_eq!(gone.status, 410, "{gone:?}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_checked_at_once_and_nothing_is_stored_when_they_fail() {
    let start = 1_790_000_000 * SECOND;
    let clock = ManualClock::new(start);
    let system = TestSystem::start_with_clock(clock.clone()).await;
    let (customer, order) = system
        .purchase("checks.example.com", &["windows-server-standard-p1y"])
        .await;
    let subscription = order.lines[0].subscription_id.clone();
    let mut support = system.support(&[Role::AdminAgent]).await;
    let by_tenant = || refund_request::Customer::CustomerTenantId(customer.clone());
    let sub = || refund_request::Target::SubscriptionId(subscription.clone());

    // More than was paid.
    let status = support
        .create_ticket(csp_tests::refund_ticket(
            by_tenant(),
            sub(),
            total(&order) + 1,
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["refund.requested_amount.minor_units"]);
    // Another currency.
    let mut euros = csp_tests::refund_ticket(by_tenant(), sub(), 100);
    euros
        .refund
        .as_mut()
        .unwrap()
        .requested_amount
        .as_mut()
        .unwrap()
        .currency_code = "EUR".into();
    assert_eq!(
        fields(&support.create_ticket(euros).await.unwrap_err()),
        ["refund.requested_amount.currency_code"]
    );
    // Unknown customer, unknown subscription, another customer's order.
    let status = support
        .create_ticket(csp_tests::refund_ticket(
            refund_request::Customer::CustomerTenantId(Uuid::new_v4().to_string()),
            sub(),
            100,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = support
        .create_ticket(csp_tests::refund_ticket(
            by_tenant(),
            refund_request::Target::SubscriptionId(Uuid::new_v4().to_string()),
            100,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let (_, other_order) = system
        .purchase("other.example.com", &["sql-server-standard-p1y"])
        .await;
    let status = support
        .create_ticket(csp_tests::refund_ticket(
            by_tenant(),
            refund_request::Target::OrderId(other_order.id),
            100,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // The 60-day boundary.
    clock.set(start + 60 * DAY);
    let status = support
        .create_ticket(csp_tests::refund_ticket(by_tenant(), sub(), 100))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("2026-09-21T14:13:20Z"),
        "purchase date: {}",
        status.message()
    );
    assert!(
        status.message().contains("2026-11-20T14:13:20Z"),
        "deadline: {}",
        status.message()
    );
    let stored = support
        .list_tickets(ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert!(stored.is_empty(), "a refused refund stored a ticket");

    clock.set(start + 60 * DAY - SECOND);
    let ticket = support
        .create_ticket(csp_tests::refund_ticket(by_tenant(), sub(), total(&order)))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let done = settled(&system, &ticket.id).await;
    assert_eq!(
        done.status,
        TicketStatus::Resolved as i32,
        "{}",
        done.rejection_reason
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_agents_file_refunds_and_sales_agents_file_no_tickets() {
    let system = TestSystem::start().await;
    let (customer, order) = system
        .purchase(
            "roles-support.example.com",
            &["windows-server-standard-p1y"],
        )
        .await;
    let refund = csp_tests::refund_ticket(
        refund_request::Customer::CustomerTenantId(customer),
        refund_request::Target::OrderId(order.id),
        100,
    );
    for role in [Role::HelpdeskAgent, Role::GlobalAdmin] {
        let mut support = system.support(&[role]).await;
        let status = support.create_ticket(refund.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
        assert!(
            status.message().contains("admin agent"),
            "{}",
            status.message()
        );
        support.create_ticket(plain_ticket()).await.unwrap();
    }
    let status = system
        .support(&[Role::SalesAgent])
        .await
        .create_ticket(plain_ticket())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_completes_when_licensing_comes_back() {
    let system = TestSystem::start_without_licensing().await;
    let (customer, order) = system
        .purchase(
            "outage-support.example.com",
            &["windows-server-datacenter-p3y"],
        )
        .await;
    let mut support = system.support(&[Role::AdminAgent]).await;
    let ticket = support
        .create_ticket(csp_tests::refund_ticket(
            refund_request::Customer::CustomerTenantId(customer.clone()),
            refund_request::Target::OrderId(order.id.clone()),
            total(&order),
        ))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    // Ordering cancels, but licensing is down: the ticket waits.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let waiting = support
        .get_ticket(GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(waiting.status, TicketStatus::Submitted as i32);

    let licensing_instance = Instance::licensing(&system, system.addresses.licensing).await;
    let done = settled(&system, &ticket.id).await;
    assert_eq!(
        done.status,
        TicketStatus::Resolved as i32,
        "{}",
        done.rejection_reason
    );
    // The entitlement is revoked and keys are refused.
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    let mut revoked = false;
    for _ in 0..300 {
        let listed = licensing
            .list_software(ListSoftwareRequest {
                customer_tenant_id: customer.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .software;
        if listed.len() == 1
            && listed[0].status == csp_proto::licensing::v1::EntitlementStatus::Revoked as i32
        {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(revoked);
    let status = licensing
        .get_keys_and_downloads(GetKeysAndDownloadsRequest {
            customer_tenant_id: customer,
            subscription_id: order.lines[0].subscription_id.clone(),
            version: "2022".into(),
            language: "en-US".into(),
            file_type: "iso-x64".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    licensing_instance.stop().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_validate_keep_attachments_and_are_idempotent() {
    let system = TestSystem::start().await;
    let mut support = system.support(&[Role::HelpdeskAgent]).await;

    let mut bad = plain_ticket();
    bad.contact = Some(Contact {
        name: "".into(),
        email: "not-an-email".into(),
        phone: "555-0100".into(),
    });
    assert_eq!(
        fields(&support.create_ticket(bad.clone()).await.unwrap_err()),
        ["contact.name", "contact.email", "contact.phone"]
    );
    // A title past its documented length is refused before anything else is
    // looked at.
    bad.title = "x".repeat(201);
    assert_eq!(
        fields(&support.create_ticket(bad).await.unwrap_err()),
        ["title"]
    );
    let file = |size: usize, content_type: &str| AttachmentUpload {
        file_name: "evidence.pdf".into(),
        content_type: content_type.into(),
        content: vec![7; size].into(),
        upload_id: String::new(),
    };
    let mut too_many = plain_ticket();
    too_many.attachments = (0..6).map(|_| file(10, "application/pdf")).collect();
    assert_eq!(
        fields(&support.create_ticket(too_many).await.unwrap_err()),
        ["attachments"]
    );
    let mut too_big = plain_ticket();
    too_big.attachments = vec![file(10 * 1024 * 1024 + 1, "application/pdf")];
    assert_eq!(
        fields(&support.create_ticket(too_big).await.unwrap_err()),
        ["attachments[0].content"]
    );
    let mut wrong_type = plain_ticket();
    wrong_type.attachments = vec![file(10, "application/x-msdownload")];
    assert_eq!(
        fields(&support.create_ticket(wrong_type).await.unwrap_err()),
        ["attachments[0].content_type"]
    );

    // The largest allowed file goes through the gateway and comes back whole.
    let mut with_files = plain_ticket();
    let mut big = file(10 * 1024 * 1024, "application/pdf");
    let mut content = big.content.to_vec();
    content[12345] = 42;
    big.content = content.into();
    with_files.attachments = vec![big.clone(), file(3, "text/plain")];
    let created = support
        .create_ticket(with_files.clone())
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(created.attachments.len(), 2);
    assert_eq!(created.contact.as_ref().unwrap().phone, "+14255550100");
    let fetched = support
        .get_attachment(GetAttachmentRequest {
            ticket_id: created.id.clone(),
            attachment_id: created.attachments[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // Larger than 1 MiB: not inline, behind a short-lived signed URL.
    assert!(fetched.content.is_empty());
    assert!(fetched.download_url_expire_time.is_some());
    let file = csp_tests::http::get(&fetched.download_url).await;
    assert_eq!(file.status, 200, "{}", file.status);
    assert_eq!(file.body.as_bytes(), &big.content[..]);
    let small = support
        .get_attachment(GetAttachmentRequest {
            ticket_id: created.id.clone(),
            attachment_id: created.attachments[1].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(small.content, vec![7u8; 3], "small files come inline too");
    assert_eq!(
        csp_tests::http::get(&small.download_url)
            .await
            .body
            .as_bytes(),
        &[7u8; 3]
    );
    let meta = fetched.attachment.unwrap();
    assert_eq!(meta.size_bytes, 10 * 1024 * 1024);
    use sha2::Digest as _;
    let expected: String = sha2::Sha256::digest(&big.content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(meta.sha256, expected);

    // A retry returns the same ticket; another body with the same id is refused.
    let again = support
        .create_ticket(with_files.clone())
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(again.id, created.id);
    let mut changed = with_files;
    changed.title = "Another title".into();
    assert_eq!(
        fields(&support.create_ticket(changed).await.unwrap_err()),
        ["request_id"]
    );

    // Comments, closing, listing.
    let commented = support
        .add_comment(AddCommentRequest {
            ticket_id: created.id.clone(),
            text: "It happens on every mirror.".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(commented.comments.len(), 1);
    let closed = support
        .close_ticket(CloseTicketRequest {
            ticket_id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(closed.status, TicketStatus::Closed as i32);
    let status = support
        .add_comment(AddCommentRequest {
            ticket_id: created.id.clone(),
            text: "more".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let listed = support
        .list_tickets(ListTicketsRequest {
            status: TicketStatus::Closed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(listed.len(), 1);

    // Another partner's ticket is not found.
    let mut stranger =
        csp_proto::support::v1::support_service_client::SupportServiceClient::with_interceptor(
            system.gateway().await,
            csp_tests::Bearer::new(&system.token_of(Uuid::new_v4(), &[Role::AdminAgent])),
        );
    let status = stranger
        .get_ticket(GetTicketRequest {
            ticket_id: created.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    system.stop().await;
}

/// Issue 13: a partner's attachments are held to its quota; past it a
/// ticket is RESOURCE_EXHAUSTED with a QuotaFailure and nothing of it is
/// kept, a retry of a ticket already filed still answers it, and another
/// partner files its own attachments as before.
#[tokio::test]
async fn attachments_past_the_partners_quota_are_refused_and_other_partners_are_not() {
    let system = TestSystem::start_with_attachment_quota(csp_support::domain::AttachmentQuota {
        files: 10,
        bytes: 3 * 1024 * 1024,
    })
    .await;
    let mut support = system.support(&[Role::HelpdeskAgent]).await;
    let with_file = |size: usize| {
        let mut t = plain_ticket();
        t.attachments = vec![AttachmentUpload {
            file_name: "trace.txt".into(),
            content_type: "text/plain".into(),
            content: vec![b'x'; size].into(),
            upload_id: String::new(),
        }];
        t
    };
    let first = with_file(1024 * 1024);
    support.create_ticket(first.clone()).await.unwrap();
    support.create_ticket(with_file(1024 * 1024)).await.unwrap();

    let status = support
        .create_ticket(with_file(1024 * 1024 + 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let violation = &details
        .quota_failure()
        .expect("a QuotaFailure detail")
        .violations[0];
    assert!(
        violation.subject.ends_with("/attachment-bytes"),
        "{violation:?}"
    );
    assert!(
        status.message().contains("quota of 3145728 bytes"),
        "{}",
        status.message()
    );
    let listed = support
        .list_tickets(ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(listed.len(), 2, "the refused ticket was not kept");

    // A ticket without attachments, and a retry of one filed, still go through.
    support.create_ticket(plain_ticket()).await.unwrap();
    let again = support.create_ticket(first).await.unwrap().into_inner();
    assert_eq!(again.ticket.unwrap().attachments.len(), 1);

    // Another partner's quota is its own.
    let other = system.token_of(Uuid::new_v4(), &[Role::HelpdeskAgent]);
    let mut theirs =
        csp_proto::support::v1::support_service_client::SupportServiceClient::with_interceptor(
            system.gateway().await,
            csp_tests::Bearer::new(&other),
        );
    theirs.create_ticket(with_file(1024 * 1024)).await.unwrap();
    system.stop().await;
}

/// A ticket with one attachment of `size` bytes.
fn ticket_with_file(size: usize) -> CreateTicketRequest {
    let mut ticket = plain_ticket();
    ticket.attachments = vec![AttachmentUpload {
        file_name: "capture.pdf".into(),
        content_type: "application/pdf".into(),
        content: vec![3u8; size].into(),
        upload_id: String::new(),
    }];
    ticket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_uploads_one_large_request_at_a_time_and_others_are_not_held_up() {
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    use prost::bytes::Bytes;

    let system = TestSystem::start().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Large means over 256 KiB here.
    let gateway = Instance::gateway(
        &system,
        addr,
        csp_gateway::limits::LimitArgs {
            large_request_bytes: 256 * 1024,
            ..csp_gateway::limits::LimitArgs::default()
        },
    )
    .await;
    let client = |partner: Uuid| {
        let token = system.token_of(partner, &[Role::HelpdeskAgent]);
        async move { SupportServiceClient::with_interceptor(connect(addr).await, Bearer::new(&token)) }
    };
    let partner_a = Uuid::new_v4();

    // Partner A starts a 3 MiB upload and stops half-way, as a slow client
    // would; the gateway admits it from the length its message declares.
    let encoded = ticket_with_file(3 * 1024 * 1024).encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    let framed = Bytes::from(framed);
    let (frames, receive) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(4);
    let body =
        http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receive));
    let request = ::http::Request::post(format!(
        "http://{addr}/csp.support.v1.SupportService/CreateTicket"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header(
        "authorization",
        format!(
            "Bearer {}",
            system.token_of(partner_a, &[Role::HelpdeskAgent])
        ),
    )
    .body(body)
    .unwrap();
    let http2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let slow = tokio::spawn(async move { http2.request(request).await });
    let half = framed.len() / 2;
    frames
        .send(Ok(http_body::Frame::data(framed.slice(..half))))
        .await
        .unwrap();
    // Until this gateway has let it through (its gauge counts its 3 MiB).
    let mut admitted = false;
    for _ in 0..200 {
        let metrics = csp_kit::metrics::render().await;
        let listener = addr.to_string();
        let mib = csp_tests::metric_sample(
            &metrics,
            "csp_gateway_large_request_mib",
            &[("service", "gateway"), ("listener", listener.as_str())],
        );
        if mib.is_some_and(|mib| mib >= 3.0) {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "the slow upload was never let through");

    // A's second large upload is refused and told when to retry...
    let mut support_a = client(partner_a).await;
    let refused = support_a
        .create_ticket(ticket_with_file(1024 * 1024))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::ResourceExhausted,
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("one at a time"),
        "{}",
        refused.message()
    );
    assert!(
        refused
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay)
            .is_some(),
        "RetryInfo says when"
    );
    // ... while A's small calls and another partner's uploads go through.
    support_a.create_ticket(plain_ticket()).await.unwrap();
    client(Uuid::new_v4())
        .await
        .create_ticket(ticket_with_file(1024 * 1024))
        .await
        .unwrap();

    // The slow upload finishes and is stored; then A may upload again.
    frames
        .send(Ok(http_body::Frame::data(framed.slice(half..))))
        .await
        .unwrap();
    drop(frames);
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    let answer = answer.into_body().collect().await.unwrap();
    let grpc_status = answer
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(grpc_status.as_deref(), Some("0"), "{answer:?}");
    support_a
        .create_ticket(ticket_with_file(1024 * 1024))
        .await
        .unwrap();
    gateway.stop().await;
    system.stop().await;
}
