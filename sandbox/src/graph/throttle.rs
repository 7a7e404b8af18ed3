//! The identity-and-access throttling token buckets of contract §2.2.
//!
//! Each request costs resource units (RU) and, for POST/PATCH/PUT/DELETE, one write. The
//! buckets are keyed by app + tenant, app, and tenant. All requests count toward the limit,
//! even while throttled (S20): a throttled request is still charged, so a client that does
//! not wait `Retry-After` pushes its own retry further out (the debt is capped at one
//! bucket's capacity).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    config::{Quota, ThrottleConfig},
    errors::ThrottleHeaders,
    state::TenantSize,
};

/// What one request costs (contract §2.2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cost {
    pub resource_units: u32,
    pub write: bool,
    /// A write on an application whose audience includes personal accounts.
    pub personal_app_write: bool,
    /// `$select=keyCredentials`.
    pub key_credentials_select: bool,
}

impl Cost {
    /// Base cost: `GET applications` (the list) 2 RU, other identity GETs 1 RU, writes 1 RU
    /// and 1 write; `$select` -1, `$expand` +1, `$top` < 20 -1, minimum 1.
    pub(crate) fn compute(list_applications: bool, select: bool, expand: bool, small_top: bool) -> u32 {
        let mut ru: i64 = if list_applications { 2 } else { 1 };
        if select {
            ru -= 1;
        }
        if expand {
            ru += 1;
        }
        if small_top {
            ru -= 1;
        }
        ru.max(1) as u32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BucketKey {
    AppTenantWrites(Uuid, Uuid),
    AppTenantRu(Uuid, Uuid),
    AppRu(Uuid),
    AppWrites(Uuid),
    TenantWrites(Uuid),
    PersonalAppWrites(Uuid, Uuid),
    KeyCredentialsSelect(Uuid),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: DateTime<Utc>,
}

/// A throttled request: how long to wait (emulated seconds) and the headers to send.
#[derive(Debug, Clone)]
pub(crate) struct Throttled {
    pub wait_secs: f64,
    pub headers: ThrottleHeaders,
}

/// Usage after an admitted request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    /// Highest fill ratio among the request's buckets (`x-ms-throttle-limit-percentage`).
    pub limit_ratio: f64,
}

#[derive(Debug, Default)]
pub(crate) struct Throttler {
    buckets: HashMap<BucketKey, Bucket>,
}

struct Applied {
    key: BucketKey,
    capacity: f64,
    rate: f64,
    amount: f64,
    scope: String,
    information: &'static str,
}

fn shape(q: &Quota, scale: f64) -> (f64, f64) {
    let window = q.window.as_secs_f64().max(1e-9);
    let rate = q.limit as f64 / window; // unchanged by scale
    let capacity = (q.limit as f64 / scale).max(1.0);
    (capacity, rate)
}

impl Throttler {
    pub(crate) fn reset(&mut self) {
        self.buckets.clear();
    }

