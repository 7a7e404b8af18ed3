//! Pure: what the provider-side application should look like, and what differs.

use crate::crd::application::Application;
use crate::crd::strategy::{AuthStrategy, ResourceAccessType};
use crate::idp::azure::{self, ApplicationPatch, WebApplication};
use kube::ResourceExt;
use std::collections::BTreeSet;

/// Tag prefix marking applications this operator manages.
pub const TAG_MANAGED: &str = "dcr-operator";

/// The provider-side idempotency key: stable for the Application's lifetime (its UID) and
/// distinct per cluster, so delete-and-recreate under the same name never collides with a
/// soft-deleted predecessor.
pub fn unique_name(cluster: &str, uid: &str) -> String {
    format!("dcr-{cluster}-{uid}")
}

/// The tag every application registered by this cluster carries.
pub fn cluster_tag(cluster: &str) -> String {
    format!("{TAG_MANAGED}:cluster:{cluster}")
}

/// The UID of the Application an application was registered for, from its tags.
pub fn owner_uid(tags: &[String]) -> Option<&str> {
    tags.iter()
        .find_map(|t| t.strip_prefix(&format!("{TAG_MANAGED}:uid:")))
}

/// Tags recording who owns the provider-side object.
pub fn ownership_tags(cluster: &str, app: &Application) -> Vec<String> {
    vec![
        TAG_MANAGED.to_string(),
        cluster_tag(cluster),
        format!("{TAG_MANAGED}:namespace:{}", app.namespace().unwrap_or_default()),
        format!("{TAG_MANAGED}:name:{}", app.name_any()),
        format!("{TAG_MANAGED}:uid:{}", app.uid().unwrap_or_default()),
    ]
}

/// The display name: the spec's, or `<namespace>/<name>` cut to Entra's 120 characters.
pub fn display_name(app: &Application) -> String {
    app.spec.display_name.clone().unwrap_or_else(|| {
        let name = format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any());
        name.chars().take(120).collect()
    })
}

/// Every field the operator manages on the Entra application.
pub fn desired_application(cluster: &str, app: &Application, strategy: &AuthStrategy) -> ApplicationPatch {
    let template = strategy
        .spec
        .application_template
        .clone()
        .unwrap_or_default()
        .azure_ad
        .unwrap_or_default();
    let mut tags = ownership_tags(cluster, app);
    tags.extend(
        template
            .tags
            .iter()
            .filter(|t| !tags.contains(t))
            .cloned()
            .collect::<Vec<_>>(),
    );
    ApplicationPatch {
        display_name: Some(display_name(app)),
        description: app.spec.description.clone(),
        tags: Some(tags),
        sign_in_audience: Some(template.sign_in_audience.as_str().to_string()),
        web: Some(WebApplication {
            redirect_uris: app.spec.redirect_uris.clone(),
        }),
        required_resource_access: Some(
            template
                .required_resource_access
                .iter()
                .map(|r| azure::RequiredResourceAccess {
                    resource_app_id: r.resource_app_id.clone(),
                    resource_access: r
                        .resource_access
                        .iter()
                        .map(|a| azure::ResourceAccess {
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
pub fn drift(desired: &ApplicationPatch, actual: &azure::Application) -> Option<ApplicationPatch> {
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
        let normalize = |v: &[azure::RequiredResourceAccess]| {
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
    use serde_json::json;

    fn app() -> Application {
        let mut a = Application::new(
            "orders",
            serde_json::from_value(
                json!({"authStrategyRef": {"name": "s"}, "redirectUris": ["https://a/cb"]}),
            )
            .unwrap(),
        );
        a.metadata.namespace = Some("team".into());
        a.metadata.uid = Some("6c1e".into());
        a
    }

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

    fn as_actual(p: &ApplicationPatch) -> azure::Application {
        azure::Application {
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
    fn unique_names_differ_per_cluster_and_uid() {
        assert_eq!(unique_name("prod", "6c1e"), "dcr-prod-6c1e");
        assert_ne!(unique_name("a", "u"), unique_name("b", "u"));
    }

    #[test]
    fn desired_application_carries_ownership_and_template_tags() {
        let d = desired_application("prod", &app(), &strategy());
        let tags = d.tags.unwrap();
        for t in [
            "dcr-operator",
            "dcr-operator:cluster:prod",
            "dcr-operator:namespace:team",
            "dcr-operator:name:orders",
            "dcr-operator:uid:6c1e",
            "team-x",
        ] {
            assert!(tags.contains(&t.to_string()), "{t} in {tags:?}");
        }
        assert!(tags.iter().all(|t| !t.contains(char::is_whitespace)));
        assert_eq!(d.display_name.as_deref(), Some("team/orders"));
    }

    #[test]
    fn no_drift_when_the_provider_matches_even_in_another_order() {
        let d = desired_application("prod", &app(), &strategy());
        let mut actual = as_actual(&d);
        actual.tags.as_mut().unwrap().reverse();
        assert_eq!(drift(&d, &actual), None);
    }

    #[test]
    fn drift_patches_only_what_changed() {
        let d = desired_application("prod", &app(), &strategy());
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

    #[test]
    fn the_owner_uid_is_read_back_from_the_tags() {
        let tags = ownership_tags("prod", &app());
        assert_eq!(owner_uid(&tags), Some("6c1e"));
        assert!(tags.contains(&cluster_tag("prod")));
        assert_eq!(owner_uid(&["other".to_string()]), None);
    }

    #[test]
    fn long_default_display_names_are_cut_to_120_characters() {
        let mut a = app();
        a.metadata.name = Some("n".repeat(200));
        assert_eq!(display_name(&a).chars().count(), 120);
    }
}
