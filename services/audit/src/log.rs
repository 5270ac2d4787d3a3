//! The activity log as a transparency log, without I/O: each partner's
//! records are the leaves of a Merkle tree in append order (RFC 9162
//! hashing: leaf `SHA-256(0x00 || entry)`, node `SHA-256(0x01 || left ||
//! right)`), whose heads are signed as C2SP `tlog-checkpoint` signed notes
//! with Ed25519. Anyone with the public key can check a checkpoint, that a
//! record is in the tree (inclusion proof) and that a later tree extends an
//! earlier one (consistency proof).
//!
//! The tree math, proofs and checkpoint text come from `tlog_tiles` and the
//! note signatures from `signed_note` (Cloudflare's ports of Go's
//! `golang.org/x/mod/sumdb/tlog` and `note`, the code the Go checksum
//! database runs), not from code of ours. Hashes are stored at tlog's
//! "stored hash index": every complete subtree once, so a proof reads
//! `O(log n)` stored hashes and nothing is rebuilt.
//!
//! **The entry** (what a leaf hashes) is the record's canonical encoding:
//! the bytes `csp-activity/v1` and a newline, then these fields in this
//! order, each as a 4-byte big-endian length and its bytes: partner id
//! (UUID, lower case), record id, type (stored spelling such as
//! `key_accessed`), occur time and recorded time (each as the decimal
//! number of microseconds since the Unix epoch, UTC), user id, user display
//! name, customer tenant id, subscription id, product id, details (a JSON
//! object with sorted keys). The position in the log is not part of the
//! entry: a record moved to another position is found there.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use csp_kit::ids::PartnerId;
use sha2::{Digest, Sha256};
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint as TreeHead, Hash, HashReader};

use crate::domain::Record;

pub use tlog_tiles::{EMPTY_HASH, stored_hash_index};

/// The first bytes of every entry: the encoding's name and version.
pub const ENTRY_PREFIX: &[u8] = b"csp-activity/v1\n";

/// The key name (and the origin's first part) when none is configured.
pub const DEFAULT_LOG_NAME: &str = "csp.local/activity-log";

/// The canonical entry of a record (see the module documentation).
pub fn entry(r: &Record) -> Vec<u8> {
    let partner = r.partner_id.to_string();
    let occur = r.occur_at.to_string();
    let recorded = r.recorded_at.to_string();
    let fields: [&[u8]; 11] = [
        partner.as_bytes(),
        r.id.as_bytes(),
        r.kind.as_bytes(),
        occur.as_bytes(),
        recorded.as_bytes(),
        r.user_id.as_bytes(),
        r.user_display_name.as_bytes(),
        r.customer_tenant_id.as_bytes(),
        r.subscription_id.as_bytes(),
        r.product_id.as_bytes(),
        r.details.as_bytes(),
    ];
    let mut out =
        Vec::with_capacity(ENTRY_PREFIX.len() + fields.iter().map(|f| f.len() + 4).sum::<usize>());
    out.extend_from_slice(ENTRY_PREFIX);
    for field in fields {
        // Every field is far below 4 GiB (the intake's limits).
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The fields of an entry, in encoding order (partner id, record id,
/// type, occur and recorded microseconds as decimal text, user id, user
/// display name, customer tenant id, subscription id, product id, details);
/// `None` unless it is a whole, valid entry.
pub fn decode_entry(bytes: &[u8]) -> Option<Vec<String>> {
    let mut rest = bytes.strip_prefix(ENTRY_PREFIX)?;
    let mut fields = Vec::with_capacity(11);
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let field = tail.get(..len)?;
        fields.push(String::from_utf8(field.to_vec()).ok()?);
        rest = &tail[len..];
    }
    (fields.len() == 11).then_some(fields)
}

/// The leaf hash of a record: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(r: &Record) -> Hash {
    tlog_tiles::record_hash(&entry(r))
}

/// A hash as stored (lower-case hex).
pub fn to_hex(hash: &Hash) -> String {
    hash.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored hash; `None` when it is not 64 hex digits.
pub fn from_hex(text: &str) -> Option<Hash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Hash(out))
}

