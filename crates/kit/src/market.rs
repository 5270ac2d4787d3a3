//! Market codes: ISO 3166-1 alpha-2 country codes, the one rule for reading
//! them from a request. Whether the catalog sells in a market is the
//! catalog's question.

use std::fmt;

use crate::ApiError;
use crate::error::quoted;

/// A well-formed market code: two ASCII letters, upper case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct MarketCode(String);

impl MarketCode {
    /// Reads a required request field: trimmed, upper-cased; anything but
    /// two letters is INVALID_ARGUMENT naming `field`.
    pub fn parse(field: &str, code: &str) -> Result<Self, ApiError> {
        let code = code.trim();
        if code.is_empty() {
            return Err(ApiError::invalid(
                field,
                "required: an ISO 3166-1 alpha-2 country code such as \"US\"",
            ));
        }
        if code.len() != 2 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(ApiError::invalid(
                field,
                format!(
                    "{} is not an ISO 3166-1 alpha-2 country code such as \"US\"",
                    quoted(code)
                ),
            ));
        }
        Ok(Self(code.to_ascii_uppercase()))
    }

    /// A code read from this system's own storage or a peer (already valid).
    pub fn trusted(code: impl Into<String>) -> Self {
        Self(code.into())
    }

    /// The code, for example `US`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MarketCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MarketCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MarketCode({})", self.0)
    }
}

impl AsRef<str> for MarketCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_normalized_or_refused() {
        assert_eq!(MarketCode::parse("market", " us ").unwrap().as_str(), "US");
        for bad in ["", "USA", "U1", "é", "ü"] {
            assert!(MarketCode::parse("market", bad).is_err(), "{bad:?}");
        }
    }
}
