//! The public download listener: `GET /download/<token>` for customers, who
//! have no account; the token is the credential. A working link counts one
//! download (in licensing, atomically) and redirects (302) to the file; a
//! used-up, expired or revoked link answers 410 Gone with a sentence saying
//! which; an unknown token answers 404. `HEAD` answers the same codes from
//! the link's state (200 for a working link) without counting, recording or
//! revealing the file's address: mail scanners and link previewers send HEAD
//! to every link in a message. Tokens are never logged. The client address
//! recorded with a download is the TCP peer's, or, when the peer is a
//! configured trusted proxy, the last address in `X-Forwarded-For` that is
//! not one of them. With a local content store (`file://`), the same
//! listener serves the files at `/files/KEY?expires=..&signature=..`: only
//! URLs licensing signed, for one object, until they expire (403 otherwise),
//! with `Range`, `HEAD` and conditional requests. A client that tries more than
//! [`UNKNOWN_TOKENS_PER_MINUTE`] unknown tokens a minute is answered 429
//! with `Retry-After`, without a database read, until its allowance refills.

use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use csp_kit::identity::ServiceIdentity;
use csp_kit::identity::Signer;
use csp_kit::shutdown::Shutdown;
use csp_proto::licensing::v1::licensing_internal_service_client::LicensingInternalServiceClient;
use csp_proto::licensing::v1::{
    InspectDownloadLinkRequest, RedeemDownloadLinkRequest, RedeemOutcome,
};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use crate::balance::ReplicaChannel;

/// Licensing's internal API, over the gateway's own forwarding (its
/// replicas in turn), signed as the gateway.
type Licensing =
    LicensingInternalServiceClient<InterceptedService<ReplicaChannel, ServiceIdentity>>;

/// What a download handler needs.
#[derive(Clone)]
struct Downloads {
    licensing: Licensing,
    trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    guesses: Arc<Guesses>,
    files: Option<Arc<csp_content::LocalFiles>>,
}

/// Unknown tokens one client may try per minute (guessing links is
/// pointless with 256-bit tokens, but each try costs a database read):
/// beyond, the client is answered 429 with `Retry-After` without asking
/// licensing, until its allowance refills.
pub const UNKNOWN_TOKENS_PER_MINUTE: u32 = 60;

/// Clients that tried unknown tokens, per address.
pub struct Guesses {
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    blocked: std::sync::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
}

impl Guesses {
    /// A new record of guesses, allowing `per_minute` unknown tokens per
    /// client and minute.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN);
        Self {
            limiter: governor::DefaultKeyedRateLimiter::keyed(governor::Quota::per_minute(
                per_minute,
            )),
            blocked: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// How long `client` must still wait, when it is blocked.
    pub fn refused(&self, client: IpAddr) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        let blocked = self
            .blocked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        blocked
            .get(&client)
            .filter(|until| **until > now)
            .map(|until| *until - now)
    }

    /// Counts one unknown token tried by `client`; over the allowance, the
    /// client is blocked until it refills.
    pub fn unknown(&self, client: IpAddr) {
        use governor::clock::{Clock as _, DefaultClock};
        let Err(not_until) = self.limiter.check_key(&client) else {
            return;
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let now = std::time::Instant::now();
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if blocked.len() >= 10_000 {
            blocked.retain(|_, until| *until > now);
            self.limiter.retain_recent();
        }
        blocked.insert(client, now + wait);
    }
}

/// 429 with `Retry-After` for a client that tried too many unknown tokens.
fn too_many_guesses(wait: std::time::Duration) -> Response {
    let mut response = text(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many download links that do not exist were tried from this address. Please wait, \
         and check that the whole link was copied.",
    );
    if let Ok(seconds) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, seconds);
    }
    response
}

/// Reads a trusted proxy: an IP address (one host) or a CIDR range.
pub fn parse_proxy(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!(
                "{} is not an IP address or CIDR range such as 10.0.0.0/8",
                csp_kit::error::quoted(text)
            )
        })
}

