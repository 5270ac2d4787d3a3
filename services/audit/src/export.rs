//! Exporting a range of the log as CSV (RFC 4180, with a header row, a UTF-8
//! byte order mark and formula-safe cells, so spreadsheets open it as it is)
//! or JSON lines, in chunks: memory stays constant however long the range.
//! With proofs, the export is a bundle an auditor checks with the public
//! key alone (`bundle::verify`): the checkpoint it was cut at, and for each
//! record its leaf index, entry, the tree's leaf there and an inclusion
//! proof.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use csp_kit::clock::to_rfc3339;
use csp_proto::audit::v1::ExportActivityResponse;
use tlog_tiles::Hash;
use tokio::sync::mpsc::Sender;
use tonic::Status;

use crate::domain::Record;
use crate::log;
use crate::storage::{AuditStore, Query};

/// What a proof bundle is cut at.
#[derive(Clone, Debug)]
pub struct Proving {
    /// The signed checkpoint's tree size (records after it are left out).
    pub size: u64,
    /// The signed checkpoint.
    pub checkpoint: String,
    /// Whether the range holds every record up to `size`, so a missing
    /// leaf index is a deleted record.
    pub complete: bool,
    /// A consistency proof from an older size, when asked for.
    pub consistency: Option<(u64, Vec<Hash>)>,
}

/// One record's proof.
struct Proven {
    index: u64,
    tree_leaf: Hash,
    proof: Vec<Hash>,
}

/// Bytes gathered before a chunk is sent.
const CHUNK_BYTES: usize = 64 * 1024;

/// An export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl Format {
    /// Its name, for the activity log.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "json_lines",
        }
    }
}

const HEADER: [&str; 10] = [
    "sequence",
    "id",
    "occur_time",
    "type",
    "user_id",
    "user_display_name",
    "customer_tenant_id",
    "subscription_id",
    "product_id",
    "details",
];

/// The columns a bundle adds to each CSV row.
const PROOF_HEADER: [&str; 4] = ["leaf_index", "entry", "tree_leaf", "inclusion_proof"];