/// A hash from bytes a caller sent; `None` unless 32 bytes.
pub fn from_bytes(bytes: &[u8]) -> Option<Hash> {
    Some(Hash(bytes.try_into().ok()?))
}

/// The origin line of a partner's log: `NAME/PARTNER_ID`.
pub fn origin(log_name: &str, partner: PartnerId) -> String {
    format!("{log_name}/{partner}")
}

/// The stored hashes a computation over the tree reads, found by running it
/// once against a reader that answers zeros (which hashes are read depends
/// only on the sizes and indexes, never on hash values).
pub fn indexes_read<T>(f: impl FnOnce(&Recording) -> Result<T, tlog_tiles::Error>) -> Vec<u64> {
    let recording = Recording(Mutex::new(Vec::new()));
    let _ = f(&recording);
    let mut indexes = recording
        .0
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    indexes.sort_unstable();
    indexes.dedup();
    indexes
}

/// A reader that notes which hashes are read and answers zeros.
pub struct Recording(Mutex<Vec<u64>>);

impl HashReader for Recording {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(indexes);
        Ok(vec![Hash([0; 32]); indexes.len()])
    }
}

/// Stored hashes fetched beforehand, by stored hash index.
#[derive(Debug, Default)]
pub struct Fetched(pub HashMap<u64, Hash>);

impl HashReader for Fetched {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// The hashes appending leaves `leaves` to a tree of `size` leaves stores,
/// by stored hash index, given the tree's stored hashes that appending
/// reads ([`append_reads`]).
pub fn append(
    size: u64,
    leaves: &[Hash],
    known: &Fetched,
) -> Result<Vec<(u64, Hash)>, tlog_tiles::Error> {
    let mut overlay = Fetched(known.0.clone());
    let mut stored = Vec::with_capacity(leaves.len() * 2);
    for (k, leaf) in leaves.iter().enumerate() {
        let n = size + k as u64;
        let hashes = tlog_tiles::stored_hashes_for_record_hash(n, *leaf, &overlay)?;
        let first = stored_hash_index(0, n);
        for (j, hash) in hashes.into_iter().enumerate() {
            overlay.0.insert(first + j as u64, hash);
            stored.push((first + j as u64, hash));
        }
    }
    Ok(stored)
}

/// The stored hashes (already in the tree of `size` leaves) that appending
/// `count` leaves reads.
pub fn append_reads(size: u64, count: u64) -> Vec<u64> {
    let existing = stored_hash_index(0, size);
    let mut reads = Vec::new();
    for n in size..size + count {
        let completed = (n + 1).trailing_zeros() as u8;
        for level in 0..completed {
            let index = stored_hash_index(level, (n >> level) - 1);
            if index < existing {
                reads.push(index);
            }
        }
    }
    reads.sort_unstable();
    reads.dedup();
    reads
}

/// Computes tree roots from leaves given in order, keeping only the right
/// edge (one hash per level): the root of every prefix, in one pass.
#[derive(Debug, Default)]
pub struct RootBuilder {
    /// Complete subtrees, largest first: (height, hash).
    edge: Vec<(u32, Hash)>,
    size: u64,
}

impl RootBuilder {
    /// Adds the next leaf.
    pub fn push(&mut self, leaf: Hash) {
        self.push_nodes(leaf);
    }