/// The client of a download: the TCP `peer`, or, when the peer is a trusted
/// proxy, the last `X-Forwarded-For` address that is not a trusted proxy
/// (the left part of the header is whatever the client sent, so it is never
/// believed past an untrusted hop). A header that does not parse is ignored.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        for hop in value.split(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// Serves downloads on `listener` until `shutdown` fires, redeeming links
/// with licensing through `channel`.
pub async fn serve(
    listener: TcpListener,
    channel: ReplicaChannel,
    signer: Arc<Signer>,
    trusted_proxies: Vec<ipnet::IpNet>,
    files: Option<csp_content::LocalFiles>,
    limits: crate::listener::HttpLimits,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let licensing: Licensing = LicensingInternalServiceClient::new(InterceptedService::new(
        channel,
        ServiceIdentity::new(signer),
    ));
    let app = Router::new()
        .route("/download/{token}", get(download).head(inspect))
        .route("/files/{*key}", get(file).head(file))
        .with_state(Downloads {
            licensing,
            trusted_proxies: Arc::new(trusted_proxies),
            guesses: Arc::new(Guesses::new(UNKNOWN_TOKENS_PER_MINUTE)),
            files: files.map(Arc::new),
        });
    tracing::info!(service = "gateway", addr = %listener.local_addr()?, "serving downloads");
    axum::serve(
        crate::listener::Guarded::new(listener, limits),
        app.into_make_service_with_connect_info::<crate::listener::Peer>(),
    )
    .with_graceful_shutdown(shutdown.wait())
    .await?;
    Ok(())
}

async fn download(
    state: State<Downloads>,
    client: ConnectInfo<crate::listener::Peer>,
    token: Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = answer_download(state, client, token, headers).await;
    csp_kit::metrics::count_http("gateway", "/download", response.status().as_u16());
    response
}

async fn answer_download(
    State(downloads): State<Downloads>,
    ConnectInfo(crate::listener::Peer(peer)): ConnectInfo<crate::listener::Peer>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let client = match screen(&downloads, peer.ip(), &headers, &token) {
        ControlFlow::Continue(client) => client,
        ControlFlow::Break(answer) => return answer,
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(512)
        .collect();
    let answer = downloads
        .licensing
        .clone()
        .redeem_download_link(RedeemDownloadLinkRequest {
            token,
            client_address: client.to_string(),
            user_agent,
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            tracing::warn!(code = ?status.code(), "licensing unavailable for a download");
            return unavailable();
        }
    };
    match RedeemOutcome::try_from(answer.outcome) {
        Ok(RedeemOutcome::Redirect) => match HeaderValue::from_str(&answer.redirect_url) {
            Ok(location) => {
                let mut response = StatusCode::FOUND.into_response();
                response.headers_mut().insert(header::LOCATION, location);
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The file's address is not valid.",
            ),
        },
        _ => not_redirected(&downloads, client, answer.outcome, &answer.message),
    }
}

async fn inspect(
    state: State<Downloads>,
    client: ConnectInfo<crate::listener::Peer>,
    token: Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = answer_inspect(state, client, token, headers).await;
    csp_kit::metrics::count_http("gateway", "/download", response.status().as_u16());
    response
}

async fn answer_inspect(
    State(downloads): State<Downloads>,
    ConnectInfo(crate::listener::Peer(peer)): ConnectInfo<crate::listener::Peer>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let client = match screen(&downloads, peer.ip(), &headers, &token) {
        ControlFlow::Continue(client) => client,
        ControlFlow::Break(answer) => return answer,
    };
    let answer = downloads
        .licensing
        .clone()
        .inspect_download_link(InspectDownloadLinkRequest { token })
        .await;
    let answer = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            tracing::warn!(code = ?status.code(), "licensing unavailable for a download link check");
            return unavailable();
        }
    };
    match RedeemOutcome::try_from(answer.outcome) {
        Ok(RedeemOutcome::Redirect) => text(StatusCode::OK, ""),
        _ => not_redirected(&downloads, client, answer.outcome, &answer.message),
    }
}

