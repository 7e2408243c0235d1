//! Synthetic event loads for benchmarks and tests: `Deposited` commits of the `account`
//! aggregate published straight to `AGGREGATE_EVENTS`, bypassing the aggregate node (whose
//! version checks they do not go through).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::envelope::{Commit, EventEnvelope};
use cloudlysis_runtime::nats::{self, NatsError};
use cloudlysis_runtime::subject::{self, SubjectToken};
use futures::StreamExt;

/// A load of deposits: `events` commits spread round-robin over `accounts` accounts named
/// `<prefix><n>`.
#[derive(Debug, Clone)]
pub struct Deposits {
    /// Tenant of every event.
    pub tenant: TenantId,
    /// Account ids are `<prefix>0`, `<prefix>1`, … (the prefix must keep them subject tokens).
    pub prefix: String,
    /// How many commits (one event each).
    pub events: u64,
    /// Over how many accounts.
    pub accounts: u64,
    /// The amount of deposit `i`.
    pub amount: fn(u64) -> i64,
    /// Publishes in flight at once.
    pub window: usize,
}

/// What a load published.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Highest stream sequence acknowledged.
    pub last_sequence: u64,
    /// The balance each account should have: the fold of the load.
    pub balances: BTreeMap<String, i64>,
}

impl Deposits {
    /// Account `i` of the load.
    pub fn account(&self, i: u64) -> String {
        format!("{}{}", self.prefix, i % self.accounts.max(1))
    }

    /// Commit `i`: one `Deposited` event, with the account's next version.
    pub fn commit(&self, i: u64) -> Commit {
        Commit {
            schema_version: 1,
            commit_id: format!("{}c-{i}", self.prefix),
            events: vec![EventEnvelope {
                event_id: format!("{}e-{i}", self.prefix),
                tenant_id: self.tenant.to_string(),
                aggregate_type: "account".into(),
                aggregate_id: self.account(i),
                sequence: i / self.accounts.max(1) + 1,
                event_type: "Deposited".into(),
                schema_version: 1,
                occurred_at: "2026-11-27T00:00:00Z".into(),
                payload: serde_json::json!({ "amount": (self.amount)(i) }),
                correlation_id: None,
                traceparent: None,
            }],
        }
    }

    /// Publishes the load, `window` publishes in flight, each acknowledged within 30 s.
    pub async fn publish(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<Published, NatsError> {
        let ctx = RequestContext::new(self.tenant.clone());
        let account_type = SubjectToken::new("account").expect("a valid token");
        let mut out = Published::default();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        for i in 0..self.events {
            let account = self.account(i);
            *out.balances.entry(account.clone()).or_default() += (self.amount)(i);
            let id = SubjectToken::new(&account).map_err(|e| NatsError::Publish {
                subject: account.clone(),
                reason: e.to_string(),
            })?;
            let subj = subject::aggregate_event(&self.tenant, &account_type, &id);
            let payload = Bytes::from(serde_json::to_vec(&self.commit(i)).unwrap_or_default());
            let (js, ctx, msg_id) = (js.clone(), ctx.clone(), format!("{}c-{i}", self.prefix));
            in_flight.push(async move {
                nats::publish(
                    &js,
                    subj,
                    &ctx,
                    &msg_id,
                    None,
                    payload,
                    Duration::from_secs(30),
                )
                .await
                .map(|ack| ack.sequence)
            });
            if in_flight.len() >= self.window.max(1)
                && let Some(seq) = in_flight.next().await
            {
                out.last_sequence = out.last_sequence.max(seq?);
            }
        }
        while let Some(seq) = in_flight.next().await {
            out.last_sequence = out.last_sequence.max(seq?);
        }
        Ok(out)
    }
}
