//! Pure: the Entra application a client description asks for, and what differs.

use super::{ApplicationPatch, WebApplication};
use crate::crd::strategy::ResourceAccessType;
use crate::idp::ClientSpec;
use std::collections::BTreeSet;

/// Every field the operator manages on the Entra application.
pub fn desired_application(spec: &ClientSpec<'_>) -> ApplicationPatch {
    let template = spec
        .strategy
        .spec
        .application_template
        .clone()
        .unwrap_or_default()
        .azure_ad
        .unwrap_or_default();
    let mut tags = spec.ownership.clone();
    tags.extend(
        template
            .tags
            .iter()
            .filter(|t| !tags.contains(t))
            .cloned()
            .collect::<Vec<_>>(),
    );
    ApplicationPatch {
        display_name: Some(spec.display_name.clone()),
        description: spec.description.clone(),
        tags: Some(tags),
        sign_in_audience: Some(template.sign_in_audience.as_str().to_string()),
        web: Some(WebApplication {
            redirect_uris: spec.redirect_uris.clone(),
        }),
        required_resource_access: Some(
            template
                .required_resource_access
                .iter()
                .map(|r| super::RequiredResourceAccess {
                    resource_app_id: r.resource_app_id.clone(),
                    resource_access: r
                        .resource_access
                        .iter()
                        .map(|a| super::ResourceAccess {
                            id: a.id.clone(),
                            kind: match a.type_ {
                                ResourceAccessType::Scope => "Scope".into(),
                                ResourceAccessType::Role => "Role".into(),
                            },
                        })
                        .collect(),
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// The PATCH that brings `actual` to `desired`, or None when nothing managed differs.
/// Collections compare as sets; a field the spec leaves unset is not managed.
pub fn drift(desired: &ApplicationPatch, actual: &super::Application) -> Option<ApplicationPatch> {
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    let mut patch = ApplicationPatch::default();
    if desired.display_name.is_some() && desired.display_name != actual.display_name {
        patch.display_name = desired.display_name.clone();
    }
    if desired.description.is_some() && desired.description != actual.description {
        patch.description = desired.description.clone();
    }
    if let Some(tags) = &desired.tags {
        if set(tags) != set(actual.tags()) {
            patch.tags = Some(tags.clone());
        }
    }
    if desired.sign_in_audience.is_some() && desired.sign_in_audience != actual.sign_in_audience {
        patch.sign_in_audience = desired.sign_in_audience.clone();
    }
    if let Some(web) = &desired.web {
        let actual_uris = actual
            .web
            .as_ref()
            .map(|w| w.redirect_uris.clone())
            .unwrap_or_default();
        if set(&web.redirect_uris) != set(&actual_uris) {
            patch.web = Some(web.clone());
        }
    }
    if let Some(rra) = &desired.required_resource_access {
        let normalize = |v: &[super::RequiredResourceAccess]| {
            v.iter()
                .map(|r| {
                    let access: BTreeSet<(String, String)> = r
                        .resource_access
                        .iter()
                        .map(|a| (a.id.clone(), a.kind.clone()))
                        .collect();
                    (r.resource_app_id.clone(), access)
                })
                .collect::<BTreeSet<_>>()
        };
        let actual_rra = actual.required_resource_access.clone().unwrap_or_default();
        if normalize(rra) != normalize(&actual_rra) {
            patch.required_resource_access = Some(rra.clone());
        }
    }
    (patch != ApplicationPatch::default()).then_some(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::strategy::AuthStrategy;
    use crate::idp::Identity;
    use serde_json::json;

    fn strategy() -> AuthStrategy {
        AuthStrategy::new(
            "s",
            serde_json::from_value(
                json!({"providerRef": {"name": "p"}, "displayName": "S", "openIDConnect": {},
                "applicationTemplate": {"azureAD": {"tags": ["team-x"]}}}),
            )
            .unwrap(),
        )
    }

    fn desired() -> ApplicationPatch {
        let identity = Identity {
            unique_name: "dcr-prod-6c1e".into(),
            cluster_label: "dcr-operator:cluster:prod".into(),
        };
        let strategy = strategy();
        desired_application(&ClientSpec {
            identity: &identity,
            display_name: "team/orders".into(),
            description: None,
            redirect_uris: vec!["https://a/cb".into()],
            ownership: vec!["dcr-operator".into(), "dcr-operator:cluster:prod".into()],
            strategy: &strategy,
        })
    }

    fn as_actual(p: &ApplicationPatch) -> super::super::Application {
        super::super::Application {
            id: "obj".into(),
            display_name: p.display_name.clone(),
            description: p.description.clone(),
            tags: p.tags.clone(),
            sign_in_audience: p.sign_in_audience.clone(),
            web: p.web.clone(),
            required_resource_access: p.required_resource_access.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn desired_application_carries_ownership_and_template_tags() {
        let d = desired();
        let tags = d.tags.unwrap();
        for t in ["dcr-operator", "dcr-operator:cluster:prod", "team-x"] {
            assert!(tags.contains(&t.to_string()), "{t} in {tags:?}");
        }
        assert_eq!(d.display_name.as_deref(), Some("team/orders"));
    }

    #[test]
    fn no_drift_when_the_provider_matches_even_in_another_order() {
        let d = desired();
        let mut actual = as_actual(&d);
        actual.tags.as_mut().unwrap().reverse();
        assert_eq!(drift(&d, &actual), None);
    }

    #[test]
    fn drift_patches_only_what_changed() {
        let d = desired();
        let mut actual = as_actual(&d);
        actual.display_name = Some("renamed out of band".into());
        actual.web = Some(WebApplication {
            redirect_uris: vec!["https://evil/cb".into()],
        });
        let patch = drift(&d, &actual).unwrap();
        assert_eq!(patch.display_name.as_deref(), Some("team/orders"));
        assert_eq!(patch.web.unwrap().redirect_uris, vec!["https://a/cb".to_string()]);
        assert!(patch.tags.is_none() && patch.description.is_none());
    }
}
