//! Cloudlysis supervision: OTP-style supervisors (one-for-one, one-for-all, rest-for-one),
//! restart policies with intensity and backoff, and node-wide tree snapshots.
//!
//! Placeholder: filled by the actor-core issue. Depends only on `cloudlysis-runtime`.
