//! Reads the length limits of request fields from the proto comments.
//!
//! Shared by the build script (which refuses to build when a request's
//! string field has no documented limit, and writes the limits out as a
//! table) and by this crate's tests. Only `std` and `prost_types`.
//!
//! The rule: every `string` field of every message reachable from an RPC's
//! request (through message-typed fields, in `csp.*` packages) says
//! "At most N characters." in its leading comment. For a repeated field the
//! limit applies to each element.

use std::collections::{BTreeMap, VecDeque};

/// Requests that carry a batch of independent items (producers' records,
/// ordering events): the codec does not refuse the whole batch for one bad
/// item; the handler checks each item with `bounds::item_violations` and
/// rejects only that one.
pub const ITEMWISE: &[&str] = &[
    "csp.audit.v1.RecordActivitiesRequest",
    "csp.licensing.v1.ApplyOrderingEventsRequest",
];

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// What a request field is checked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A string of at most this many characters (Unicode scalar values).
    Text(u32),
    /// A message, checked by the message's own rules (its full name).
    Message(String),
}

/// One checked field of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field number on the wire.
    pub number: u32,
    /// The field name, as paths in errors spell it.
    pub name: String,
    /// Whether the field repeats (paths carry an index).
    pub repeated: bool,
    /// What is checked.
    pub rule: Rule,
}

/// A message reachable from a request, with its checked fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageSpec {
    /// The package, for example `csp.catalog.v1`.
    pub package: String,
    /// The name within the package, for example `GetProductRequest` or
    /// `PlaceOrderRequest.Line`.
    pub name: String,
    /// Whether some RPC takes this message as its request.
    pub request: bool,
    /// Whether it is a request whose items are checked one by one
    /// ([`ITEMWISE`]), not by the codec.
    pub itemwise: bool,
    /// The fields with a rule, by field number.
    pub fields: Vec<FieldSpec>,
}

impl MessageSpec {
    /// `package.name`.
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.package, self.name)
    }
}

/// Every message reachable from a request of a `csp.*` service, ordered by
/// full name, or every problem found (one line each).
pub fn collect(set: &FileDescriptorSet) -> Result<Vec<MessageSpec>, Vec<String>> {
    // Every csp message by full name, with its leading field comments.
    let mut messages: BTreeMap<String, (String, String, &DescriptorProto, Vec<String>)> =
        BTreeMap::new();
    let mut requests = Vec::new();
    let mut problems = Vec::new();
    for file in &set.file {
        let package = file.package();
        if !package.starts_with("csp.") {
            continue;
        }
        let comments = leading_comments(file);
        for (index, message) in file.message_type.iter().enumerate() {
            let path = vec![4, index as i32];
            gather(package, "", message, &path, &comments, &mut messages);
        }
        for service in &file.service {
            for method in &service.method {
                let input = method.input_type().trim_start_matches('.').to_owned();
                if !input.starts_with("csp.") {
                    problems.push(format!(
                        "{package}.{}.{}: a request must be a csp message, not {input}",
                        service.name(),
                        method.name()
                    ));
                }
                requests.push(input);
            }
        }
    }

    // Walk from the requests through message-typed fields.
    let mut reached: BTreeMap<String, MessageSpec> = BTreeMap::new();
    // A map's entry message takes its limits from the map field's comment.
    let mut queue: VecDeque<(String, bool, Option<String>)> =
        requests.iter().map(|r| (r.clone(), true, None)).collect();
    while let Some((full_name, request, inherited)) = queue.pop_front() {
        if let Some(existing) = reached.get_mut(&full_name) {
            existing.request |= request;
            continue;
        }
        let Some((package, name, message, field_comments)) = messages.get(&full_name) else {
            problems.push(format!("{full_name}: not found among the csp messages"));
            continue;
        };
        if request && name.contains('.') {
            problems.push(format!(
                "{full_name}: a request must be a top-level message, not a nested one"
            ));
        }
        let mut fields = Vec::new();
        for (field, comment) in message.field.iter().zip(field_comments) {
            let repeated = field.label() == Label::Repeated;
            let comment = inherited.as_deref().unwrap_or(comment);
            match field.r#type() {
                Type::String => match documented_limit(comment) {
                    Some(max) => fields.push(FieldSpec {
                        number: field.number() as u32,
                        name: field.name().to_owned(),
                        repeated,
                        rule: Rule::Text(max),
                    }),
                    None => problems.push(format!(
                        "{full_name}.{}: a string field of a request needs \"At most N \
                         characters.\" in its comment",
                        field.name()
                    )),
                },
                Type::Message => {
                    let target = field.type_name().trim_start_matches('.').to_owned();
                    if target.starts_with("csp.") {
                        fields.push(FieldSpec {
                            number: field.number() as u32,
                            name: field.name().to_owned(),
                            repeated,
                            rule: Rule::Message(target.clone()),
                        });
                        let is_map = messages
                            .get(&target)
                            .and_then(|(_, _, m, _)| m.options.as_ref())
                            .is_some_and(|o| o.map_entry());
                        queue.push_back((target, false, is_map.then(|| comment.to_owned())));
                    }
                }
                _ => {}
            }
        }
        fields.sort_by_key(|f| f.number);
        reached.insert(
            full_name.clone(),
            MessageSpec {
                package: package.clone(),
                name: name.clone(),
                request,
                itemwise: ITEMWISE.contains(&full_name.as_str()),
                fields,
            },
        );
    }
    if problems.is_empty() {
        Ok(reached.into_values().collect())
    } else {
        problems.sort();
        problems.dedup();
        Err(problems)
    }
}

/// The N of "At most N characters" (any case) in a comment.
pub fn documented_limit(comment: &str) -> Option<u32> {
    let lower = comment.to_ascii_lowercase().replace(['\n', '\r'], " ");
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("at most ") {
        rest = &rest[at + "at most ".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = rest[digits.len()..].trim_start();
        if !digits.is_empty() && after.starts_with("characters") {
            return digits.parse().ok().filter(|n| *n > 0);
        }
    }
    None
}

type Gathered<'a> = BTreeMap<String, (String, String, &'a DescriptorProto, Vec<String>)>;

fn gather<'a>(
    package: &str,
    outer: &str,
    message: &'a DescriptorProto,
    path: &[i32],
    comments: &BTreeMap<Vec<i32>, String>,
    out: &mut Gathered<'a>,
) {
    let name = if outer.is_empty() {
        message.name().to_owned()
    } else {
        format!("{outer}.{}", message.name())
    };
    let field_comments = (0..message.field.len())
        .map(|i| {
            let mut field_path = path.to_vec();
            field_path.extend([2, i as i32]);
            comments.get(&field_path).cloned().unwrap_or_default()
        })
        .collect();
    for (index, nested) in message.nested_type.iter().enumerate() {
        let mut nested_path = path.to_vec();
        nested_path.extend([3, index as i32]);
        gather(package, &name, nested, &nested_path, comments, out);
    }
    out.insert(
        format!("{package}.{name}"),
        (package.to_owned(), name, message, field_comments),
    );
}

fn leading_comments(file: &prost_types::FileDescriptorProto) -> BTreeMap<Vec<i32>, String> {
    let mut comments = BTreeMap::new();
    if let Some(info) = &file.source_code_info {
        for location in &info.location {
            if let Some(comment) = &location.leading_comments {
                comments.insert(location.path.clone(), comment.clone());
            }
        }
    }
    comments
}
