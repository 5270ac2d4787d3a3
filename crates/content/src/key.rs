//! Object keys: `/`-separated segments of letters, digits, `.`, `_` and `-`,
//! so a key is the same path in every store and can never climb out of a
//! local directory.

use object_store::path::Path;

/// The most characters one key segment may have.
const MAX_SEGMENT: usize = 128;

/// Where one object lives in the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

/// Why a key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{what} must be 1 to 128 letters, digits, '.', '_' or '-', and not start with '.' (got {shown})"
)]
pub struct InvalidKey {
    /// The part that is wrong.
    pub what: &'static str,
    shown: String,
}

fn segment(what: &'static str, value: &str) -> Result<(), InvalidKey> {
    let fine = !value.is_empty()
        && value.len() <= MAX_SEGMENT
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine {
        Ok(())
    } else {
        Err(InvalidKey {
            what,
            shown: csp_kit::error::quoted(value),
        })
    }
}

impl ObjectKey {
    /// The key of a software file: `software/PRODUCT/VERSION/LANGUAGE/FILE_TYPE`.
    pub fn software(
        product_id: &str,
        version: &str,
        language: &str,
        file_type: &str,
    ) -> Result<Self, InvalidKey> {
        segment("the product id", product_id)?;
        segment("the version", version)?;
        segment("the language", language)?;
        segment("the file type", file_type)?;
        Ok(Self(format!(
            "software/{product_id}/{version}/{language}/{file_type}"
        )))
    }

    /// The key of a ticket attachment: `attachments/PARTNER/TICKET/ATTACHMENT`.
    pub fn attachment(
        partner_id: &str,
        ticket_id: &str,
        attachment_id: &str,
    ) -> Result<Self, InvalidKey> {
        segment("the partner id", partner_id)?;
        segment("the ticket id", ticket_id)?;
        segment("the attachment id", attachment_id)?;
        Ok(Self(format!(
            "attachments/{partner_id}/{ticket_id}/{attachment_id}"
        )))
    }

    /// The key of an attachment uploaded before its ticket:
    /// `uploads/PARTNER/UPLOAD`.
    pub fn upload(partner_id: &str, upload_id: &str) -> Result<Self, InvalidKey> {
        segment("the partner id", partner_id)?;
        segment("the upload id", upload_id)?;
        Ok(Self(format!("uploads/{partner_id}/{upload_id}")))
    }

    /// A key as a URL or listing spells it.
    pub fn parse(key: &str) -> Result<Self, InvalidKey> {
        let mut segments = 0;
        for part in key.split('/') {
            segment("every part of the key", part)?;
            segments += 1;
        }
        if segments < 2 {
            return Err(InvalidKey {
                what: "the key",
                shown: csp_kit::error::quoted(key),
            });
        }
        Ok(Self(key.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The store path.
    pub(crate) fn path(&self) -> Path {
        Path::from(self.0.as_str())
    }

    /// The key's segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_segments() {
        let key = ObjectKey::software("windows-server-standard", "2019", "en-US", "iso-x64");
        assert_eq!(
            key.map(|k| k.0),
            Ok("software/windows-server-standard/2019/en-US/iso-x64".to_owned())
        );
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "%2e%2e",
            &"x".repeat(129),
        ] {
            assert!(
                ObjectKey::software("p", bad, "en-US", "iso").is_err(),
                "{bad:?}"
            );
        }
        assert!(ObjectKey::parse("software/p/1/en-US/iso").is_ok());
        for bad in [
            "software/../etc/passwd",
            "/etc/passwd",
            "software//x",
            "single",
            "a/./b",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