    /// Adds the next leaf and returns the complete subtrees it finishes,
    /// each with the stored hash index it is kept at: the leaf itself,
    /// then each parent it completes (what storage wrote when appending it).
    pub fn push_nodes(&mut self, leaf: Hash) -> Vec<(u64, Hash)> {
        let n = self.size;
        let mut nodes = vec![(stored_hash_index(0, n), leaf)];
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.edge.last() {
            if height != node.0 {
                break;
            }
            self.edge.pop();
            node = (height + 1, tlog_tiles::node_hash(left, node.1));
            // The level fits: a tree of 2^64 leaves is not stored here.
            let level = node.0 as u8;
            nodes.push((stored_hash_index(level, n >> level), node.1));
        }
        self.edge.push(node);
        self.size += 1;
        nodes
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the leaves so far (RFC 9162 MTH).
    pub fn root(&self) -> Hash {
        let mut nodes = self.edge.iter().rev();
        let Some(&(_, mut root)) = nodes.next() else {
            return EMPTY_HASH;
        };
        for &(_, left) in nodes {
            root = tlog_tiles::node_hash(left, root);
        }
        root
    }
}

/// The log's signing key: Ed25519, named. It signs checkpoints; the
/// database never holds it.
pub struct LogKey {
    signer: StandardSigner,
    name: String,
    verifier_key: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogKey({}, ***)", self.name)
    }
}

impl LogKey {
    /// The key from configuration: a note signer key
    /// (`PRIVATE+KEY+NAME+ID+KEY`, as `csp audit-log-key --generate` or Go's
    /// `note.GenerateKey` print it), or any other secret, from which an
    /// Ed25519 key named `name` is derived (SHA-256 of a label and the
    /// secret: for development).
    pub fn from_config(secret: &str, name: &str) -> anyhow::Result<Self> {
        if secret.starts_with("PRIVATE+KEY+") {
            let signer = StandardSigner::new(secret)
                .map_err(|_| anyhow::anyhow!("the audit log key is not a valid note signer key"))?;
            let (key_name, seed) =
                note_seed(secret).context("the audit log key is not a valid note signer key")?;
            let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
            return Ok(Self {
                verifier_key: signed_note::new_ed25519_verifier_key(
                    key_name,
                    &signing.verifying_key(),
                ),
                name: key_name.to_owned(),
                signer,
            });
        }
        anyhow::ensure!(
            signed_note::is_key_name_valid(name),
            "the audit log name must be non-empty, without spaces or '+'"
        );
        let mut hasher = Sha256::new();
        hasher.update(b"csp activity log signing key\n");
        hasher.update(secret.as_bytes());
        let seed: [u8; 32] = hasher.finalize().into();
        Self::from_seed(name, &seed)
    }

    /// The key with Ed25519 `seed`, named `name`.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> anyhow::Result<Self> {
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = signing.verifying_key();
        let mut encoded_public = vec![1u8];
        encoded_public.extend_from_slice(public.as_bytes());
        let mut encoded_private = vec![1u8];
        encoded_private.extend_from_slice(seed);
        let skey = format!(
            "PRIVATE+KEY+{name}+{:08x}+{}",
            signed_note::key_id(name, &encoded_public),
            BASE64.encode(&encoded_private)
        );
        let signer = StandardSigner::new(&skey)
            .map_err(|_| anyhow::anyhow!("cannot make a note signer named {name:?}"))?;
        Ok(Self {
            signer,
            name: name.to_owned(),
            verifier_key: signed_note::new_ed25519_verifier_key(name, &public),
        })
    }

    /// The key's name (the first part of every origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key as a note verifier key (`NAME+ID+KEY`): what an
    /// auditor needs, and all they need.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The signed checkpoint of `partner`'s tree of `size` leaves with root
    /// `root`: the note's text (origin, size, base64 root) and one signature
    /// line.
    pub fn sign(&self, partner: PartnerId, size: u64, root: Hash) -> anyhow::Result<String> {
        let head = TreeHead::new(&origin(&self.name, partner), size, root, "")
            .map_err(|_| anyhow::anyhow!("the checkpoint's origin is not valid"))?;
        let mut note = Note::new(&head.to_bytes(), &[])
            .map_err(|e| anyhow::anyhow!("cannot make the checkpoint note: {e}"))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| anyhow::anyhow!("cannot sign the checkpoint: {e}"))?;
        String::from_utf8(note.to_bytes()).context("a signed note is UTF-8")
    }
}

