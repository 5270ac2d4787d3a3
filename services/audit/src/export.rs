//! Exporting a range of the log as CSV (RFC 4180, with a header row, a UTF-8
//! byte order mark and formula-safe cells, so spreadsheets open it as it is)
//! or JSON lines, in chunks: memory stays constant however long the range.

use csp_kit::clock::to_rfc3339;
use csp_proto::audit::v1::ExportActivityResponse;
use tokio::sync::mpsc::Sender;
use tonic::Status;

use crate::domain::Record;
use crate::storage::{AuditStore, Query};

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

/// Streams the records of `query`, newest first, into `tx`.
pub async fn run(
    store: AuditStore,
    query: Query,
    format: Format,
    page: u32,
    tx: Sender<Result<ExportActivityResponse, Status>>,
) {
    let mut buffer = Vec::with_capacity(CHUNK_BYTES + 4096);
    if format == Format::Csv {
        buffer.extend_from_slice("\u{feff}".as_bytes());
        csv_row(&mut buffer, HEADER.iter().map(|h| (*h).to_owned()));
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
        for record in &records {
            match format {
                Format::Csv => csv_row(&mut buffer, fields(record)),
                Format::JsonLines => json_line(&mut buffer, record),
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
    tx.send(Ok(ExportActivityResponse { data })).await.is_ok()
}

fn fields(r: &Record) -> impl Iterator<Item = String> {
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

fn json_line(out: &mut Vec<u8>, r: &Record) {
    let details: serde_json::Value =
        serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null);
    let line = serde_json::json!({
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
