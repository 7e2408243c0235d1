//! Cloudlysis gateway: the HTTP/JSON edge — authentication, deny-by-default authorization,
//! tenant isolation, routing over gRPC, channel pool and probe fan-out.
//!
//! Placeholder: filled by the command-path issue. Never depends on `cloudlysis-actors`.