/// Streams the records of `query`, newest first, into `tx`; with
/// `proving`, as a proof bundle.
pub async fn run(
    store: AuditStore,
    query: Query,
    format: Format,
    page: u32,
    proving: Option<Proving>,
    tx: Sender<Result<ExportActivityResponse, Status>>,
) {
    let mut buffer = Vec::with_capacity(CHUNK_BYTES + 4096);
    if format == Format::Csv {
        buffer.extend_from_slice("\u{feff}".as_bytes());
        let mut header: Vec<String> = HEADER.iter().map(|h| (*h).to_owned()).collect();
        if proving.is_some() {
            header.extend(PROOF_HEADER.iter().map(|h| (*h).to_owned()));
        }
        csv_row(&mut buffer, header.into_iter());
    }
    if let Some(p) = &proving {
        if format == Format::JsonLines {
            let consistency = p.consistency.as_ref().map(
                |(from, proof)| serde_json::json!({"from_size": from, "proof": encode_all(proof)}),
            );
            let header = serde_json::json!({
                "checkpoint": p.checkpoint,
                "tree_size": p.size,
                "complete": p.complete,
                "consistency": consistency,
            });
            buffer.extend_from_slice(header.to_string().as_bytes());
            buffer.push(b'\n');
        }
        // The checkpoint also travels beside the data (CSV has no place
        // for it).
        let first = ExportActivityResponse {
            data: Vec::new(),
            checkpoint: p.checkpoint.clone(),
        };
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
    }
    let mut cursor = None;
    loop {
        let records = match store.page(&query, cursor, page).await {
            Ok(records) => records,
            Err(error) => {
                let status: Status = error.into();
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let proofs = match &proving {
            Some(p) => match prove(&store, query.partner_id, p.size, &records).await {
                Ok(proofs) => proofs,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            },
            None => Vec::new(),
        };
        for (i, record) in records.iter().enumerate() {
            let proven = proofs.get(i);
            match format {
                Format::Csv => {
                    let extra = proven.map(|p| proof_cells(record, p)).unwrap_or_default();
                    csv_row(&mut buffer, fields(record).chain(extra));
                }
                Format::JsonLines => json_line(&mut buffer, record, proven),
            }
            if buffer.len() >= CHUNK_BYTES && !send(&tx, &mut buffer).await {
                return; // the client went away
            }
        }
        match records.last() {
            Some(last) if records.len() == page as usize => {
                cursor = Some((last.occur_at, last.seq))
            }
            _ => break,
        }
    }
    if !buffer.is_empty() {
        send(&tx, &mut buffer).await;
    }
}

async fn send(tx: &Sender<Result<ExportActivityResponse, Status>>, buffer: &mut Vec<u8>) -> bool {
    let data = std::mem::take(buffer);
    tx.send(Ok(ExportActivityResponse {
        data,
        checkpoint: String::new(),
    }))
    .await
    .is_ok()
}

/// The inclusion proofs of a page of records in the tree of `size`, with
/// one read of the stored hashes they need.
async fn prove(
    store: &AuditStore,
    partner: csp_kit::ids::PartnerId,
    size: u64,
    records: &[Record],
) -> Result<Vec<Proven>, Status> {
    if records.iter().any(|r| r.seq < 1) {
        return Err(Status::internal(
            "a record of the log has no valid sequence number; run VerifyActivityLog",
        ));
    }
    let indexes: Vec<u64> = records.iter().map(|r| (r.seq - 1) as u64).collect();
    let mut reads = Vec::new();
    for &index in &indexes {
        reads.extend(log::indexes_read(|r| {
            tlog_tiles::prove_record(size, index, r)
        }));
        reads.push(log::stored_hash_index(0, index));
    }
    reads.sort_unstable();
    reads.dedup();
    let fetched = store.hashes(partner, &reads).await.map_err(Status::from)?;
    let damaged = || Status::internal("the activity log's tree is damaged; run VerifyActivityLog");
    indexes
        .into_iter()
        .map(|index| {
            Ok(Proven {
                index,
                tree_leaf: *fetched
                    .0
                    .get(&log::stored_hash_index(0, index))
                    .ok_or_else(damaged)?,
                proof: tlog_tiles::prove_record(size, index, &fetched).map_err(|_| damaged())?,
            })
        })
        .collect()
}

fn encode_all(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| BASE64.encode(h.0)).collect()
}

fn proof_cells(record: &Record, p: &Proven) -> Vec<String> {
    vec![
        p.index.to_string(),
        BASE64.encode(log::entry(record)),
        BASE64.encode(p.tree_leaf.0),
        encode_all(&p.proof).join(" "),
    ]
}

fn fields(r: &Record) -> std::vec::IntoIter<String> {
    [
        r.seq.to_string(),
        r.id.clone(),
        to_rfc3339(r.occur_at),
        r.kind.clone(),
        r.user_id.clone(),
        r.user_display_name.clone(),
        r.customer_tenant_id.clone(),
        r.subscription_id.clone(),
        r.product_id.clone(),
        r.details.clone(),
    ]
    .to_vec()
    .into_iter()
}

/// One CSV row: cells quoted when they hold a comma, quote or line break,
/// quotes doubled, and cells a spreadsheet would run as a formula prefixed
/// with an apostrophe.
fn csv_row(out: &mut Vec<u8>, cells: impl Iterator<Item = String>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let cell = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{cell}")
        } else {
            cell
        };
        if cell.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(cell.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn json_line(out: &mut Vec<u8>, r: &Record, proven: Option<&Proven>) {
    let details: serde_json::Value =
        serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null);
    let mut line = serde_json::json!({
        "sequence": r.seq,
        "id": r.id,
        "occur_time": to_rfc3339(r.occur_at),
        "type": r.kind,
        "user_id": r.user_id,
        "user_display_name": r.user_display_name,
        "customer_tenant_id": r.customer_tenant_id,
        "subscription_id": r.subscription_id,
        "product_id": r.product_id,
        "details": details,
    });
    if let (Some(p), Some(object)) = (proven, line.as_object_mut()) {
        object.insert("leaf_index".into(), p.index.into());
        object.insert("entry".into(), BASE64.encode(log::entry(r)).into());
        object.insert("tree_leaf".into(), BASE64.encode(p.tree_leaf.0).into());
        object.insert("inclusion_proof".into(), encode_all(&p.proof).into());
    }
    out.extend_from_slice(line.to_string().as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> String {
        let mut out = Vec::new();
        csv_row(&mut out, cells.iter().map(|c| (*c).to_owned()));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cells_are_quoted_and_made_formula_safe() {
        assert_eq!(row(&["a", "b c"]), "a,b c\r\n");
        assert_eq!(
            row(&["x,y", "say \"hi\""]),
            "\"x,y\",\"say \"\"hi\"\"\"\r\n"
        );
        assert_eq!(row(&["line\nbreak"]), "\"line\nbreak\"\r\n");
        assert_eq!(row(&["=SUM(A1)", "-1", "@x"]), "'=SUM(A1),'-1,'@x\r\n");
        assert_eq!(row(&[r#"{"a":"b"}"#]), "\"{\"\"a\"\":\"\"b\"\"}\"\r\n");
    }
}
