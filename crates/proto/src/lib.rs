//! Generated code for the csp protobuf contracts and the encoded descriptor
//! set that reflection serves and the gateway reads its routing table from.

/// The encoded `FileDescriptorSet` of every csp proto file and its imports,
/// with source info (comments) and custom options intact.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/csp_descriptor.bin"));

pub mod bounds;

/// `csp.auth.v1`: roles and the authorization options on RPCs.
pub mod auth {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("csp.auth.v1");
    }
}

/// `csp.common.v1`: money.
pub mod common {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("csp.common.v1");
    }
}

/// `csp.catalog.v1`: products, SKUs, prices, markets.
pub mod catalog {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("csp.catalog.v1");
    }
}

/// `csp.ordering.v1`: customers, orders, subscriptions and their events.
pub mod ordering {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("csp.ordering.v1");
    }
}

/// `csp.licensing.v1`: software, product keys and download links.
pub mod licensing {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("csp.licensing.v1");
    }
}

/// `csp.audit.v1`: the activity log.
pub mod audit {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("csp.audit.v1");
    }
}

/// `csp.support.v1`: support and refund tickets.
pub mod support {
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("csp.support.v1");
    }
}