/// The name and Ed25519 seed of a `PRIVATE+KEY+NAME+ID+KEY` signer key
/// (names hold no `+`; the base64 key may).
fn note_seed(skey: &str) -> Option<(&str, [u8; 32])> {
    let mut parts = skey.splitn(5, '+');
    let (_, _, name, _, encoded) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let bytes = BASE64.decode(encoded).ok()?;
    let (&alg, seed) = bytes.split_first()?;
    (alg == 1).then_some(())?;
    Some((name, seed.try_into().ok()?))
}

/// A new random log key named `name`: (signer key, verifier key).
pub fn generate(name: &str) -> anyhow::Result<(String, String)> {
    anyhow::ensure!(
        signed_note::is_key_name_valid(name),
        "the key name must be non-empty, without spaces or '+'"
    );
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = LogKey::from_seed(name, &seed)?;
    let mut encoded_private = vec![1u8];
    encoded_private.extend_from_slice(&seed);
    let mut encoded_public = vec![1u8];
    encoded_public.extend_from_slice(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .as_bytes(),
    );
    let skey = format!(
        "PRIVATE+KEY+{name}+{:08x}+{}",
        signed_note::key_id(name, &encoded_public),
        BASE64.encode(&encoded_private)
    );
    Ok((skey, key.verifier_key().to_owned()))
}

/// A checkpoint whose signature checked out.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// Its origin line.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub root: Hash,
}

/// Why a checkpoint is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The verifier key does not parse.
    #[error("the public key is not a note verifier key (NAME+ID+KEY)")]
    BadKey,
    /// Not a signed note, or its text is not a checkpoint.
    #[error("the checkpoint is not a signed tlog checkpoint note")]
    Malformed,
    /// No signature by the key verifies.
    #[error("the checkpoint is not signed by this key")]
    NotSigned,
}

