//! The access rules of the public API, read from the descriptor set: which
//! services are public, and which roles may call each of their RPCs
//! (`option (csp.auth.v1.access)`). The gateway routes and authorizes with
//! this table; a method without the option gets an empty role set, so it is
//! denied to everyone.

use anyhow::Context as _;
use prost_reflect::{DescriptorPool, Value};

use crate::roles::{Role, RoleSet};

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
            let mut roles = RoleSet::EMPTY;
            if declares_access
                && let Value::Message(message) = &*options.get_extension(&access)
                && let Some(Value::List(values)) = message.get_field_by_name("roles").as_deref()
            {
                roles = values
                    .iter()
                    .filter_map(|value| value.as_enum_number().and_then(Role::from_proto))
                    .collect();
            }
            methods.push(PublicMethod {
                path: format!("/{}/{}", service.full_name(), method.name()),
                service: service.full_name().to_owned(),
                package: service.package_name().to_owned(),
                method: method.name().to_owned(),
                roles,
                declares_access,
                server_streaming: method.is_server_streaming(),
            });
        }
    }
    Ok(methods)
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
