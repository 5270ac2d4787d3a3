//! Operators' software files: storing one (the object first, then its
//! record, so a link is never issued for a file that is not there), listing
//! them, removing one (the record first), and the demo placeholders of
//! `csp up`. `csp content put|list|remove` calls these on licensing's
//! database and object store.

use csp_content::{ContentStore, ObjectKey};
use csp_kit::clock::{Clock as _, SystemClock};
use csp_store::db::Db;
use tokio::io::AsyncRead;

use crate::domain::{ContentFile, Selection};
use crate::storage::LicensingStore;

/// A stored file and what the store holds for it now.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The record.
    pub file: ContentFile,
    /// The object's size in the store now; `None` when it is missing.
    pub stored_size: Option<u64>,
}

/// The software files of licensing's database and object store.
#[derive(Clone, Debug)]
pub struct SoftwareFiles {
    records: LicensingStore,
    store: ContentStore,
}

impl SoftwareFiles {
    /// Over licensing's database `db` and the object store `store`.
    pub fn new(db: Db, store: ContentStore) -> Self {
        Self {
            records: LicensingStore::new(db),
            store,
        }
    }

    /// Stores what `reader` yields as the file of `product_id` and
    /// `selection` (replacing one stored before), measuring its size and
    /// SHA-256; `progress` hears the bytes stored so far.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        product_id: &str,
        selection: &Selection,
        reader: R,
        progress: impl FnMut(u64),
    ) -> anyhow::Result<ContentFile> {
        let key = key_of(product_id, selection)?;
        let stored = self.store.put_stream(&key, reader, progress).await?;
        self.record(product_id, selection, &key, stored).await
    }

    async fn record(
        &self,
        product_id: &str,
        selection: &Selection,
        key: &ObjectKey,
        stored: csp_content::Stored,
    ) -> anyhow::Result<ContentFile> {
        let file = ContentFile {
            product_id: product_id.to_owned(),
            selection: selection.clone(),
            object_key: key.as_str().to_owned(),
            size_bytes: i64::try_from(stored.size)?,
            sha256: stored.sha256,
            stored_at: SystemClock.now(),
        };
        self.records.record_content_file(&file).await?;
        Ok(file)
    }

    /// Every recorded file, with what the store holds for it.
    pub async fn list(&self) -> anyhow::Result<Vec<Listed>> {
        let mut listed = Vec::new();
        for file in self.records.content_files().await? {
            let key = ObjectKey::parse(&file.object_key)?;
            let stored_size = self.store.size(&key).await?;
            listed.push(Listed { file, stored_size });
        }
        Ok(listed)
    }

    /// Removes the file of `product_id` and `selection`: no new link is
    /// issued for it from now on. Whether there was one.
    pub async fn remove(&self, product_id: &str, selection: &Selection) -> anyhow::Result<bool> {
        let key = key_of(product_id, selection)?;
        let had = self
            .records
            .forget_content_file(product_id, selection)
            .await?;
        self.store.delete(&key).await?;
        Ok(had)
    }

    /// Stores the demo placeholder of every selection in `selections`
    /// (product, version, language, file type) that has no file yet; how
    /// many it stored.
    pub async fn seed_placeholders<'a>(
        &self,
        selections: impl IntoIterator<Item = (&'a str, &'a str, &'a str, &'a str)>,
    ) -> anyhow::Result<usize> {
        // One read of what is stored, not one per selection, at every start.
        let present: std::collections::HashSet<(String, Selection)> = self
            .records
            .content_files()
            .await?
            .into_iter()
            .map(|f| (f.product_id, f.selection))
            .collect();
        let mut stored = 0;
        for (product_id, version, language, file_type) in selections {
            let selection = Selection {
                version: version.to_owned(),
                language: language.to_owned(),
                file_type: file_type.to_owned(),
            };
            if present.contains(&(product_id.to_owned(), selection.clone())) {
                continue;
            }
            let key = key_of(product_id, &selection)?;
            let put = self
                .store
                .put_bytes(&key, csp_content::placeholder(&key))
                .await?;
            self.record(product_id, &selection, &key, put).await?;
            stored += 1;
        }
        Ok(stored)
    }
}

/// The object key of a product's selection.
pub fn key_of(product_id: &str, selection: &Selection) -> anyhow::Result<ObjectKey> {
    Ok(ObjectKey::software(
        product_id,
        &selection.version,
        &selection.language,
        &selection.file_type,
    )?)
}
