//! Licensing's domain, without I/O: entitlements, links and downloads; a
//! link lives two weeks or 50 downloads, whichever comes first (the one
//! validity rule: [`link_status`]; storage states the same condition in SQL
//! once); a selection must be one of the product's options.

use csp_kit::clock::{DAY, Micros};
use csp_kit::ids::{LinkId, OrderId, PartnerId, SubscriptionId, TenantId};
use csp_kit::{ApiError, FieldViolation};

/// How long a download link lives.
pub const LINK_LIFETIME: Micros = 14 * DAY;
/// How many downloads a link allows.
pub const MAX_DOWNLOADS: i32 = 50;

/// A link as the validity rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// When it stops working.
    pub expires_at: Micros,
    /// Downloads so far.
    pub downloads: i32,
    /// Downloads it allows.
    pub max_downloads: i32,
    /// Whether its subscription was cancelled.
    pub revoked: bool,
}

/// Why a link does not work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dead {
    /// Revoked with its subscription.
    Revoked,
    /// Two weeks have passed.
    Expired,
    /// 50 downloads were made.
    UsedUp,
}

/// Whether a link works at `now`, and if not, why (revocation first, then
/// expiry, then use).
pub fn link_status(link: LinkState, now: Micros) -> Result<(), Dead> {
    if link.revoked {
        Err(Dead::Revoked)
    } else if now >= link.expires_at {
        Err(Dead::Expired)
    } else if link.downloads >= link.max_downloads {
        Err(Dead::UsedUp)
    } else {
        Ok(())
    }
}

/// The plain sentence the customer sees for a dead link.
pub fn dead_link_sentence(dead: Dead) -> &'static str {
    match dead {
        Dead::Expired => {
            "This download link has expired: links work for two weeks after they are issued. \
             Your partner can enable a new link for you."
        }
        Dead::UsedUp => {
            "This download link has been used for all of its 50 downloads. \
             Your partner can enable a new link for you."
        }
        Dead::Revoked => {
            "This download link no longer works because the subscription it belongs to was cancelled. \
             Your partner can tell you more."
        }
    }
}

/// The download options of a product, from the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Versions.
    pub versions: Vec<String>,
    /// Languages.
    pub languages: Vec<String>,
    /// File type ids.
    pub file_types: Vec<String>,
}

/// Checks that version, language and file type are among the options,
/// naming every field that is not.
pub fn check_selection(
    options: &Options,
    version: &str,
    language: &str,
    file_type: &str,
) -> Result<(), ApiError> {
    let mut violations = Vec::new();
    let mut check = |field: &str, value: &str, allowed: &[String]| {
        if !allowed.iter().any(|a| a == value) {
            violations.push(FieldViolation::new(
                field,
                format!(
                    "{} is not offered; choose one of {}",
                    csp_kit::error::quoted(value),
                    allowed.join(", ")
                ),
            ));
        }
    };
    check("version", version, &options.versions);
    check("language", language, &options.languages);
    check("file_type", file_type, &options.file_types);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(violations))
    }
}

csp_kit::stored_enum! {
    /// Whether software bought for a customer can still be used.
    pub enum EntitlementStatus {
        /// Keys and links may be handed out.
        Active = "active",
        /// The subscription was cancelled: keys and links are revoked.
        Revoked = "revoked",
    }
}

/// Software bought for a customer: one server subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entitlement {
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// The partner.
    pub partner_id: PartnerId,
    /// The customer.
    pub customer_tenant_id: TenantId,
    /// The order.
    pub order_id: OrderId,
    /// The product.
    pub product_id: String,
    /// Its title.
    pub product_title: String,
    /// Active, or revoked.
    pub status: EntitlementStatus,
    /// When it was provisioned.
    pub provisioned_at: Micros,
    /// When it was revoked.
    pub revoked_at: Option<Micros>,
}

/// What was asked for: one version, language and file type of a product.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selection {
    /// Version.
    pub version: String,
    /// Language.
    pub language: String,
    /// File type id.
    pub file_type: String,
}

