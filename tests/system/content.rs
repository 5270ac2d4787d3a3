//! Software files behind short-lived signed URLs: on the local store the
//! gateway serves (Range, HEAD, expiry, tampering), and on Azure Blob
//! Storage (Azurite) with SAS URLs. A download is only ever reached through
//! a counted link: the signed URL works for one object and for minutes.

use std::time::Duration;

use csp_content::ObjectKey;
use csp_kit::roles::Role;
use csp_tests::azurite::Azurite;
use csp_tests::{TestSystem, http};
use sha2::Digest as _;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::licensing::{bought, selection, software};

/// The demo file of the tests' selection.
fn datacenter_2022() -> ObjectKey {
    ObjectKey::software("windows-server-datacenter", "2022", "en-US", "iso-x64").unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    csp_content::hex(&sha2::Sha256::digest(bytes))
}

/// A customer's fresh link to Windows Server Datacenter 2022 en-US ISO,
/// with the request that gives it again.
async fn link(
    system: &TestSystem,
    domain: &str,
) -> (
    csp_proto::licensing::v1::DownloadLink,
    csp_proto::licensing::v1::GetKeysAndDownloadsRequest,
) {
    let (customer, subscriptions) = bought(system, domain).await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let request = selection(&customer, &subscriptions[0]);
    let link = licensing
        .get_keys_and_downloads(request.clone())
        .await
        .unwrap()
        .into_inner()
        .download_link
        .unwrap();
    (link, request)
}

/// The link of `request` as it stands now.
async fn current(
    system: &TestSystem,
    request: &csp_proto::licensing::v1::GetKeysAndDownloadsRequest,
) -> csp_proto::licensing::v1::DownloadLink {
    system
        .licensing(&[Role::AdminAgent])
        .await
        .get_keys_and_downloads(request.clone())
        .await
        .unwrap()
        .into_inner()
        .download_link
        .unwrap()
}

/// Follows `link_url` once (counting a download): the signed URL.
async fn signed_url(link_url: &str) -> String {
    let answer = http::get(link_url).await;
    assert_eq!(answer.status, 302, "{answer:?}");
    answer.header("location").unwrap().to_owned()
}

