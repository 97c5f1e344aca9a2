//! Gradual rollouts: stable, close to the configured share, monotone, independent per feature.

use std::collections::HashSet;

use tenantry_core::{Plan, Slug, Tenant, TenantId};
use tenantry_feature_gate::{rollout_bucket, FeatureRules, Rollout, ROLLOUT_BUCKETS};
use uuid::Uuid;

const TENANTS: u128 = 10_000;

/// 10,000 distinct, deterministic tenant ids shaped like the random (v4) ids tenants get.
fn tenant_ids() -> Vec<TenantId> {
    (1..=TENANTS)
        .map(|n| {
            let bytes = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).to_be_bytes();
            let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
            TenantId::from_uuid(uuid).unwrap()
        })
        .collect()
}

fn free_tenants() -> Vec<Tenant> {
    tenant_ids()
        .into_iter()
        .map(|id| Tenant::builder(id, Slug::new("t").unwrap(), Plan::free()).build())
        .collect()
}

fn rules(feature: &str, rollout: Rollout) -> FeatureRules {
    FeatureRules::builder()
        .rollout(feature, rollout)
        .build()
        .unwrap()
}

fn enabled_set(tenants: &[Tenant], rules: &FeatureRules, feature: &str) -> HashSet<TenantId> {
    tenants
        .iter()
        .filter(|t| rules.is_enabled(t, feature))
        .map(Tenant::id)
        .collect()
}

#[test]
fn rollout_share_is_close_to_the_percentage_over_10_000_tenants() {
    let tenants = free_tenants();
    assert_eq!(tenant_ids().iter().collect::<HashSet<_>>().len(), 10_000);
    for percent in [1u8, 5, 10, 25, 50, 75, 90, 99] {
        let rules = rules("new_editor", Rollout::percent(percent).unwrap());
        let enabled = enabled_set(&tenants, &rules, "new_editor").len();
        let share = enabled as f64 / TENANTS as f64 * 100.0;
        // Binomial standard deviation at 50 % over 10,000 draws is 0.5 points: allow 3 sigma.
        assert!(
            (share - f64::from(percent)).abs() <= 1.5,
            "{percent} % rollout enabled {share:.2} % of tenants"
        );
    }
}

#[test]
fn a_tenants_answer_does_not_flip_between_requests_or_instances() {
    let tenants = free_tenants();
    let first = rules("new_editor", Rollout::percent(30).unwrap());
    // A second instance builds its own rules from the same configuration.
    let second = rules("new_editor", Rollout::percent(30).unwrap());
    for t in &tenants {
        let answer = first.is_enabled(t, "new_editor");
        for _ in 0..3 {
            assert_eq!(first.is_enabled(t, "new_editor"), answer);
        }
        assert_eq!(second.is_enabled(t, "new_editor"), answer);
    }
}

#[test]
fn raising_the_percentage_only_adds_tenants() {
    let tenants = free_tenants();
    let mut previous = HashSet::new();
    for percent in [0u8, 1, 10, 20, 50, 80, 100] {
        let now = enabled_set(
            &tenants,
            &rules("beta", Rollout::percent(percent).unwrap()),
            "beta",
        );
        assert!(
            previous.is_subset(&now),
            "raising to {percent} % dropped tenants"
        );
        previous = now;
    }
    assert_eq!(previous.len(), tenants.len());
}

#[test]
fn each_feature_draws_its_own_sample_of_tenants() {
    let tenants = free_tenants();
    let both = FeatureRules::builder()
        .rollout("a", Rollout::percent(50).unwrap())
        .rollout("b", Rollout::percent(50).unwrap())
        .build()
        .unwrap();
    let a = enabled_set(&tenants, &both, "a");
    let b = enabled_set(&tenants, &both, "b");
    // Independent halves overlap on about a quarter of the tenants, not on all of them.
    let overlap = a.intersection(&b).count() as f64 / TENANTS as f64 * 100.0;
    assert!((overlap - 25.0).abs() <= 2.0, "overlap {overlap:.2} %");
}

#[test]
fn allow_list_enables_a_tenant_outside_the_percentage() {
    let ids = tenant_ids();
    let outside = *ids
        .iter()
        .find(|id| rollout_bucket(**id, "beta") >= 1_000)
        .unwrap();
    let t = Tenant::builder(outside, Slug::new("t").unwrap(), Plan::free()).build();
    assert!(!rules("beta", Rollout::percent(10).unwrap()).is_enabled(&t, "beta"));
    assert!(rules("beta", Rollout::percent(10).unwrap().allow(outside)).is_enabled(&t, "beta"));
}

#[test]
fn buckets_cover_the_whole_range_evenly() {
    let mut deciles = [0u32; 10];
    for id in tenant_ids() {
        let bucket = rollout_bucket(id, "beta");
        assert!(bucket < ROLLOUT_BUCKETS);
        deciles[usize::from(bucket / 1_000)] += 1;
    }
    for (i, n) in deciles.iter().enumerate() {
        assert!((850..=1_150).contains(n), "decile {i} has {n} of 10,000");
    }
}

#[test]
fn sequential_ids_are_spread_as_well_as_random_ones() {
    // Ids are usually random, but imported ones may be sequential: the hash must not care.
    let rules = rules("beta", Rollout::percent(20).unwrap());
    let enabled = (1..=TENANTS)
        .map(|n| TenantId::from_uuid(Uuid::from_u128(n)).unwrap())
        .map(|id| Tenant::builder(id, Slug::new("t").unwrap(), Plan::free()).build())
        .filter(|t| rules.is_enabled(t, "beta"))
        .count();
    assert!((1_850..=2_150).contains(&enabled), "{enabled}");
}
