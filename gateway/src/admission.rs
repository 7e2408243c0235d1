//! Per-tenant fair admission of API requests: one tenant flooding the Gateway cannot starve the
//! others. The Gateway's budget (`gateway.max_in_flight`) is shared by the tenants that have
//! requests in flight, in proportion to their weights (`gateway.tenant_weights`, default 1):
//!
//! | situation | a tenant may have in flight |
//! |---|---|
//! | it is the only tenant with requests in flight | the budget minus a reserve of 10 % (at least 1), so a newcomer always finds room at once |
//! | other tenants have requests in flight | its weighted share: `budget × weight / (sum of the weights of the active tenants)`, at least 1 |
//! | always | at most `gateway.tenant_max_in_flight` |
//!
//! A request beyond its tenant's share is refused at once with 429 and `Retry-After` (the other
//! tenants are served meanwhile); a request when the whole budget is taken gets 503 with
//! `Retry-After`. Nothing queues: a request is admitted or refused at its arrival. A permit is
//! released when the request ends (also when its client goes away).
//!
//! | metric | labels |
//! |---|---|
//! | `cloudlysis_gateway_admission_rejections_total` | `reason` (`full`, `tenant_share`, `tenant_limit`) |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cloudlysis_runtime::metrics::names;

use crate::Gateway;
use crate::commands::header_str;
use crate::problem::Problem;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The Gateway's whole budget is in use (503).
    Full {
        /// The budget.
        budget: usize,
    },
    /// The tenant has its share in flight (429): of the budget less a tenth kept for other
    /// tenants when it is alone, of its weight among the active tenants otherwise.
    TenantShare {
        /// The tenant's share now.
        share: usize,
        /// True when other tenants have requests in flight.
        others_active: bool,
    },
    /// The tenant has `gateway.tenant_max_in_flight` in flight (429).
    TenantLimit {
        /// The limit.
        limit: usize,
    },
}

impl Refusal {
    /// The `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Full { .. } => "full",
            Refusal::TenantShare { .. } => "tenant_share",
            Refusal::TenantLimit { .. } => "tenant_limit",
        }
    }
}

/// The admission controller of one Gateway.
#[derive(Debug)]
pub struct Admission {
    budget: usize,
    tenant_limit: usize,
    weights: HashMap<String, u32>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    by_tenant: HashMap<String, usize>,
}

/// An admitted request; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    tenant: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self
            .admission
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.in_flight = s.in_flight.saturating_sub(1);
        if let Some(n) = s.by_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                s.by_tenant.remove(&self.tenant);
            }
        }
    }
}

impl Admission {
    /// A controller for `budget` requests at once, at most `tenant_limit` per tenant, with
    /// `weights` per tenant (others weigh 1).
    pub fn new(budget: usize, tenant_limit: usize, weights: HashMap<String, u32>) -> Arc<Self> {
        for reason in ["full", "tenant_share", "tenant_limit"] {
            metrics::counter!(names::GATEWAY_ADMISSION_REJECTIONS, "reason" => reason).increment(0);
        }
        Arc::new(Self {
            budget: budget.max(1),
            tenant_limit: tenant_limit.max(1),
            weights,
            state: Mutex::default(),
        })
    }

    fn weight(&self, tenant: &str) -> u64 {
        u64::from(self.weights.get(tenant).copied().unwrap_or(1).max(1))
    }