/// `url` with its query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((n, _)) if n == name => format!("{n}={value}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_a_local_file_only_behind_its_signed_url() {
    let system = TestSystem::start().await;
    let (link, request) = link(&system, "files.example.com").await;
    let key = datacenter_2022();
    let placeholder = csp_content::placeholder(&key);
    let url = signed_url(&link.url).await;

    // The whole file, its ranges, HEAD.
    let whole = http::get(&url).await;
    assert_eq!(whole.status, 200, "{whole:?}");
    assert_eq!(sha256(whole.body.as_bytes()), link.file_sha256);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    let part = http::get_with(&url, &[("Range", "bytes=10-19")]).await;
    assert_eq!(part.status, 206, "{part:?}");
    assert_eq!(part.body.as_bytes(), &placeholder[10..20]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 10-19/{}", placeholder.len()).as_str())
    );
    let tail = http::get_with(&url, &[("Range", "bytes=-5")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body.as_bytes(), &placeholder[placeholder.len() - 5..]);
    let beyond = http::get_with(&url, &[("Range", "bytes=999999-")]).await;
    assert_eq!(beyond.status, 416, "{beyond:?}");
    let head = http::head(&url).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(placeholder.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    // Tampered: another object, a later expiry, a cut signature, none.
    let other = url.replace("/iso-x64?", "/vhdx-x64?");
    let later = with_param(&url, "expires", "99999999999");
    let (_, query) = url.split_once("signature=").unwrap();
    let cut = with_param(&url, "signature", &query[..10]);
    let unsigned = url.split_once('?').unwrap().0.to_owned();
    for refused in [other, later, cut, unsigned] {
        let answer = http::get(&refused).await;
        assert_eq!(answer.status, 403, "{refused}: {answer:?}");
        assert!(answer.body.contains("not valid"), "{}", answer.body);
        assert!(!answer.body.contains("signature="), "{}", answer.body);
    }
    // An altered expiry is not valid either (the signature covers it).
    let expired = with_param(&url, "expires", "1");
    assert_eq!(http::get(&expired).await.status, 403);

    // One download counted: the redirect, none for the file's answers.
    let now = current(&system, &request).await;
    assert_eq!(now.url, link.url);
    assert_eq!(now.downloads_remaining, 49);

    // Metrics count the signed URL and the bytes served (tests share the
    // process's registry: at least), and show no URL.
    let metrics = http::get(&format!(
        "http://{}/metrics",
        system.addresses.metrics.unwrap()
    ))
    .await;
    let signed = csp_tests::metric_sample(
        &metrics.body,
        "csp_content_signed_urls_total",
        &[
            ("service", "licensing"),
            ("backend", "local"),
            ("purpose", "software"),
        ],
    );
    assert!(signed.is_some_and(|n| n >= 1.0), "{signed:?}");
    let served = csp_tests::metric_sample(
        &metrics.body,
        "csp_content_local_served_bytes_total",
        &[("service", "gateway")],
    );
    let at_least = (placeholder.len() + 10 + 5) as f64;
    assert!(served.is_some_and(|n| n >= at_least), "{served:?}");
    assert!(!metrics.body.contains("signature="));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_url_is_refused_once_it_expires() {
    let system = TestSystem::start_with_url_ttl(1).await;
    let (link, _) = link(&system, "expiry.example.com").await;
    let url = signed_url(&link.url).await;
    assert_eq!(http::get(&url).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = http::get(&url).await;
    assert_eq!(expired.status, 403, "{expired:?}");
    assert!(expired.body.contains("expired"), "{}", expired.body);
    // The link itself still works: a new download, a new URL.
    let again = signed_url(&link.url).await;
    assert_ne!(again, url);
    assert_eq!(http::get(&again).await.status, 200);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_is_issued_for_a_selection_without_a_stored_file() {
    let system = TestSystem::start().await;
    let (customer, subscriptions) = bought(&system, "missing.example.com").await;
    let mut licensing = system.licensing(&[Role::AdminAgent]).await;
    software(&mut licensing, &customer, 2).await;
    let files = system.software_files().await;
    let request = selection(&customer, &subscriptions[0]);
    let chosen = csp_licensing::domain::Selection {
        version: request.version.clone(),
        language: request.language.clone(),
        file_type: request.file_type.clone(),
    };
    assert!(
        files
            .remove("windows-server-datacenter", &chosen)
            .await
            .unwrap()
    );
    let status = licensing
        .get_keys_and_downloads(request.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("windows-server-datacenter version 2022, en-US, iso-x64")
            && status.message().contains("csp content put"),
        "{}",
        status.message()
    );
    let failure = status.get_details_precondition_failure().unwrap();
    assert_eq!(failure.violations[0].r#type, "FILE_NOT_STORED");

    // Stored again (a real file this time), the link shows it.
    let bytes = b"the real ISO, in a test".repeat(1000);
    let stored = files
        .put("windows-server-datacenter", &chosen, &bytes[..], |_| {})
        .await
        .unwrap();
    assert_eq!(stored.sha256, sha256(&bytes));
    let link = current(&system, &request).await;
    assert_eq!(link.file_sha256, sha256(&bytes));
    assert_eq!(link.file_size_bytes, bytes.len() as u64);
    let file = http::get(&signed_url(&link.url).await).await;
    assert_eq!(file.body.as_bytes(), &bytes[..]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_from_azure_blob_storage_go_through_sas_urls() {
    let azurite = Azurite::start();
    let system = TestSystem::start_with_content(azurite.content_args(2)).await;
    let (link, request) = link(&system, "azure.example.com").await;
    assert_eq!(
        link.file_sha256,
        csp_content::placeholder_sha256(&datacenter_2022())
    );

    // The redirect is a SAS URL for the one blob, and Azurite serves it.
    let url = signed_url(&link.url).await;
    let blob = format!(
        "{}/{}/software/windows-server-datacenter/2022/en-US/iso-x64?",
        azurite.endpoint(),
        csp_tests::azurite::CONTAINER
    );
    assert!(url.starts_with(&blob), "{url}");
    assert!(url.contains("sig=") && url.contains("se="), "{url}");
    let file = http::get(&url).await;
    assert_eq!(file.status, 200, "{file:?}");
    assert_eq!(sha256(file.body.as_bytes()), link.file_sha256);
    // Another blob under the same signature: refused by Azurite.
    let other = url.replace("/iso-x64?", "/vhdx-x64?");
    assert_eq!(http::get(&other).await.status, 403);
    // Expired: Azurite refuses it.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let expired = http::get(&url).await;
    assert_eq!(expired.status, 403, "{expired:?}");

    // An operator replaces the file; the link shows and serves the new one.
    let files = system.software_files().await;
    let chosen = csp_licensing::domain::Selection {
        version: "2022".into(),
        language: "en-US".into(),
        file_type: "iso-x64".into(),
    };
    let bytes = b"Windows Server 2022 Datacenter, in Azure".repeat(50_000);
    files
        .put("windows-server-datacenter", &chosen, &bytes[..], |_| {})
        .await
        .unwrap();
    let now = current(&system, &request).await;
    assert_eq!(now.file_sha256, sha256(&bytes));
    let file = http::get(&signed_url(&link.url).await).await;
    assert_eq!(file.status, 200);
    assert_eq!(file.body.len(), bytes.len());
    assert_eq!(sha256(file.body.as_bytes()), sha256(&bytes));

    // Used up: 410, and no SAS URL.
    for _ in 0..48 {
        assert_eq!(http::get(&link.url).await.status, 302);
    }
    let gone = http::get(&link.url).await;
    assert_eq!(gone.status, 410, "{gone:?}");
    assert!(gone.header("location").is_none());
    assert!(!gone.body.contains("sig="), "{}", gone.body);
    system.stop().await;
}

/// A ticket with `files` (name, bytes) filed through the gateway; its id and
/// attachment ids.
async fn ticket_with(system: &TestSystem, files: &[(&str, Vec<u8>)]) -> (String, Vec<String>) {
    let mut request = crate::support::plain_ticket();
    request.attachments = files
        .iter()
        .map(|(name, bytes)| csp_proto::support::v1::AttachmentUpload {
            file_name: (*name).into(),
            content_type: "application/pdf".into(),
            content: bytes.clone().into(),
            upload_id: String::new(),
        })
        .collect();
    let ticket = system
        .support(&[Role::AdminAgent])
        .await
        .create_ticket(request)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let ids = ticket.attachments.iter().map(|a| a.id.clone()).collect();
    (ticket.id, ids)
}

async fn get_attachment(
    system: &TestSystem,
    ticket: &str,
    attachment: &str,
) -> csp_proto::support::v1::GetAttachmentResponse {
    system
        .support(&[Role::AdminAgent])
        .await
        .get_attachment(csp_proto::support::v1::GetAttachmentRequest {
            ticket_id: ticket.into(),
            attachment_id: attachment.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_round_trip_through_azure_blob_storage() {
    let azurite = Azurite::start();
    let system = TestSystem::start_with_content(azurite.content_args(300)).await;
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (ticket, ids) = ticket_with(
        &system,
        &[
            ("big.pdf", big.clone()),
            ("small.pdf", b"%PDF-1.7 tiny".to_vec()),
        ],
    )
    .await;
    let fetched = get_attachment(&system, &ticket, &ids[0]).await;
    assert!(fetched.content.is_empty(), "3 MiB is not inline");
    assert!(
        fetched.download_url.starts_with(&format!(
            "{}/{}/attachments/",
            azurite.endpoint(),
            csp_tests::azurite::CONTAINER
        )),
        "{}",
        fetched.download_url
    );
    let response = reqwest::get(&fetched.download_url).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(sha256(&body), fetched.attachment.unwrap().sha256);
    assert_eq!(&body[..], &big[..]);
    let small = get_attachment(&system, &ticket, &ids[1]).await;
    assert_eq!(small.content, b"%PDF-1.7 tiny");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_kept_in_the_database_move_to_the_object_store_at_start() {
    let system = TestSystem::start().await;
    let partner = system.partner;
    let (ticket, _) = ticket_with(&system, &[]).await;
    // A row as the version before wrote it: the bytes in support's database.
    let bytes = b"%PDF-1.4 kept in the database by an earlier version".to_vec();
    let db = csp_store::db::Db::connect_existing(&system.database_url("support").await)
        .await
        .unwrap();
    const SQL: &str = "INSERT INTO ticket_attachments (id, ticket_id, position, file_name, content_type, \
                       size_bytes, sha256, content) VALUES ($1, $2, 0, 'old.pdf', 'application/pdf', $3, $4, $5)";
    let id = uuid::Uuid::new_v4().to_string();
    csp_store::on_db!(&db, pool => sqlx::query(SQL)
        .bind(&id)
        .bind(&ticket)
        .bind(bytes.len() as i64)
        .bind(sha256(&bytes))
        .bind(&bytes)
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
    // Before the move it is served from the database, inline, without a URL.
    let before = get_attachment(&system, &ticket, &id).await;
    assert_eq!(before.content, bytes);
    assert!(before.download_url.is_empty());

    let storage = system.stop_keeping_data().await;
    let mut system = TestSystem::start_with(storage, csp_kit::clock::system()).await;
    system.partner = partner;
    let after = get_attachment(&system, &ticket, &id).await;
    assert_eq!(after.content, bytes);
    let file = http::get(&after.download_url).await;
    assert_eq!(file.status, 200, "{file:?}");
    assert_eq!(file.body.as_bytes(), &bytes[..]);
    let (left,): (i64,) = csp_store::on_db!(&db, pool => sqlx::query_as(
        "SELECT CAST(SUM(LENGTH(content)) AS BIGINT) FROM ticket_attachments"
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(left, 0, "no attachment bytes are left in the database");
    db.close().await;
    system.stop().await;
}

/// Uploads `bytes` in chunks of `chunk` bytes through the gateway.
async fn upload(
    system: &TestSystem,
    roles: &[Role],
    bytes: &[u8],
    chunk: usize,
) -> Result<csp_proto::support::v1::UploadAttachmentResponse, tonic::Status> {
    let chunks: Vec<csp_proto::support::v1::UploadAttachmentRequest> = bytes
        .chunks(chunk.max(1))
        .map(|c| csp_proto::support::v1::UploadAttachmentRequest {
            chunk: c.to_vec().into(),
        })
        .collect();
    system
        .support(roles)
        .await
        .upload_attachment(tokio_stream::iter(chunks))
        .await
        .map(tonic::Response::into_inner)
}

/// The objects under `prefix` in a test system's local content store.
fn stored_under(system: &TestSystem, prefix: &str) -> usize {
    let dir = system.content_args(None).local_dir().unwrap().join(prefix);
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    count(&dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_upload_as_streams_and_a_ticket_names_them_once() {
    let system = TestSystem::start().await;
    let bytes: Vec<u8> = (0..(2 * 1024 * 1024 + 12345))
        .map(|i| (i % 253) as u8)
        .collect();
    let uploaded = upload(&system, &[Role::HelpdeskAgent], &bytes, 1024 * 1024)
        .await
        .unwrap();
    assert_eq!(uploaded.size_bytes, bytes.len() as u64);
    assert_eq!(uploaded.sha256, sha256(&bytes));
    assert!(uploaded.expire_time.is_some());

    // A ticket names it (with its name and type), beside an inline file.
    let mut request = crate::support::plain_ticket();
    request.attachments = vec![
        csp_proto::support::v1::AttachmentUpload {
            file_name: "trace.pdf".into(),
            content_type: "application/pdf".into(),
            content: Default::default(),
            upload_id: uploaded.upload_id.clone(),
        },
        csp_proto::support::v1::AttachmentUpload {
            file_name: "note.txt".into(),
            content_type: "text/plain".into(),
            content: b"inline".to_vec().into(),
            upload_id: String::new(),
        },
    ];
    let mut support = system.support(&[Role::HelpdeskAgent]).await;
    let ticket = support
        .create_ticket(request.clone())
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(ticket.attachments.len(), 2);
    assert_eq!(ticket.attachments[0].id, uploaded.upload_id);
    assert_eq!(ticket.attachments[0].sha256, uploaded.sha256);
    let fetched = get_attachment(&system, &ticket.id, &uploaded.upload_id).await;
    let file = reqwest::get(&fetched.download_url).await.unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(sha256(&file.bytes().await.unwrap()), uploaded.sha256);
    // A retry of the same request answers the same ticket.
    let again = support
        .create_ticket(request.clone())
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(again.id, ticket.id);

    // Another ticket cannot name the same upload; another partner cannot
    // name this partner's upload.
    let second = upload(&system, &[Role::AdminAgent], b"%PDF second", 4)
        .await
        .unwrap();
    let mut reuse = request.clone();
    reuse.request_id = uuid::Uuid::new_v4().to_string();
    let status = support.create_ticket(reuse).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("upload"), "{}", status.message());
    let stranger = system.token_of(uuid::Uuid::new_v4(), &[Role::AdminAgent]);
    let mut theirs =
        csp_proto::support::v1::support_service_client::SupportServiceClient::with_interceptor(
            system.gateway().await,
            csp_tests::Bearer::new(&stranger),
        );
    let mut steal = crate::support::plain_ticket();
    steal.attachments = vec![csp_proto::support::v1::AttachmentUpload {
        file_name: "x.pdf".into(),
        content_type: "application/pdf".into(),
        content: Default::default(),
        upload_id: second.upload_id.clone(),
    }];
    let status = theirs.create_ticket(steal).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Refused uploads keep nothing: too big, empty.
    let before = stored_under(&system, "uploads");
    let too_big = vec![1u8; 10 * 1024 * 1024 + 1];
    let status = upload(&system, &[Role::AdminAgent], &too_big, 1024 * 1024)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("10 MiB"), "{}", status.message());
    let status = upload(&system, &[Role::AdminAgent], &[], 1)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(stored_under(&system, "uploads"), before);
    // A role without tickets may not upload.
    let status = upload(&system, &[Role::SalesAgent], b"x", 1)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_count_toward_the_quota_and_a_refused_one_keeps_nothing() {
    let system = TestSystem::start_with_attachment_quota(csp_support::domain::AttachmentQuota {
        files: 10,
        bytes: 1000,
    })
    .await;
    let first = upload(&system, &[Role::AdminAgent], &[1u8; 600], 100)
        .await
        .unwrap();
    assert_eq!(first.size_bytes, 600);
    let before = stored_under(&system, "uploads");
    let status = upload(&system, &[Role::AdminAgent], &[2u8; 500], 100)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.get_details_quota_failure().is_some());
    assert_eq!(stored_under(&system, "uploads"), before, "nothing kept");
    // An inline file that would pass the quota with the upload is refused too.
    let status = ticket_attempt(&system, vec![7u8; 500]).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(stored_under(&system, "attachments"), 0, "nothing kept");
    system.stop().await;
}

async fn ticket_attempt(
    system: &TestSystem,
    bytes: Vec<u8>,
) -> Result<csp_proto::support::v1::CreateTicketResponse, tonic::Status> {
    let mut request = crate::support::plain_ticket();
    request.attachments = vec![csp_proto::support::v1::AttachmentUpload {
        file_name: "a.pdf".into(),
        content_type: "application/pdf".into(),
        content: bytes.into(),
        upload_id: String::new(),
    }];
    system
        .support(&[Role::AdminAgent])
        .await
        .create_ticket(request)
        .await
        .map(tonic::Response::into_inner)
}
