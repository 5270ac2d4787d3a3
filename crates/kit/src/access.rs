//! The access rules of the API, read from the descriptor set: which services
//! are public, which roles may call each public RPC
//! (`option (csp.auth.v1.access)`), and which services may call each RPC
//! (`option (csp.auth.v1.callers)`). The gateway routes and authorizes users
//! with [`public_methods`]; every backend checks each call again with
//! [`Policy`]. A method without an option gets an empty set, so it is denied
//! to everyone.

use std::collections::HashMap;

use anyhow::Context as _;
use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor, Value};

use crate::roles::{Role, RoleSet};
use crate::service_name::{ServiceName, ServiceSet};

/// One public RPC.
#[derive(Clone, Debug)]
pub struct PublicMethod {
    /// The HTTP/2 path, `/csp.catalog.v1.CatalogService/ListProducts`.
    pub path: String,
    /// The full service name, `csp.catalog.v1.CatalogService`.
    pub service: String,
    /// The proto package, `csp.catalog.v1`.
    pub package: String,
    /// The method name, `ListProducts`.
    pub method: String,
    /// The roles that may call it; empty when the option is missing.
    pub roles: RoleSet,
    /// Whether the method declares the access option at all.
    pub declares_access: bool,
    /// Whether the server streams its response.
    pub server_streaming: bool,
    /// Whether the client streams its request (an upload).
    pub client_streaming: bool,
}

/// Every RPC of every public csp service (those under `csp.` without
/// `option (csp.auth.v1.internal) = true`), in descriptor order.
pub fn public_methods(encoded_descriptor_set: &[u8]) -> anyhow::Result<Vec<PublicMethod>> {
    let pool = DescriptorPool::decode(encoded_descriptor_set)
        .context("cannot decode the descriptor set")?;
    let access = pool
        .get_extension_by_name("csp.auth.v1.access")
        .context("the descriptor set lacks the csp.auth.v1.access option")?;
    let internal = pool
        .get_extension_by_name("csp.auth.v1.internal")
        .context("the descriptor set lacks the csp.auth.v1.internal option")?;

    let mut methods = Vec::new();
    for service in pool.services() {
        if !service.full_name().starts_with("csp.") {
            continue;
        }
        let options = service.options();
        if options.has_extension(&internal)
            && matches!(*options.get_extension(&internal), Value::Bool(true))
        {
            continue;
        }
        for method in service.methods() {
            let options = method.options();
            let declares_access = options.has_extension(&access);
            let roles = enum_list(&options, &access, "roles")
                .filter_map(Role::from_proto)
                .collect();
            methods.push(PublicMethod {
                path: format!("/{}/{}", service.full_name(), method.name()),
                service: service.full_name().to_owned(),
                package: service.package_name().to_owned(),
                method: method.name().to_owned(),
                roles,
                declares_access,
                server_streaming: method.is_server_streaming(),
                client_streaming: method.is_client_streaming(),
            });
        }
    }
    Ok(methods)
}

/// The numbers in the repeated enum field `field` of option `extension`, or
/// none when the option is absent.
fn enum_list(
    options: &DynamicMessage,
    extension: &ExtensionDescriptor,
    field: &str,
) -> impl Iterator<Item = i32> {
    let mut numbers = Vec::new();
    if options.has_extension(extension)
        && let Value::Message(message) = &*options.get_extension(extension)
        && let Some(Value::List(values)) = message.get_field_by_name(field).as_deref()
    {
        numbers.extend(values.iter().filter_map(Value::as_enum_number));
    }
    numbers.into_iter()
}

/// Who may call one RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodAccess {
    /// Whether the RPC belongs to a public service (users reach it through
    /// the gateway).
    pub public: bool,
    /// The roles a user needs (one of them); empty for internal RPCs.
    pub roles: RoleSet,
    /// The services that may call it.
    pub callers: ServiceSet,
}

/// Who may call every csp RPC, by HTTP/2 path: the rules every backend
/// enforces on each call, whoever signed the caller's identity.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    methods: HashMap<String, MethodAccess>,
}

impl Policy {
    /// The rules of every RPC of every csp service in the descriptor set.
    pub fn from_descriptor_set(encoded_descriptor_set: &[u8]) -> anyhow::Result<Self> {
        let pool = DescriptorPool::decode(encoded_descriptor_set)
            .context("cannot decode the descriptor set")?;
        let access = pool
            .get_extension_by_name("csp.auth.v1.access")
            .context("the descriptor set lacks the csp.auth.v1.access option")?;
        let callers = pool
            .get_extension_by_name("csp.auth.v1.callers")
            .context("the descriptor set lacks the csp.auth.v1.callers option")?;
        let internal = pool
            .get_extension_by_name("csp.auth.v1.internal")
            .context("the descriptor set lacks the csp.auth.v1.internal option")?;
        let mut methods = HashMap::new();
        for service in pool.services() {
            if !service.full_name().starts_with("csp.") {
                continue;
            }
            let options = service.options();
            let public = !(options.has_extension(&internal)
                && matches!(*options.get_extension(&internal), Value::Bool(true)));
            for method in service.methods() {
                let options = method.options();
                let roles = if public {
                    enum_list(&options, &access, "roles")
                        .filter_map(Role::from_proto)
                        .collect()
                } else {
                    RoleSet::EMPTY
                };
                let callers = enum_list(&options, &callers, "services")
                    .filter_map(ServiceName::from_proto)
                    .collect();
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    MethodAccess {
                        public,
                        roles,
                        callers,
                    },
                );
            }
        }
        Ok(Self { methods })
    }

    /// The rules of the RPC at `path`, or `None` for a path no csp service
    /// declares.
    pub fn get(&self, path: &str) -> Option<&MethodAccess> {
        self.methods.get(path)
    }

    /// Every RPC with its rules.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MethodAccess)> {
        self.methods
            .iter()
            .map(|(path, access)| (path.as_str(), access))
    }
}

/// Which services may produce each activity type (`csp.audit.v1.ActivityType`
/// numbers), from `option (csp.auth.v1.producers)` on the enum's values.
pub fn activity_producers(
    encoded_descriptor_set: &[u8],
) -> anyhow::Result<HashMap<i32, ServiceSet>> {
    let pool = DescriptorPool::decode(encoded_descriptor_set)
        .context("cannot decode the descriptor set")?;
    let producers = pool
        .get_extension_by_name("csp.auth.v1.producers")
        .context("the descriptor set lacks the csp.auth.v1.producers option")?;
    let kinds = pool
        .get_enum_by_name("csp.audit.v1.ActivityType")
        .context("the descriptor set lacks csp.audit.v1.ActivityType")?;
    Ok(kinds
        .values()
        .map(|value| {
            let services = enum_list(&value.options(), &producers, "services")
                .filter_map(ServiceName::from_proto)
                .collect();
            (value.number(), services)
        })
        .collect())
}

/// The names of the public csp services.
pub fn public_services(encoded_descriptor_set: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut services: Vec<String> = public_methods(encoded_descriptor_set)?
        .into_iter()
        .map(|m| m.service)
        .collect();
    services.dedup();
    Ok(services)
}