    /// Admits a request of `tenant`, or says why not (see the module docs).
    pub fn try_admit(self: &Arc<Self>, tenant: &str) -> Result<Permit, Refusal> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = s.by_tenant.get(tenant).copied().unwrap_or(0);
        // A tenant over its own share or limit hears about that (429) before the budget (503).
        let others: u64 = s
            .by_tenant
            .keys()
            .filter(|t| t.as_str() != tenant)
            .map(|t| self.weight(t))
            .sum();
        let share = if others == 0 {
            let reserve = if self.budget > 1 {
                self.budget.div_ceil(10)
            } else {
                0
            };
            self.budget - reserve
        } else {
            let w = self.weight(tenant);
            ((self.budget as u64 * w / (w + others)) as usize).max(1)
        };
        // A share or limit that is the whole budget is not one: being at it means full (503).
        let refused = if mine >= self.tenant_limit && self.tenant_limit < self.budget {
            Some(Refusal::TenantLimit {
                limit: self.tenant_limit,
            })
        } else if mine >= share && share < self.budget {
            Some(Refusal::TenantShare {
                share,
                others_active: others > 0,
            })
        } else if s.in_flight >= self.budget {
            Some(Refusal::Full {
                budget: self.budget,
            })
        } else {
            None
        };
        if let Some(r) = refused {
            metrics::counter!(names::GATEWAY_ADMISSION_REJECTIONS, "reason" => r.reason())
                .increment(1);
            return Err(r);
        }
        s.in_flight += 1;
        *s.by_tenant.entry(tenant.to_string()).or_default() += 1;
        Ok(Permit {
            admission: self.clone(),
            tenant: tenant.to_string(),
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_flight
    }
}

/// The middleware of the API routes: a request whose token verifies is admitted for its
/// tenant or refused at once; one whose token does not verify goes on to its route's 401.
pub(crate) async fn admit(
    axum::extract::State(gw): axum::extract::State<Gateway>,
    mut request: Request,
    next: Next,
) -> Response {
    let claims = gw
        .inner
        .auth
        .verify(header_str(request.headers(), "authorization"))
        .ok();
    let Some(claims) = claims else {
        return next.run(request).await;
    };
    let permit = match gw.inner.admission.try_admit(&claims.tenant) {
        Ok(p) => p,
        Err(refusal) => {
            let problem = match refusal {
                Refusal::Full { budget } => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "the gateway is at its request limit ({budget}, gateway.max_in_flight)"
                    ),
                ),
                Refusal::TenantShare {
                    share,
                    others_active: true,
                } => Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "tenant-over-share",
                    format!(
                        "this tenant has {share} requests in flight, its fair share of the gateway \
                         while other tenants are active (gateway.tenant_weights)"
                    ),
                ),
                Refusal::TenantShare {
                    share,
                    others_active: false,
                } => Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "tenant-over-share",
                    format!(
                        "this tenant has {share} requests in flight: all of the gateway's \
                         (gateway.max_in_flight) but the tenth kept for other tenants"
                    ),
                ),
                Refusal::TenantLimit { limit } => Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "tenant-limit",
                    format!(
                        "this tenant has {limit} requests in flight \
                         (gateway.tenant_max_in_flight)"
                    ),
                ),
            };
            return problem
                .retry_after(1)
                .correlated(request.headers())
                .into_response();
        }
    };
    // Decremented when the request ends, also when its client went away mid-request.
    struct Gauged(metrics::Gauge);
    impl Drop for Gauged {
        fn drop(&mut self) {
            self.0.decrement(1.0);
        }
    }
    gw.inner.in_flight.increment(1.0);
    let _gauged = Gauged(gw.inner.in_flight.clone());
    // The handler authenticates with these claims instead of verifying the token again.
    request
        .extensions_mut()
        .insert(crate::auth::Verified(claims));
    let response = next.run(request).await;
    drop(permit);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_lone_tenant_leaves_a_reserve_that_a_newcomer_gets_at_once() {
        let a = Admission::new(10, 10, HashMap::new());
        let flood: Vec<_> = std::iter::from_fn(|| a.try_admit("a").ok())
            .take(20)
            .collect();
        assert_eq!(flood.len(), 9, "10 % reserve");
        assert!(matches!(
            a.try_admit("a"),
            Err(Refusal::TenantShare {
                share: 9,
                others_active: false
            })
        ));
        let b = a.try_admit("b").expect("the newcomer is admitted at once");
        assert_eq!(a.in_flight(), 10);
        assert!(matches!(
            a.try_admit("c"),
            Err(Refusal::Full { budget: 10 })
        ));
        assert!(matches!(
            a.try_admit("a"),
            Err(Refusal::TenantShare {
                share: 5,
                others_active: true
            })
        ));
        drop(b);
        drop(flood);
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn weights_split_the_budget_among_active_tenants() {
        let w = HashMap::from([("big".to_string(), 3)]);
        let a = Admission::new(8, 8, w);
        let _small = a.try_admit("small").unwrap();
        let big: Vec<_> = std::iter::from_fn(|| a.try_admit("big").ok())
            .take(10)
            .collect();
        assert_eq!(big.len(), 6, "3 / (3 + 1) of 8");
    }

    #[test]
    fn the_per_tenant_limit_holds() {
        let a = Admission::new(100, 2, HashMap::new());
        let _p: Vec<_> = (0..2).map(|_| a.try_admit("a").unwrap()).collect();
        assert!(matches!(
            a.try_admit("a"),
            Err(Refusal::TenantLimit { limit: 2 })
        ));
    }

    proptest! {
        /// Whatever the arrival order, the budget and every limit hold, and a tenant below its
        /// weighted share of the active tenants is never refused while the budget has room.
        #[test]
        fn admission_never_exceeds_the_budget_or_starves_a_modest_tenant(
            ops in proptest::collection::vec((0u8..4, any::<bool>()), 1..200),
            budget in 1usize..40,
        ) {
            let a = Admission::new(budget, budget, HashMap::new());
            let mut held: Vec<Permit> = Vec::new();
            for (tenant, release) in ops {
                if release && !held.is_empty() {
                    held.remove(0);
                    continue;
                }
                let name = format!("t{tenant}");
                match a.try_admit(&name) {
                    Ok(p) => held.push(p),
                    Err(Refusal::TenantShare { share, .. }) => {
                        let mine = held.iter().filter(|p| p.tenant == name).count();
                        prop_assert!(mine >= share);
                    }
                    Err(Refusal::Full { .. }) => prop_assert_eq!(held.len(), budget),
                    Err(Refusal::TenantLimit { .. }) => {}
                }
                prop_assert!(a.in_flight() <= budget);
                prop_assert_eq!(a.in_flight(), held.len());
            }
        }
    }
}
