//! A Triton `version_policy` as the deployments of the model's endpoint.
//!
//! Triton serves every version its policy selects at
//! `/v2/models/NAME/versions/N`, and the newest of them at `/v2/models/NAME`.
//! ferroserve says the same with an endpoint NAME whose deployment
//! `default` serves the newest selected version with all the traffic
//! (weight 100), and a deployment `vN` of weight 0 for each other selected
//! version: routing pins `/versions/N` to the deployment serving N, so
//! those are reachable by version only. Versions the policy does not
//! select are not served. `latest { num_versions: 1 }` (Triton's default)
//! is exactly ferroserve's own implicit endpoint: `default` tracking the
//! newest version.

use std::collections::BTreeMap;

use super::{DeploymentSpec, EndpointSpec, Settings, Target};
use ferroserve_runtime::manifest::VersionPolicy;

/// The versions `policy` selects among the `available` ones, ascending.
/// `specific` lists its versions whether they exist or not: a missing one
/// then fails to deploy, naming it, as Triton fails to load it.
pub fn select(policy: &VersionPolicy, available: &[u64]) -> Vec<u64> {
    let mut have = available.to_vec();
    have.sort_unstable();
    have.dedup();
    match policy {
        VersionPolicy::Latest(n) => {
            let skip = have.len().saturating_sub(*n as usize);
            have.split_off(skip)
        }
        VersionPolicy::All => have,
        VersionPolicy::Specific(vs) => {
            let mut vs = vs.clone();
            vs.sort_unstable();
            vs.dedup();
            vs
        }
    }
}

/// The name of the weight-0 deployment serving version `v`.
pub fn deployment_name(v: u64) -> String {
    format!("v{v}")
}

/// The deployments of `model`'s endpoint under `policy`, given its
/// registered versions. `latest`/`all` keep `default` on the newest
/// version, so it follows new registrations; `specific` pins it.
pub fn deployments(model: &str, policy: &VersionPolicy, available: &[u64]) -> Vec<DeploymentSpec> {
    let spec = |name: String, target: Target, weight: u32| DeploymentSpec {
        name,
        model: model.to_string(),
        target,
        weight,
        settings: Settings::default(),
    };
    let selected = select(policy, available);
    let Some(&newest) = selected.last() else {
        return vec![spec("default".into(), Target::Latest, 100)];
    };
    let default_target = match policy {
        VersionPolicy::Latest(_) | VersionPolicy::All => Target::Latest,
        VersionPolicy::Specific(_) => Target::Version(newest),
    };
    let mut out = vec![spec("default".into(), default_target, 100)];
    for &v in selected.iter().rev().skip(1) {
        out.push(spec(deployment_name(v), Target::Version(v), 0));
    }
    out
}

/// The endpoint a Triton model needs to be served as its policy says, or
/// `None` when ferroserve's implicit endpoint (the newest version) is
/// already that.
pub fn endpoint(model: &str, policy: &VersionPolicy, available: &[u64]) -> Option<EndpointSpec> {
    let deployments = deployments(model, policy, available);
    let plain = deployments.len() == 1 && deployments[0].target == Target::Latest;
    (!plain).then(|| EndpointSpec {
        name: model.to_string(),
        deployments,
        mirror: None,
    })
}

/// The version policy of every model in `models` that is a Triton model
/// folder of `repo` with a config that reads.
pub fn policies<'a>(
    repo: &std::path::Path,
    models: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<String, VersionPolicy> {
    models
        .into_iter()
        .filter_map(|m| {
            ferroserve_runtime::manifest::pbtxt::version_policy(&repo.join(m))
                .map(|p| (m.clone(), p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection() {
        let have = [1, 2, 5, 3];
        assert_eq!(select(&VersionPolicy::Latest(1), &have), [5]);
        assert_eq!(select(&VersionPolicy::Latest(2), &have), [3, 5]);
        assert_eq!(select(&VersionPolicy::Latest(9), &have), [1, 2, 3, 5]);
        assert_eq!(select(&VersionPolicy::All, &have), [1, 2, 3, 5]);
        assert_eq!(
            select(&VersionPolicy::Specific(vec![3, 1, 7]), &have),
            [1, 3, 7]
        );
        assert!(select(&VersionPolicy::Latest(2), &[]).is_empty());
    }

    fn summary(ds: &[DeploymentSpec]) -> Vec<(String, Target, u32)> {
        ds.iter()
            .map(|d| (d.name.clone(), d.target.clone(), d.weight))
            .collect()
    }

    #[test]
    fn deployments_per_policy() {
        let have = [1, 2, 3];
        assert_eq!(
            summary(&deployments("m", &VersionPolicy::Latest(1), &have)),
            [("default".into(), Target::Latest, 100)]
        );
        assert!(endpoint("m", &VersionPolicy::Latest(1), &have).is_none());
        assert_eq!(
            summary(&deployments("m", &VersionPolicy::Latest(2), &have)),
            [
                ("default".into(), Target::Latest, 100),
                ("v2".into(), Target::Version(2), 0)
            ]
        );
        assert_eq!(
            summary(&deployments("m", &VersionPolicy::All, &have)),
            [
                ("default".into(), Target::Latest, 100),
                ("v2".into(), Target::Version(2), 0),
                ("v1".into(), Target::Version(1), 0)
            ]
        );
        assert_eq!(
            summary(&deployments(
                "m",
                &VersionPolicy::Specific(vec![1, 2]),
                &have
            )),
            [
                ("default".into(), Target::Version(2), 100),
                ("v1".into(), Target::Version(1), 0)
            ]
        );
        // One specific version, not the newest: an endpoint pins it.
        let e = endpoint("m", &VersionPolicy::Specific(vec![2]), &have).unwrap();
        assert_eq!(
            summary(&e.deployments),
            [("default".into(), Target::Version(2), 100)]
        );
        e.validate().unwrap();
        endpoint("m", &VersionPolicy::All, &have)
            .unwrap()
            .validate()
            .unwrap();
        // Nothing registered: the usual "no registered version" failure.
        assert_eq!(
            summary(&deployments("m", &VersionPolicy::All, &[])),
            [("default".into(), Target::Latest, 100)]
        );
    }
}
