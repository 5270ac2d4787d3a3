//! Length limits on request fields, checked on the wire before a request is
//! decoded.
//!
//! Every string field of a request (at any depth) documents "At most N
//! characters." in its proto comment; the build script refuses to build
//! without it and turns the comments into [`MESSAGES`]. [`BoundedCodec`] is
//! the codec of every generated client and server: before it decodes a
//! request, it walks the encoded bytes and refuses one with a field over its
//! limit with INVALID_ARGUMENT and a google.rpc `BadRequest` naming each
//! field (at most [`MAX_VIOLATIONS`]), and never the value. So an oversized
//! value costs no more than the bytes already received, no handler runs,
//! and no store is asked about it.

use std::fmt;
use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt as _};

#[cfg(test)]
#[allow(dead_code)]
mod spec;

include!(concat!(env!("OUT_DIR"), "/bounds_table.rs"));

/// The most field violations one error names; the rest are counted.
pub const MAX_VIOLATIONS: usize = 10;

/// How deep nested messages are followed (prost refuses deeper ones anyway).
const MAX_DEPTH: usize = 32;

/// A message reachable from a request.
#[derive(Debug)]
pub(crate) struct Message {
    fields: &'static [Field],
}

/// A field with a limit, or a message field whose message has some.
#[derive(Debug)]
pub(crate) struct Field {
    number: u32,
    name: &'static str,
    repeated: bool,
    rule: Rule,
}

#[derive(Debug)]
pub(crate) enum Rule {
    /// At most this many characters.
    Text(u32),
    /// The message at this index of [`MESSAGES`].
    Message(usize),
}

/// A field over its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field's path, for example `lines[2].sku_id`.
    pub field: String,
    /// The limit and the length found.
    pub description: String,
}

/// Where a field sits in the request, for its path.
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    name: &'static str,
    index: Option<usize>,
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}.")?;
        }
        f.write_str(self.name)?;
        if let Some(index) = self.index {
            write!(f, "[{index}]")?;
        }
        Ok(())
    }
}

struct Found {
    violations: Vec<Violation>,
    more: usize,
}

impl Found {
    fn push(&mut self, path: &Path<'_>, description: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation {
                field: path.to_string(),
                description,
            });
        } else {
            self.more += 1;
        }
    }
}

/// Bytes that are not a protobuf encoding the walker can follow (prost
/// would refuse them too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// The fields of an encoded request of `package.name` over their limits;
/// empty when every field is within them or the message is not a request the
/// codec checks.
pub fn violations(package: &str, name: &str, encoded: &[u8]) -> Result<Vec<Violation>, Malformed> {
    match request_index(package, name) {
        Some(index) => walk(index, encoded),
        None => Ok(Vec::new()),
    }
}

/// The fields of one item of a batch (a producer's record, an ordering
/// event: see `ITEMWISE` in the spec) over their limits, so a handler
/// rejects that item alone. Empty for a message no request reaches.
pub fn item_violations<M: prost::Message + prost::Name>(item: &M) -> Vec<Violation> {
    let Some(index) = message_index(M::PACKAGE, M::NAME) else {
        return Vec::new();
    };
    // An encoding prost just made always parses.
    walk(index, &item.encode_to_vec()).unwrap_or_default()
}

fn walk(index: usize, encoded: &[u8]) -> Result<Vec<Violation>, Malformed> {
    let mut found = Found {
        violations: Vec::new(),
        more: 0,
    };
    scan(&MESSAGES[index], encoded, None, 0, &mut found).ok_or(Malformed)?;
    if found.more > 0 {
        found.violations.push(Violation {
            field: "request".to_owned(),
            description: format!("{} more fields are over their limits", found.more),
        });
    }
    Ok(found.violations)
}

/// Walks one encoded message; `None` when the bytes do not parse.
fn scan(
    message: &Message,
    mut bytes: &[u8],
    parent: Option<&Path<'_>>,
    depth: usize,
    found: &mut Found,
) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    // How many times each repeated field was seen, for the paths.
    let mut seen = [0usize; 64];
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let number = u32::try_from(key >> 3).ok().filter(|n| *n > 0)?;
        match key & 7 {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..)?,
            5 => bytes = bytes.get(4..)?,
            3 => skip_group(&mut bytes, number, depth + 1)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                let value = bytes.get(..len)?;
                bytes = &bytes[len..];
                let Some(position) = message.fields.iter().position(|f| f.number == number) else {
                    continue;
                };
                let field = &message.fields[position];
                let index = field.repeated.then(|| {
                    let slot = seen.get_mut(position);
                    let n = slot.as_deref().copied().unwrap_or(0);
                    if let Some(slot) = slot {
                        *slot += 1;
                    }
                    n
                });
                let path = Path {
                    parent,
                    name: field.name,
                    index,
                };
                match field.rule {
                    Rule::Text(max) => {
                        let max = max as usize;
                        if value.len() > max {
                            let chars = characters(value);
                            if chars > max {
                                found.push(
                                    &path,
                                    format!("at most {max} characters (this one has {chars})"),
                                );
                            }
                        }
                    }
                    Rule::Message(inner) => {
                        scan(&MESSAGES[inner], value, Some(&path), depth + 1, found)?;
                    }
                }
            }
            // An end-group tag outside a group, or wire types 6 and 7.
            _ => return None,
        }
    }
    Some(())
}

