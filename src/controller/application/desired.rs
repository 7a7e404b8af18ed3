//! Pure: the names, labels and client description the provider-side registration is
//! derived from (each backend turns the description into its own fields).

use crate::crd::application::Application;
use crate::crd::strategy::AuthStrategy;
use crate::idp::{ClientSpec, Identity};
use kube::ResourceExt;

/// Tag prefix marking applications this operator manages.
pub use crate::idp::MANAGED_LABEL as TAG_MANAGED;

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

/// What the Application asks the provider to register, proven by `identity`.
pub fn client_spec<'a>(
    cluster: &str,
    app: &Application,
    strategy: &'a AuthStrategy,
    identity: &'a Identity,
) -> ClientSpec<'a> {
    ClientSpec {
        identity,
        display_name: display_name(app),
        description: app.spec.description.clone(),
        redirect_uris: app.spec.redirect_uris.clone(),
        ownership: ownership_tags(cluster, app),
        strategy,
    }
}

/// What proves a registration to be `app`'s in `cluster`.
pub fn identity(cluster: &str, uid: &str) -> Identity {
    Identity {
        unique_name: unique_name(cluster, uid),
        cluster_label: cluster_tag(cluster),
    }
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

    #[test]
    fn unique_names_differ_per_cluster_and_uid() {
        assert_eq!(unique_name("prod", "6c1e"), "dcr-prod-6c1e");
        assert_ne!(unique_name("a", "u"), unique_name("b", "u"));
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
