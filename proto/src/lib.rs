//! gRPC contracts of Cloudlysis, generated from `proto/*.proto` by tonic codegen.
//!
//! This is the only crate that runs code generation. Request context (tenant, correlation id,
//! trace, idempotency key) travels in gRPC metadata — see `cloudlysis_runtime::context` — never
//! in these messages.
//!
//! Layout:
//! - [`aggregate`] — `aggregate.gateway.v1.CommandService` (Gateway → Aggregate node).
//! - [`projection`] — `projection.gateway.v1.QueryService` (Gateway → Projection node).
//! - [`projection_admin`] — `projection.admin.v1.ProjectionAdmin` (operators → Projection node).
//! - [`runner`] — `runner.admin.v1.RunnerAdmin` (operators → Runner node).
//! - [`workflows`] — `runner.gateway.v1.WorkflowService` (Gateway → Runner node).
//! - [`node`] — `node.admin.v1.NodeAdmin` (describe any node).
//! - [`ops`] — `ops.admin.v1.OpsAdmin` (poison records and the audit trail).
//! - [`FILE_DESCRIPTOR_SET`] — the encoded descriptors, for gRPC server reflection.

/// `aggregate.gateway.v1`: the command service.
pub mod aggregate {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("aggregate.gateway.v1");

    /// The path of `CommandService/Execute` (what a call in the Gateway's process names).
    pub const EXECUTE_PATH: &str = "/aggregate.gateway.v1.CommandService/Execute";
}

/// `projection.gateway.v1`: the query service.
pub mod projection {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("projection.gateway.v1");

    /// The path of `QueryService/Get`.
    pub const GET_PATH: &str = "/projection.gateway.v1.QueryService/Get";
    /// The path of `QueryService/List`.
    pub const LIST_PATH: &str = "/projection.gateway.v1.QueryService/List";
}

/// `projection.admin.v1`: view status and rebuilds.
pub mod projection_admin {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("projection.admin.v1");
}

/// `runner.admin.v1`: runner administration.
pub mod runner {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("runner.admin.v1");
}

/// `runner.gateway.v1`: starting and reading workflow instances.
pub mod workflows {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("runner.gateway.v1");
}

/// `node.admin.v1`: node description (role, version, supervision tree, mailboxes).
pub mod node {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("node.admin.v1");
}

/// `ops.admin.v1`: poison records (list, inspect, redrive, purge) and the audit trail.
pub mod ops {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("ops.admin.v1");
}

/// Encoded `FileDescriptorSet` of every Cloudlysis service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cloudlysis_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn method_paths_name_their_generated_services() {
        let service = super::aggregate::command_service_server::SERVICE_NAME;
        assert_eq!(
            super::aggregate::EXECUTE_PATH,
            format!("/{service}/Execute")
        );
        let service = super::projection::query_service_server::SERVICE_NAME;
        assert_eq!(super::projection::GET_PATH, format!("/{service}/Get"));
        assert_eq!(super::projection::LIST_PATH, format!("/{service}/List"));
    }

    #[test]
    fn descriptor_set_names_every_service() {
        let fds = prost_types_free_decode(super::FILE_DESCRIPTOR_SET);
        for package in [
            "aggregate.gateway.v1",
            "projection.gateway.v1",
            "projection.admin.v1",
            "runner.admin.v1",
            "runner.gateway.v1",
            "node.admin.v1",
        ] {
            assert!(fds.contains(&package.to_string()), "{package} missing");
        }
    }

    #[test]
    fn messages_round_trip_through_prost() {
        let req = super::aggregate::ExecuteRequest {
            aggregate_type: "account".into(),
            aggregate_id: "a-1".into(),
            command_type: "Deposit".into(),
            payload_json: br#"{"amount":5}"#.to_vec(),
            expected_version: Some(3),
        };
        let bytes = req.encode_to_vec();
        let back = super::aggregate::ExecuteRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, req);
    }

    /// Reads the package names out of the descriptor set without pulling in prost-types:
    /// field 1 of `FileDescriptorSet` is `repeated FileDescriptorProto`, whose field 2 is `package`.
    fn prost_types_free_decode(bytes: &[u8]) -> Vec<String> {
        #[derive(Clone, PartialEq, Message)]
        struct File {
            #[prost(string, optional, tag = "2")]
            package: Option<String>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct Set {
            #[prost(message, repeated, tag = "1")]
            file: Vec<File>,
        }
        Set::decode(bytes)
            .unwrap()
            .file
            .into_iter()
            .filter_map(|f| f.package)
            .collect()
    }
}