/// Skips the rest of a group (proto2's wire types 3 and 4, which prost
/// skips in unknown fields) up to its matching end tag.
fn skip_group(bytes: &mut &[u8], number: u32, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    loop {
        let key = varint(bytes)?;
        let inner = u32::try_from(key >> 3).ok().filter(|n| *n > 0)?;
        match key & 7 {
            0 => {
                varint(bytes)?;
            }
            1 => *bytes = bytes.get(8..)?,
            5 => *bytes = bytes.get(4..)?,
            2 => {
                let len = usize::try_from(varint(bytes)?).ok()?;
                *bytes = bytes.get(len..)?;
            }
            3 => skip_group(bytes, inner, depth + 1)?,
            4 if inner == number => return Some(()),
            _ => return None,
        }
    }
}

/// Characters in UTF-8 bytes: the bytes that do not continue a character.
fn characters(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| (**b as i8) >= -0x40).count()
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// INVALID_ARGUMENT naming each field over its limit.
fn refusal(violations: Vec<Violation>) -> Status {
    let message = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field, v.description);
    }
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {message}"),
        details,
    )
}

/// The codec of every csp client and server: prost's, with the request's
/// limits checked on the encoded bytes before decoding.
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + prost::Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder {
            inner: ProstDecoder::new(BufferSettings::default()),
            request: request_index(U::PACKAGE, U::NAME).is_some(),
        }
    }
}

/// Decodes `U` after checking its limits (when `U` is a request).
#[derive(Debug, Clone)]
pub struct BoundedDecoder<U> {
    inner: ProstDecoder<U>,
    request: bool,
}