    /// Charge a request; `Err` when a bucket is exhausted.
    pub(crate) fn admit(
        &mut self,
        cfg: &ThrottleConfig,
        now: DateTime<Utc>,
        app: Uuid,
        tenant: Uuid,
        size: TenantSize,
        cost: Cost,
    ) -> Result<Usage, Throttled> {
        let scale = cfg.scale.max(1.0);
        let ru = cost.resource_units as f64;
        let kind = if cost.write { "Write" } else { "Read" };
        let ru_quota = match size {
            TenantSize::Small => &cfg.app_tenant_resource_units_small,
            TenantSize::Medium => &cfg.app_tenant_resource_units_medium,
            TenantSize::Large => &cfg.app_tenant_resource_units_large,
        };
        let mut applied: Vec<(Applied, &Quota)> = vec![
            (
                Applied {
                    key: BucketKey::AppTenantRu(app, tenant),
                    capacity: 0.0,
                    rate: 0.0,
                    amount: ru,
                    scope: format!("Tenant_Application/{kind}/{app}/{tenant}"),
                    information: "ResourceUnitLimitExceeded",
                },
                ru_quota,
            ),
            (
                Applied {
                    key: BucketKey::AppRu(app),
                    capacity: 0.0,
                    rate: 0.0,
                    amount: ru,
                    scope: format!("Application/{kind}/{app}/{tenant}"),
                    information: "ResourceUnitLimitExceeded",
                },
                &cfg.app_resource_units,
            ),
        ];
        if cost.write {
            applied.push((
                Applied {
                    key: BucketKey::AppTenantWrites(app, tenant),
                    capacity: 0.0,
                    rate: 0.0,
                    amount: 1.0,
                    scope: format!("Tenant_Application/Write/{app}/{tenant}"),
                    information: "WriteLimitExceeded",
                },
                &cfg.app_tenant_writes,
            ));
            applied.push((
                Applied {
                    key: BucketKey::AppWrites(app),
                    capacity: 0.0,
                    rate: 0.0,
                    amount: 1.0,
                    scope: format!("Application/Write/{app}/{tenant}"),
                    information: "WriteLimitExceeded",
                },
                &cfg.app_writes,
            ));
            applied.push((
                Applied {
                    key: BucketKey::TenantWrites(tenant),
                    capacity: 0.0,
                    rate: 0.0,
                    amount: 1.0,
                    scope: format!("Tenant/Write/{app}/{tenant}"),
                    information: "WriteLimitExceeded",
                },
                &cfg.tenant_writes,
            ));
        }
        if cost.personal_app_write {
            applied.push((
                Applied {
                    key: BucketKey::PersonalAppWrites(app, tenant),
                    capacity: 0.0,
                    rate: 0.0,
                    amount: 1.0,
                    scope: format!("Tenant_Application/Write/{app}/{tenant}"),
                    information: "WriteLimitExceeded",
                },
                &cfg.personal_account_app_writes,
            ));
        }
        if cost.key_credentials_select {
            applied.push((
                Applied {
                    key: BucketKey::KeyCredentialsSelect(tenant),
                    capacity: 0.0,
                    rate: 0.0,
                    amount: 1.0,
                    scope: format!("Tenant/Read/{app}/{tenant}"),
                    information: "ResourceUnitLimitExceeded",
                },
                &cfg.key_credentials_select,
            ));
        }
        let mut worst: Option<(f64, usize)> = None;
        let mut ratio: f64 = 0.0;
        for (i, (a, q)) in applied.iter_mut().enumerate() {
            let (capacity, rate) = shape(q, scale);
            a.capacity = capacity;
            a.rate = rate;
            let b = self.buckets.entry(a.key).or_insert(Bucket {
                tokens: capacity,
                last: now,
            });
            let elapsed = (now - b.last).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            if elapsed > 0.0 {
                b.tokens = (b.tokens + elapsed * rate).min(capacity);
                b.last = now;
            }
            if b.tokens < a.amount {
                let wait = (a.amount - b.tokens) / rate;
                if worst.is_none_or(|(w, _)| wait > w) {
                    worst = Some((wait, i));
                }
            }
        }
        // Charge every bucket, admitted or not.
        for (a, _) in &applied {
            let b = self.buckets.get_mut(&a.key).expect("bucket inserted above");
            b.tokens = (b.tokens - a.amount).max(-a.capacity);
            ratio = ratio.max((a.capacity - b.tokens) / a.capacity);
        }
        match worst {
            None => Ok(Usage { limit_ratio: ratio }),
            Some((_, i)) => {
                // After the charge, the wait until this request's cost is available again.
                let (a, _) = &applied[i];
                let tokens = self.buckets[&a.key].tokens;
                let wait = ((a.amount - tokens) / a.rate).max(0.001);
                Err(Throttled {
                    wait_secs: wait,
                    headers: ThrottleHeaders {
                        scope: a.scope.clone(),
                        information: a.information,
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn write() -> Cost {
        Cost {
            resource_units: 1,
            write: true,
            personal_app_write: false,
            key_credentials_select: false,
        }
    }

    #[test]
    fn cost_rules() {
        assert_eq!(Cost::compute(true, false, false, false), 2);
        assert_eq!(Cost::compute(true, true, false, true), 1);
        assert_eq!(Cost::compute(false, true, false, false), 1);
        assert_eq!(Cost::compute(false, false, true, false), 2);
    }

    #[test]
    fn scaled_write_bucket_throttles_and_refills() {
        let cfg = ThrottleConfig::scaled(1000.0); // 3 writes, 20 writes/s
        let mut t = Throttler::default();
        let (app, tenant, now) = (Uuid::new_v4(), Uuid::new_v4(), Utc::now());
        for _ in 0..3 {
            t.admit(&cfg, now, app, tenant, TenantSize::Small, write())
                .unwrap();
        }
        let err = t
            .admit(&cfg, now, app, tenant, TenantSize::Small, write())
            .unwrap_err();
        assert_eq!(err.headers.information, "WriteLimitExceeded");
        assert!(err.headers.scope.starts_with("Tenant_Application/Write/"));
        // Charged while throttled: bucket at -1 -> wait for 2 tokens at 20/s = 0.1 s.
        assert!((err.wait_secs - 0.1).abs() < 1e-6, "{}", err.wait_secs);
        let later = now + TimeDelta::milliseconds(100);
        t.admit(&cfg, later, app, tenant, TenantSize::Small, write())
            .unwrap();
    }
}