/// Opens a signed checkpoint note with the verifier key `vkey`.
pub fn open(note: &str, vkey: &str) -> Result<Verified, CheckpointError> {
    let verifier = StandardVerifier::new(vkey).map_err(|_| CheckpointError::BadKey)?;
    let note = Note::from_bytes(note.as_bytes()).map_err(|_| CheckpointError::Malformed)?;
    let known = VerifierList::new(vec![Box::new(verifier)]);
    let (verified, _) = note
        .verify(&known)
        .map_err(|_| CheckpointError::NotSigned)?;
    if verified.is_empty() {
        return Err(CheckpointError::NotSigned);
    }
    let head = TreeHead::from_bytes(note.text()).map_err(|_| CheckpointError::Malformed)?;
    Ok(Verified {
        origin: head.origin().to_owned(),
        size: head.size(),
        root: *head.hash(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> Record {
        Record {
            partner_id: PartnerId::from_uuid(uuid::Uuid::from_u128(7)),
            seq: i64::from(n) + 1,
            id: format!("e{n}"),
            kind: "key_accessed".into(),
            occur_at: 1_700_000_000_000_000 + i64::from(n),
            recorded_at: 1_700_000_000_000_000 + i64::from(n),
            user_id: "ada".into(),
            user_display_name: "Ada".into(),
            customer_tenant_id: String::new(),
            subscription_id: String::new(),
            product_id: String::new(),
            details: "{}".into(),
        }
    }

    /// Builds a tree of `n` leaves the way storage does, in batches.
    fn tree(leaves: &[Hash], batch: usize) -> Fetched {
        let mut stored = Fetched::default();
        let mut size = 0u64;
        for chunk in leaves.chunks(batch) {
            let reads = append_reads(size, chunk.len() as u64);
            let known = Fetched(reads.iter().map(|i| (*i, stored.0[i])).collect());
            for (index, hash) in append(size, chunk, &known).unwrap() {
                stored.0.insert(index, hash);
            }
            size += chunk.len() as u64;
        }
        stored
    }

    #[test]
    fn the_entry_is_length_prefixed_and_starts_with_its_version() {
        let e = entry(&record(0));
        assert!(e.starts_with(ENTRY_PREFIX));
        // "00000000-0000-0000-0000-000000000007" is 36 bytes long.
        assert_eq!(
            &e[ENTRY_PREFIX.len()..ENTRY_PREFIX.len() + 4],
            &[0, 0, 0, 36]
        );
        // Moving bytes between fields changes the entry.
        let mut a = record(0);
        let mut b = record(0);
        a.user_id = "ab".into();
        a.user_display_name = "c".into();
        b.user_id = "a".into();
        b.user_display_name = "bc".into();
        assert_ne!(entry(&a), entry(&b));
    }

    #[test]
    fn an_entry_decodes_to_its_fields() {
        let r = record(5);
        let fields = decode_entry(&entry(&r)).unwrap();
        assert_eq!(fields[1], "e5");
        assert_eq!(fields[3], r.occur_at.to_string());
        assert_eq!(fields[10], "{}");
        let mut cut = entry(&r);
        cut.pop();
        assert_eq!(decode_entry(&cut), None);
        assert_eq!(decode_entry(b"other"), None);
    }

    #[test]
    fn rfc_6962_reference_roots() {
        // The test vectors of the Certificate Transparency reference
        // implementation (the leaves "", 00, 10, 2021, 3031, 40414243,
        // 5051525354555657, 606162636465666768696a6b6c6d6e6f) and the roots
        // of their first 1..8 leaves.
        let leaves: Vec<Vec<u8>> = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect();
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let hashes: Vec<Hash> = leaves.iter().map(|l| tlog_tiles::record_hash(l)).collect();
        for batch in [1, 3, 8] {
            let stored = tree(&hashes, batch);
            for (n, want) in roots.iter().enumerate() {
                let root = tlog_tiles::tree_hash(n as u64 + 1, &stored).unwrap();
                assert_eq!(to_hex(&root), *want, "size {} in batches of {batch}", n + 1);
            }
        }
    }

    #[test]
    fn the_root_builder_agrees_with_the_stored_tree() {
        let hashes: Vec<Hash> = (0..100).map(|n| leaf_hash(&record(n))).collect();
        let stored = tree(&hashes, 7);
        let mut builder = RootBuilder::default();
        assert_eq!(builder.root(), EMPTY_HASH);
        for (n, leaf) in hashes.iter().enumerate() {
            for (index, hash) in builder.push_nodes(*leaf) {
                assert_eq!(
                    stored.0.get(&index),
                    Some(&hash),
                    "node {index} of leaf {n}"
                );
            }
            let size = n as u64 + 1;
            assert_eq!(builder.size(), size);
            assert_eq!(
                builder.root(),
                tlog_tiles::tree_hash(size, &stored).unwrap(),
                "{size}"
            );
        }
    }

    #[test]
    fn proofs_read_only_what_they_name_and_verify() {
        let hashes: Vec<Hash> = (0..1000).map(|n| leaf_hash(&record(n))).collect();
        let stored = tree(&hashes, 37);
        let size = 1000u64;
        let root = tlog_tiles::tree_hash(size, &stored).unwrap();
        for index in [0u64, 1, 511, 512, 999] {
            let reads = indexes_read(|r| tlog_tiles::prove_record(size, index, r));
            assert!(reads.len() <= 2 * 10 + 1, "{} reads", reads.len());
            let fetched = Fetched(reads.iter().map(|i| (*i, stored.0[i])).collect());
            let proof = tlog_tiles::prove_record(size, index, &fetched).unwrap();
            tlog_tiles::check_record(&proof, size, root, index, hashes[index as usize]).unwrap();
            assert!(
                tlog_tiles::check_record(
                    &proof,
                    size,
                    root,
                    index,
                    hashes[(index as usize + 1) % 1000]
                )
                .is_err()
            );
        }
        let old = tlog_tiles::tree_hash(600, &stored).unwrap();
        let reads = indexes_read(|r| tlog_tiles::prove_tree(size, 600, r));
        let fetched = Fetched(reads.iter().map(|i| (*i, stored.0[i])).collect());
        let proof = tlog_tiles::prove_tree(size, 600, &fetched).unwrap();
        tlog_tiles::check_tree(&proof, size, root, 600, old).unwrap();
        assert!(tlog_tiles::check_tree(&proof, size, root, 600, hashes[0]).is_err());
    }

    #[test]
    fn the_go_note_vector_verifies() {
        // From golang.org/x/mod/sumdb/note's tests.
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let key = LogKey::from_config(skey, "ignored").unwrap();
        assert_eq!(key.verifier_key(), vkey);
        assert_eq!(key.name(), "PeterNeumann");
    }

    #[test]
    fn checkpoints_are_signed_notes_the_public_key_opens() {
        let key = LogKey::from_config("a development secret", DEFAULT_LOG_NAME).unwrap();
        let partner = PartnerId::from_uuid(uuid::Uuid::from_u128(7));
        let root = leaf_hash(&record(0));
        let note = key.sign(partner, 1, root).unwrap();
        let mut lines = note.lines();
        assert_eq!(
            lines.next(),
            Some("csp.local/activity-log/00000000-0000-0000-0000-000000000007")
        );
        assert_eq!(lines.next(), Some("1"));
        assert_eq!(lines.next(), Some(BASE64.encode(root.0).as_str()));
        assert_eq!(lines.next(), Some(""));
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("— csp.local/activity-log ")
        );
        let opened = open(&note, key.verifier_key()).unwrap();
        assert_eq!((opened.size, opened.root), (1, root));
        // Another key, or an edited text, is refused.
        let other = LogKey::from_config("another secret", DEFAULT_LOG_NAME).unwrap();
        assert_eq!(
            open(&note, other.verifier_key()),
            Err(CheckpointError::NotSigned)
        );
        let edited = note.replacen("\n1\n", "\n2\n", 1);
        assert_eq!(
            open(&edited, key.verifier_key()),
            Err(CheckpointError::NotSigned)
        );
        // A generated key round-trips through its signer key text.
        let (skey, vkey) = generate("example.com/log").unwrap();
        let loaded = LogKey::from_config(&skey, "ignored").unwrap();
        assert_eq!(loaded.verifier_key(), vkey);
    }

    #[test]
    fn hashes_round_trip_as_hex() {
        let h = leaf_hash(&record(3));
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_bytes(&h.0), Some(h));
        assert_eq!(from_bytes(&[1, 2]), None);
    }

    #[test]
    fn an_independent_implementation_accepts_the_proofs() {
        // ct-merkle (RFC 6962, written apart from tlog) checks inclusion and
        // consistency proofs of a tree built and proven here.
        use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
        let entries: Vec<Vec<u8>> = (0..300).map(|n| entry(&record(n))).collect();
        let hashes: Vec<Hash> = entries.iter().map(|e| tlog_tiles::record_hash(e)).collect();
        let stored = tree(&hashes, 64);
        let root_of = |size: u64| {
            let root = tlog_tiles::tree_hash(size, &stored).unwrap();
            RootHash::<sha2::Sha256>::new(root.0.into(), size)
        };
        for (size, index) in [(300u64, 0u64), (300, 299), (300, 150), (1, 0), (255, 254)] {
            let proof = tlog_tiles::prove_record(size, index, &stored).unwrap();
            let bytes: Vec<u8> = proof.iter().flat_map(|h| h.0).collect();
            root_of(size)
                .verify_inclusion(
                    &entries[index as usize],
                    index,
                    &InclusionProof::from_bytes(bytes),
                )
                .unwrap_or_else(|e| panic!("inclusion of {index} in {size}: {e:?}"));
        }
        for (old, new) in [(1u64, 300u64), (150, 300), (256, 300), (299, 300), (7, 8)] {
            let proof = tlog_tiles::prove_tree(new, old, &stored).unwrap();
            let bytes: Vec<u8> = proof.iter().flat_map(|h| h.0).collect();
            root_of(new)
                .verify_consistency(
                    &root_of(old),
                    &ConsistencyProof::try_from_bytes(bytes).unwrap(),
                )
                .unwrap_or_else(|e| panic!("consistency {old} -> {new}: {e:?}"));
        }
    }
}