impl<U> Decoder for BoundedDecoder<U>
where
    U: prost::Message + prost::Name + Default,
{
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if self.request {
            use prost::bytes::Buf as _;
            let chunk = buf.chunk();
            let found = if chunk.len() == buf.remaining() {
                violations(U::PACKAGE, U::NAME, chunk)
            } else {
                let whole = buf.copy_to_bytes(buf.remaining());
                match violations(U::PACKAGE, U::NAME, &whole) {
                    Ok(found) if found.is_empty() => {
                        return U::decode(whole).map(Some).map_err(|e| {
                            Status::internal(format!("failed to decode the message: {e}"))
                        });
                    }
                    other => other,
                }
            };
            match found {
                Ok(found) if found.is_empty() => {}
                Ok(found) => return Err(refusal(found)),
                Err(Malformed) => {
                    return Err(refusal(vec![Violation {
                        field: "request".to_owned(),
                        description: "not a valid protobuf encoding of the request message"
                            .to_owned(),
                    }]));
                }
            }
        }
        self.inner.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::v1::GetProductRequest;
    use crate::ordering::v1::{OrderLineRequest, PlaceOrderRequest};
    use prost::Message as _;
    use prost::Name as _;

    fn check<M: prost::Message + prost::Name>(message: &M) -> Vec<Violation> {
        violations(M::PACKAGE, M::NAME, &message.encode_to_vec()).unwrap()
    }

    #[test]
    fn the_build_read_the_same_limits_the_comments_give() {
        let set =
            <prost_types::FileDescriptorSet as prost::Message>::decode(crate::FILE_DESCRIPTOR_SET)
                .unwrap();
        let specs = spec::collect(&set).unwrap();
        assert_eq!(specs.len(), MESSAGES.len());
        let requests = specs.iter().filter(|s| s.request).count();
        assert!(requests >= 30, "only {requests} requests");
        for (spec, table) in specs.iter().zip(MESSAGES) {
            assert_eq!(
                spec.fields.len(),
                table.fields.len(),
                "{}",
                spec.full_name()
            );
            assert!(spec.fields.len() <= 64, "{}", spec.full_name());
            assert_eq!(
                request_index(&spec.package, &spec.name).is_some(),
                spec.request && !spec.itemwise,
                "{}",
                spec.full_name()
            );
        }
    }

    #[test]
    fn limits_are_read_from_the_comment_phrase() {
        assert_eq!(
            spec::documented_limit("Required. At most 64 characters."),
            Some(64)
        );
        assert_eq!(
            spec::documented_limit("an id,\n at most 36\n characters"),
            Some(36)
        );
        assert_eq!(spec::documented_limit("At most 100 products."), None);
        assert_eq!(spec::documented_limit("At most 0 characters."), None);
        assert_eq!(spec::documented_limit("no limit"), None);
    }

    #[test]
    fn a_value_within_its_limit_passes_and_one_past_it_is_named() {
        let within = GetProductRequest {
            product_id: "p".repeat(64),
            market: "US".into(),
        };
        assert_eq!(check(&within), vec![]);
        let over = GetProductRequest {
            product_id: "p".repeat(65),
            market: "US".into(),
        };
        assert_eq!(
            check(&over),
            vec![Violation {
                field: "product_id".into(),
                description: "at most 64 characters (this one has 65)".into(),
            }]
        );
    }

    #[test]
    fn characters_are_counted_not_bytes() {
        // 64 three-byte characters: 192 bytes, within a 64-character limit.
        let wide = GetProductRequest {
            product_id: "€".repeat(64),
            market: String::new(),
        };
        assert_eq!(check(&wide), vec![]);
        let wider = GetProductRequest {
            product_id: "€".repeat(65),
            market: String::new(),
        };
        assert_eq!(check(&wider).len(), 1);
    }

    #[test]
    fn nested_and_repeated_fields_carry_their_path() {
        let request = PlaceOrderRequest {
            lines: vec![
                OrderLineRequest {
                    sku_id: "ok".into(),
                    ..Default::default()
                },
                OrderLineRequest {
                    sku_id: "x".repeat(10_000),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let found = check(&request);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "lines[1].sku_id");
    }

    #[test]
    fn many_violations_are_counted_past_the_first_ten() {
        let request = PlaceOrderRequest {
            lines: (0..25)
                .map(|_| OrderLineRequest {
                    sku_id: "x".repeat(1000),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let found = check(&request);
        assert_eq!(found.len(), MAX_VIOLATIONS + 1);
        assert_eq!(found[MAX_VIOLATIONS].field, "request");
        assert!(found[MAX_VIOLATIONS].description.starts_with("15 more"));
    }

    #[test]
    fn bytes_that_do_not_parse_are_malformed() {
        let (package, name) = (GetProductRequest::PACKAGE, GetProductRequest::NAME);
        assert_eq!(violations(package, name, &[0x0a, 0xff]), Err(Malformed));
        assert_eq!(
            violations(package, name, &[0x0c]),
            Err(Malformed),
            "end group"
        );
        assert_eq!(
            violations(package, name, &[0x07]),
            Err(Malformed),
            "wire type 7"
        );
        assert_eq!(
            violations(package, name, &[0x02, 0x00]),
            Err(Malformed),
            "field 0"
        );
        assert_eq!(
            violations(package, name, &[0x7b]),
            Err(Malformed),
            "open group"
        );
    }

    #[test]
    fn a_group_does_not_hide_the_fields_after_it() {
        // An unknown empty group (field 15), one with a field inside, then
        // an oversized product_id: prost skips the groups and decodes the
        // rest, so the walker must too.
        let mut encoded = vec![0x7b, 0x7c, 0x7b, 0x08, 0x01, 0x7c];
        encoded.extend(
            GetProductRequest {
                product_id: "p".repeat(65),
                market: String::new(),
            }
            .encode_to_vec(),
        );
        assert!(
            GetProductRequest::decode(&encoded[..]).is_ok(),
            "prost takes it"
        );
        let found = violations(
            GetProductRequest::PACKAGE,
            GetProductRequest::NAME,
            &encoded,
        );
        assert_eq!(found.unwrap().len(), 1);
    }

    #[test]
    fn batch_items_are_checked_one_by_one_not_by_the_codec() {
        use crate::audit::v1::{Activity, ActivityRecord, RecordActivitiesRequest};
        let record = ActivityRecord {
            partner_id: "p".repeat(65),
            activity: Some(Activity {
                user_id: "u".repeat(300),
                ..Default::default()
            }),
        };
        let batch = RecordActivitiesRequest {
            records: vec![record.clone()],
        };
        assert_eq!(check(&batch), vec![], "the codec lets the batch through");
        let fields: Vec<String> = item_violations(&record)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["partner_id", "activity.user_id"]);
    }

    #[test]
    fn limits_follow_the_proto_comments() {
        // Numbers written here by hand, from the proto comments.
        let expected = [
            ("csp.catalog.v1", "GetProductRequest", 1, 64),
            ("csp.catalog.v1", "ListProductsRequest", 1, 2),
            ("csp.catalog.v1", "ListProductsRequest", 4, 4096),
            ("csp.support.v1", "CreateTicketRequest", 3, 200),
            ("csp.support.v1", "CreateTicketRequest", 4, 10_000),
            ("csp.ordering.v1", "CreateCustomerRequest", 2, 255),
        ];
        for (package, name, number, max) in expected {
            let index = request_index(package, name).unwrap();
            let field = MESSAGES[index]
                .fields
                .iter()
                .find(|f| f.number == number)
                .unwrap();
            assert!(
                matches!(field.rule, Rule::Text(m) if m == max),
                "{package}.{name} field {number}: {:?}",
                field.rule
            );
        }
    }

    #[test]
    fn a_refusal_is_invalid_argument_with_bad_request_details() {
        let status = refusal(vec![Violation {
            field: "product_id".into(),
            description: "at most 64 characters (this one has 65)".into(),
        }]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "product_id");
    }
}