/// A file of the local content store, behind a URL licensing signed.
async fn file(
    State(downloads): State<Downloads>,
    Path(key): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let head = request.method() == axum::http::Method::HEAD;
    let response = answer_file(&downloads, &key, request).await;
    let status = response.status();
    csp_kit::metrics::count_http("gateway", "/files", status.as_u16());
    if status.is_success() && !head {
        // The body's length: the whole file, or the range asked for.
        let sent = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(bytes) = sent {
            csp_kit::metrics::add_content_bytes_served("gateway", bytes);
        }
    }
    response
}

/// The answer to a URL no valid signature covers.
const NOT_SIGNED: &str = "This file URL is not valid: file URLs are handed out for a few minutes, by a \
                          download link (which counts one download) or with a ticket's attachment. \
                          Follow the link, or fetch the attachment, again.";

/// The answer to an expired file URL.
const EXPIRED: &str = "This file URL has expired: it works for a few minutes after it is handed out. \
                       Follow the download link again (it counts one download), or fetch the \
                       attachment again.";

async fn answer_file(
    downloads: &Downloads,
    key: &str,
    request: axum::extract::Request,
) -> Response {
    let Some(files) = &downloads.files else {
        return text(StatusCode::NOT_FOUND, "No files are served here.");
    };
    let Ok(key) = csp_content::ObjectKey::parse(key) else {
        return text(StatusCode::FORBIDDEN, NOT_SIGNED);
    };
    let (mut expires, mut signature) = ("", "");
    for pair in request.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("expires", value)) => expires = value,
            Some(("signature", value)) => signature = value,
            _ => {}
        }
    }
    let path = match files.check(&key, expires, signature, std::time::SystemTime::now()) {
        Ok(path) => path,
        Err(csp_content::Refused::Expired) => return text(StatusCode::FORBIDDEN, EXPIRED),
        Err(csp_content::Refused::BadSignature) => return text(StatusCode::FORBIDDEN, NOT_SIGNED),
    };
    // GET and HEAD only (the route says so); Range, If-Modified-Since and
    // the rest are tower-http's.
    match tower_http::services::ServeFile::new(path)
        .try_call(request)
        .await
    {
        Ok(response) if response.status() == StatusCode::NOT_FOUND => text(
            StatusCode::NOT_FOUND,
            "This file is no longer stored. Ask your partner for help.",
        ),
        Ok(response) => {
            let mut response = response.map(axum::body::Body::new);
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-transform"),
            );
            response
        }
        Err(error) => {
            tracing::error!(%error, "a stored file cannot be read");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The file cannot be read right now. Please try again shortly.",
            )
        }
    }
}

/// The answer to a token that no link can have.
const NO_SUCH_LINK: &str = "This download link does not exist. Check that the whole link was copied; \
                            your partner can enable a new one.";

/// The longest token licensing accepts (its proto documents the same).
const MAX_TOKEN: usize = 128;

/// Whether `token` could be a link's token (URL-safe base64, not too long):
/// anything else is answered as an unknown link without asking licensing.
fn plausible_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The client of a GET or HEAD on a link, or the answer that ends it
/// before licensing is asked: 429 for a client guessing too many tokens,
/// 404 (counted as a guess) for a token no link can have.
fn screen(
    downloads: &Downloads,
    peer: IpAddr,
    headers: &HeaderMap,
    token: &str,
) -> ControlFlow<Response, IpAddr> {
    let client = client_address(peer, headers, &downloads.trusted_proxies);
    if let Some(wait) = downloads.guesses.refused(client) {
        return ControlFlow::Break(too_many_guesses(wait));
    }
    if !plausible_token(token) {
        return ControlFlow::Break(not_redirected(
            downloads,
            client,
            RedeemOutcome::Unknown as i32,
            NO_SUCH_LINK,
        ));
    }
    ControlFlow::Continue(client)
}

