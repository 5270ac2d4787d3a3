//! The public download listener: `GET /download/<token>` for customers, who
//! have no account; the token is the credential. A working link counts one
//! download (in licensing, atomically) and redirects (302) to the file; a
//! used-up, expired or revoked link answers 410 Gone with a sentence saying
//! which; an unknown token answers 404. `HEAD` answers the same codes from
//! the link's state (200 for a working link) without counting, recording or
//! revealing the file's address: mail scanners and link previewers send HEAD
//! to every link in a message. Tokens are never logged.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use csp_kit::identity::IdentityKey;
use csp_kit::identity::ServiceIdentity;
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

/// Serves downloads on `listener` until `shutdown` fires, redeeming links
/// with licensing through `channel`.
pub async fn serve(
    listener: TcpListener,
    channel: ReplicaChannel,
    key: Arc<IdentityKey>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let licensing: Licensing = LicensingInternalServiceClient::new(InterceptedService::new(
        channel,
        ServiceIdentity::new(key, "gateway"),
    ));
    let app = Router::new()
        .route("/download/{token}", get(download).head(inspect))
        .with_state(licensing);
    tracing::info!(service = "gateway", addr = %listener.local_addr()?, "serving downloads");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.wait())
    .await?;
    Ok(())
}

async fn download(
    state: State<Licensing>,
    client: ConnectInfo<SocketAddr>,
    token: Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = answer_download(state, client, token, headers).await;
    csp_kit::metrics::count_http("gateway", "/download", response.status().as_u16());
    response
}

async fn answer_download(
    State(licensing): State<Licensing>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(512)
        .collect();
    let answer = licensing
        .clone()
        .redeem_download_link(RedeemDownloadLinkRequest {
            token,
            client_address: client.ip().to_string(),
            user_agent,
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            tracing::warn!(code = ?status.code(), "licensing unavailable for a download");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Downloads are unavailable for a moment. Please try again shortly.",
            );
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
        Ok(RedeemOutcome::Expired | RedeemOutcome::UsedUp | RedeemOutcome::Revoked) => {
            text(StatusCode::GONE, &answer.message)
        }
        _ => text(StatusCode::NOT_FOUND, &answer.message),
    }
}

async fn inspect(state: State<Licensing>, token: Path<String>) -> Response {
    let response = answer_inspect(state, token).await;
    csp_kit::metrics::count_http("gateway", "/download", response.status().as_u16());
    response
}

async fn answer_inspect(State(licensing): State<Licensing>, Path(token): Path<String>) -> Response {
    let answer = licensing
        .clone()
        .inspect_download_link(InspectDownloadLinkRequest { token })
        .await;
    let answer = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            tracing::warn!(code = ?status.code(), "licensing unavailable for a download link check");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Downloads are unavailable for a moment. Please try again shortly.",
            );
        }
    };
    match RedeemOutcome::try_from(answer.outcome) {
        Ok(RedeemOutcome::Redirect) => text(StatusCode::OK, ""),
        Ok(RedeemOutcome::Expired | RedeemOutcome::UsedUp | RedeemOutcome::Revoked) => {
            text(StatusCode::GONE, &answer.message)
        }
        _ => text(StatusCode::NOT_FOUND, &answer.message),
    }
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
