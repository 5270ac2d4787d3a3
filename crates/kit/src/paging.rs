//! Opaque page tokens: base64url of a small JSON document that records where
//! the next page starts and a fingerprint of the query, so a token used with
//! other filters is refused instead of silently skipping rows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The page size when a request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 25;
/// The largest page size honoured; larger requests get this many.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Checks a request's `page_size`: negative is INVALID_ARGUMENT, 0 is the
/// default, and anything above `max` is capped at `max`.
pub fn page_size(requested: i32, default: u32, max: u32) -> Result<u32, ApiError> {
    match requested {
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        0 => Ok(default),
        n => Ok((n as u32).min(max)),
    }
}

/// Encodes a cursor as an opaque token.
pub fn encode<T: Serialize>(cursor: &T) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    let json = serde_json::to_vec(cursor).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a token made by [`encode`]; `None` for an empty token (first page).
/// Anything else is INVALID_ARGUMENT on `page_token`.
pub fn decode<T: DeserializeOwned>(token: &str) -> Result<Option<T>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::invalid(
            "page_token",
            "not a page token this service issued; start again from an empty page_token",
        )
    };
    let json = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|_| invalid())
}

/// Ends a page that was fetched with one row more than `size`: cuts it to
/// `size` and returns the token of the next page, made from the last row
/// kept; empty when this is the last page.
pub fn finish_page<T, C: Serialize>(
    rows: &mut Vec<T>,
    size: u32,
    cursor: impl FnOnce(&T) -> C,
) -> String {
    if rows.len() <= size as usize {
        return String::new();
    }
    rows.truncate(size as usize);
    rows.last()
        .map(|last| encode(&cursor(last)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Cursor {
        after: String,
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let token = encode(&Cursor { after: "x".into() });
        assert_eq!(
            decode::<Cursor>(&token).unwrap(),
            Some(Cursor { after: "x".into() })
        );
        assert_eq!(decode::<Cursor>("").unwrap(), None);
        assert!(decode::<Cursor>("!!!").is_err());
        assert!(decode::<Cursor>(&URL_SAFE_NO_PAD.encode("{}")).is_err());
    }

    #[test]
    fn a_page_with_one_row_more_has_a_next_page() {
        let mut rows = vec![1, 2, 3];
        let token = finish_page(&mut rows, 2, |last| Cursor {
            after: last.to_string(),
        });
        assert_eq!(rows, [1, 2]);
        assert_eq!(
            decode::<Cursor>(&token).unwrap(),
            Some(Cursor { after: "2".into() })
        );
        let mut last_page = vec![1, 2];
        assert_eq!(
            finish_page(&mut last_page, 2, |_| Cursor {
                after: String::new()
            }),
            ""
        );
        assert_eq!(last_page, [1, 2]);
    }

    #[test]
    fn page_sizes_default_cap_and_refuse_negatives() {
        assert_eq!(page_size(0, 25, 100).unwrap(), 25);
        assert_eq!(page_size(7, 25, 100).unwrap(), 7);
        assert_eq!(page_size(1000, 25, 100).unwrap(), 100);
        assert!(page_size(-1, 25, 100).is_err());
    }
}