/// A link that does not lead to its file: 410 when it has ended (expired,
/// used up, revoked), 404 otherwise, counted as a guess of the client's.
fn not_redirected(downloads: &Downloads, client: IpAddr, outcome: i32, message: &str) -> Response {
    match RedeemOutcome::try_from(outcome) {
        Ok(RedeemOutcome::Expired | RedeemOutcome::UsedUp | RedeemOutcome::Revoked) => {
            text(StatusCode::GONE, message)
        }
        _ => {
            downloads.guesses.unknown(client);
            text(StatusCode::NOT_FOUND, message)
        }
    }
}

fn unavailable() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "Downloads are unavailable for a moment. Please try again shortly.",
    )
}

fn text(status: StatusCode, sentence: &str) -> Response {
    let mut response = (status, format!("{sentence}\n")).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let trusted = [
            parse_proxy("10.0.0.0/8").unwrap(),
            parse_proxy("192.0.2.9").unwrap(),
        ];
        let spoofed = forwarded(&["203.0.113.7"]);
        // Not from a proxy: the peer, whatever the header says.
        assert_eq!(
            client_address(ip("198.51.100.4"), &spoofed, &trusted),
            ip("198.51.100.4")
        );
        // From the ingress: the last hop that is not a trusted proxy.
        let chain = forwarded(&["6.6.6.6, 203.0.113.7", "10.1.2.3"]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &chain, &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("192.0.2.9"), &spoofed, &trusted),
            ip("203.0.113.7")
        );
        // No header, or one that does not parse: the peer.
        assert_eq!(
            client_address(ip("10.0.0.5"), &HeaderMap::new(), &trusted),
            ip("10.0.0.5")
        );
        let junk = forwarded(&["not-an-address"]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &junk, &trusted),
            ip("10.0.0.5")
        );
        // Nothing trusted (the default): always the peer.
        assert_eq!(client_address(ip("10.0.0.5"), &chain, &[]), ip("10.0.0.5"));
    }

    #[test]
    fn a_client_guessing_tokens_is_blocked_until_its_allowance_refills() {
        let guesses = Guesses::new(3);
        let (guesser, other) = (ip("198.51.100.4"), ip("198.51.100.5"));
        for _ in 0..3 {
            assert_eq!(guesses.refused(guesser), None);
            guesses.unknown(guesser);
        }
        assert_eq!(guesses.refused(guesser), None, "three guesses are allowed");
        guesses.unknown(guesser);
        let wait = guesses.refused(guesser).expect("the fourth blocks");
        assert!(wait > std::time::Duration::ZERO && wait <= std::time::Duration::from_secs(20));
        assert_eq!(
            guesses.refused(other),
            None,
            "another client is not blocked"
        );
        let refused = too_many_guesses(wait);
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn proxies_are_addresses_or_ranges() {
        assert_eq!(
            parse_proxy(" 10.0.0.0/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_proxy("192.0.2.9").unwrap().to_string(),
            "192.0.2.9/32"
        );
        assert_eq!(parse_proxy("::1").unwrap().to_string(), "::1/128");
        assert!(parse_proxy("ingress").is_err());
    }

    #[test]
    fn only_tokens_a_link_could_have_are_asked_about() {
        assert!(plausible_token("AbC-_09xyz"));
        assert!(plausible_token(&"a".repeat(MAX_TOKEN)));
        assert!(!plausible_token(""));
        assert!(!plausible_token(&"a".repeat(MAX_TOKEN + 1)));
        assert!(!plausible_token("abc%2F..%2F"));
        assert!(!plausible_token("abc def"));
    }
}