/// FAILED_PRECONDITION for a selection no file is stored for: the catalog
/// offers it, but no operator has uploaded it yet.
pub fn no_file_error(product_id: &str, selection: &Selection) -> ApiError {
    ApiError::failed_precondition(
        "FILE_NOT_STORED",
        format!(
            "{product_id}/{}/{}/{}",
            selection.version, selection.language, selection.file_type
        ),
        format!(
            "no file is stored yet for {product_id} version {}, {}, {}; no link was issued. \
             An operator stores it with `csp content put`",
            selection.version, selection.language, selection.file_type
        ),
    )
}

/// A software file in the object store, as recorded when it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentFile {
    /// The product.
    pub product_id: String,
    /// The version, language and file type it is.
    pub selection: Selection,
    /// Where it is in the store.
    pub object_key: String,
    /// Its size in bytes.
    pub size_bytes: i64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// When it was stored.
    pub stored_at: Micros,
}

/// A link to create when no valid one exists.
#[derive(Clone, Debug)]
pub struct NewLink {
    /// Its id.
    pub id: LinkId,
    /// SHA-256 of its token.
    pub token_hash: String,
    /// Its token, sealed.
    pub sealed_token: String,
    /// When it stops working.
    pub expires_at: Micros,
    /// Downloads it allows.
    pub max_downloads: i32,
    /// Who asked for it.
    pub issued_by_user_id: String,
}

/// A stored link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLink {
    /// Its id.
    pub id: LinkId,
    /// Its token, sealed.
    pub sealed_token: String,
    /// When it stops working.
    pub expires_at: Micros,
    /// Downloads so far.
    pub downloads: i32,
    /// Downloads it allows.
    pub max_downloads: i32,
}

/// The key and link a `GetKeysAndDownloads` settled on.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The product key, sealed.
    pub sealed_key: String,
    /// The current link.
    pub link: StoredLink,
    /// Whether the link was made by this call.
    pub link_is_new: bool,
}

/// A counted download.
#[derive(Clone, Debug)]
pub struct Download {
    /// The link.
    pub link_id: LinkId,
    /// This download's number.
    pub count: i32,
    /// Downloads the link allows.
    pub max_downloads: i32,
    /// Partner.
    pub partner_id: PartnerId,
    /// Customer.
    pub customer_tenant_id: TenantId,
    /// Subscription.
    pub subscription_id: SubscriptionId,
    /// Product.
    pub product_id: String,
    /// The selection.
    pub selection: Selection,
}

/// FAILED_PRECONDITION for a revoked entitlement.
pub fn revoked_error(subscription_id: &str) -> ApiError {
    ApiError::failed_precondition(
        "SUBSCRIPTION_CANCELLED",
        format!("subscription/{subscription_id}"),
        format!(
            "subscription {subscription_id} was cancelled: its product keys and download links are revoked"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use csp_kit::clock::SECOND;

    fn link(downloads: i32) -> LinkState {
        LinkState {
            expires_at: LINK_LIFETIME,
            downloads,
            max_downloads: MAX_DOWNLOADS,
            revoked: false,
        }
    }

    #[test]
    fn a_link_lives_two_weeks_or_fifty_downloads() {
        assert_eq!(link_status(link(0), LINK_LIFETIME - SECOND), Ok(()));
        assert_eq!(link_status(link(0), LINK_LIFETIME), Err(Dead::Expired));
        assert_eq!(link_status(link(49), 0), Ok(()));
        assert_eq!(link_status(link(50), 0), Err(Dead::UsedUp));
        let revoked = LinkState {
            revoked: true,
            ..link(0)
        };
        assert_eq!(link_status(revoked, LINK_LIFETIME * 2), Err(Dead::Revoked));
    }

    #[test]
    fn selections_must_be_offered() {
        let options = Options {
            versions: vec!["2019".into(), "2022".into()],
            languages: vec!["en-US".into()],
            file_types: vec!["iso-x64".into()],
        };
        assert!(check_selection(&options, "2022", "en-US", "iso-x64").is_ok());
        let Err(ApiError::InvalidArgument(v)) = check_selection(&options, "2016", "en-US", "zip")
        else {
            panic!("expected INVALID_ARGUMENT")
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["version", "file_type"]);
        assert!(v[0].description.contains("2019, 2022"));
    }
}
