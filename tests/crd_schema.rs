//! The CRD schemas and their CEL rules, proven both ways without a cluster.
//!
//! The local control plane is Kubernetes 1.20, which ignores `x-kubernetes-validations`,
//! so this is where every rule is shown to compile, to hold for the samples, and to reject
//! each invalid variant with the message a user will read. The OpenAPI part is checked with
//! a JSON-schema validator (apiserver semantics: `nullable`, list-type `set` = unique items);
//! the CEL part with kube-cel, which applies schema defaults first, as the apiserver does.

use dcr_operator::crd::{all_crds, render_crd_file};
use serde_json::{json, Value};
use std::path::Path;

/// The openAPIV3Schema of the CRD stored under `crds/<file>`.
fn stored_schema(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds").join(file);
    let crd: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// OpenAPI v3 (Kubernetes dialect) to JSON Schema: what the apiserver enforces structurally.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, val) in map {
                if k.starts_with("x-kubernetes-") || k == "nullable" {
                    continue;
                }
                out.insert(k.clone(), to_json_schema(val));
            }
            if map.get("x-kubernetes-list-type") == Some(&json!("set")) {
                out.insert("uniqueItems".into(), json!(true));
            }
            if map.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
                out.insert("type".into(), json!(["integer", "string"]));
            }
            if map.get("nullable") == Some(&json!(true)) {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

/// All errors the apiserver (>= 1.25) would report for `object` (an update when `old` is given).
fn admission_errors(file: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = stored_schema(file);
    let validator = jsonschema::validator_for(&to_json_schema(&schema)).expect("schema compiles");
    let mut errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {}", e.instance_path, e))
        .collect();
    if let Err(cel_errors) = kube_cel::validate(&schema, object, old) {
        errors.extend(cel_errors.iter().map(|e| e.to_string()));
    }
    errors
}

fn assert_accepted(file: &str, object: &Value) {
    let errors = admission_errors(file, object, None);
    assert!(
        errors.is_empty(),
        "expected {file} object to be accepted, got {errors:#?}"
    );
}

/// Asserts rejection with an error containing `expected` (the text a user reads).
fn assert_rejected(file: &str, object: &Value, old: Option<&Value>, expected: &str) {
    let errors = admission_errors(file, object, old);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected an error containing {expected:?}, got {errors:#?}"
    );
}

fn sample(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/samples")
        .join(name);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `object` with the JSON value at the `/`-separated `pointer` replaced (parents created).
fn with(object: &Value, pointer: &str, value: Value) -> Value {
    let mut out = object.clone();
    let mut cur = &mut out;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            cur.as_object_mut().unwrap().insert(part.to_string(), value);
            break;
        }
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(part.to_string())
            .or_insert(json!({}));
    }
    out
}

/// `object` with the field at `pointer` removed.
fn without(object: &Value, pointer: &str) -> Value {
    let mut out = object.clone();
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    out.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(field);
    out
}

const PROVIDER: &str = "dcrproviders.yaml";
const STRATEGY: &str = "authstrategies.yaml";
const APPLICATION: &str = "applications.yaml";

// ---------------------------------------------------------------- generated files

#[test]
fn crds_directory_matches_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for (file, crd) in all_crds() {
        let expected = render_crd_file(&crd).unwrap();
        let stored = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            stored == expected,
            "crds/{file} is stale: run `make crds` and commit the result"
        );
    }
    let yaml_files = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .count();
    assert_eq!(
        yaml_files,
        all_crds().len(),
        "crds/ holds CRD files no kind generates"
    );
}

#[test]
fn every_cel_rule_compiles_and_fits_the_cost_budget() {
    let mut rules = 0;
    for (file, _) in all_crds() {
        let schema = stored_schema(file);
        let compiled = kube_cel::compile_schema(&schema);
        fn walk(node: &kube_cel::CompiledSchema, file: &str, count: &mut usize) {
            assert!(
                !node.has_errors(),
                "{file}: a CEL rule does not compile: {:?}",
                node.compilation_errors()
            );
            *count += node.validations.len();
            node.properties.values().for_each(|p| walk(p, file, count));
            if let Some(items) = &node.items {
                walk(items, file, count);
            }
            if let Some(additional) = &node.additional_properties {
                walk(additional, file, count);
            }
        }
        walk(&compiled, file, &mut rules);
        let mut raw = vec![];
        collect_rules(&schema, &mut raw);
        for rule in raw {
            // kube-cel's scope check does not know variables bound by comprehension macros
            // (`self.all(k, ...)`): exempt exactly those.
            let warnings: Vec<_> = kube_cel::check_rule_scope(&rule, kube_cel::ScopeContext::CrdValidation)
                .into_iter()
                .filter(|w| {
                    let var = w.message.split('\'').nth(1).unwrap_or_default();
                    let bound = ["all", "exists", "exists_one", "map", "filter"]
                        .iter()
                        .any(|m| rule.contains(&format!(".{m}({var},")));
                    !bound
                })
                .collect();
            assert!(warnings.is_empty(), "{file}: rule {rule:?}: {warnings:?}");
        }
    }
    assert!(rules >= 10, "expected the CEL rules of all kinds, found {rules}");
}

fn collect_rules(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                out.extend(rules.iter().filter_map(|r| r["rule"].as_str().map(String::from)));
            }
            map.values().for_each(|v| collect_rules(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_rules(v, out)),
        _ => {}
    }
}

#[test]
fn crds_have_status_printer_columns_short_names_and_category() {
    for (file, crd) in all_crds() {
        let crd = serde_json::to_value(crd).unwrap();
        let version = &crd["spec"]["versions"][0];
        assert!(
            version["subresources"]["status"].is_object(),
            "{file}: status subresource"
        );
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for c in ["Ready", "Reason", "Age"] {
            assert!(columns.contains(&c), "{file}: column {c} in {columns:?}");
        }
        assert_eq!(crd["spec"]["names"]["categories"], json!(["dcr"]), "{file}");
        assert!(
            !crd["spec"]["names"]["shortNames"].as_array().unwrap().is_empty(),
            "{file}"
        );
        assert_eq!(crd["spec"]["group"], "dcr-operator.io");
    }
    let app = serde_json::to_value(&all_crds()[2].1).unwrap();
    let columns = app["spec"]["versions"][0]["additionalPrinterColumns"].to_string();
    assert!(columns.contains(".status.clientId") && columns.contains(".status.credential.expiresAt"));
}

// ---------------------------------------------------------------- DcrProvider

#[test]
fn provider_sample_is_accepted() {
    assert_accepted(PROVIDER, &sample("dcrprovider.yaml"));
}

#[test]
fn provider_accepts_a_domain_tenant_and_the_v2_issuer() {
    let p = sample("dcrprovider.yaml");
    let p = with(&p, "/spec/azureAD/tenantId", json!("contoso.onmicrosoft.com"));
    let p = with(
        &p,
        "/spec/issuer",
        json!("https://login.microsoftonline.com/8a4b7e9c-2f5d-4c1e-9b3a-6d2e1f0c7a58/v2.0"),
    );
    assert_accepted(PROVIDER, &p);
}

#[test]
fn provider_rejects_an_unknown_type() {
    let p = with(&sample("dcrprovider.yaml"), "/spec/type", json!("Okta"));
    assert_rejected(PROVIDER, &p, None, "/spec/type");
}

#[test]
fn provider_rejects_a_plain_http_issuer() {
    let p = with(
        &sample("dcrprovider.yaml"),
        "/spec/issuer",
        json!("http://sts.windows.net/x/"),
    );
    assert_rejected(PROVIDER, &p, None, "/spec/issuer");
}

#[test]
fn provider_rejects_a_malformed_tenant_id() {
    let p = with(
        &sample("dcrprovider.yaml"),
        "/spec/azureAD/tenantId",
        json!("not a tenant"),
    );
    assert_rejected(PROVIDER, &p, None, "/spec/azureAD/tenantId");
}

#[test]
fn provider_rejects_a_client_id_that_is_not_a_guid() {
    let p = with(
        &sample("dcrprovider.yaml"),
        "/spec/initialClient/clientId",
        json!("admin"),
    );
    assert_rejected(PROVIDER, &p, None, "/spec/initialClient/clientId");
}

/// Exactly one admin credential: the structural `oneOf` (enforced on 1.20 as well).
#[test]
fn provider_requires_exactly_one_initial_client_credential() {
    let neither = without(&sample("dcrprovider.yaml"), "/spec/initialClient/clientSecretRef");
    assert!(!admission_errors(PROVIDER, &neither, None).is_empty());
    let both = with(
        &sample("dcrprovider.yaml"),
        "/spec/initialClient/federatedToken",
        json!({}),
    );
    assert!(!admission_errors(PROVIDER, &both, None).is_empty());
    let federated = with(&neither, "/spec/initialClient/federatedToken", json!({}));
    assert_accepted(PROVIDER, &federated);
}

#[test]
fn provider_rejects_a_display_name_over_120_characters() {
    let p = with(
        &sample("dcrprovider.yaml"),
        "/spec/displayName",
        json!("x".repeat(121)),
    );
    assert_rejected(PROVIDER, &p, None, "/spec/displayName");
}

#[test]
fn provider_rejects_a_zero_request_budget() {
    let p = with(&sample("dcrprovider.yaml"), "/spec/requestBudget/qps", json!(0));
    assert_rejected(PROVIDER, &p, None, "/spec/requestBudget/qps");
}

#[test]
fn provider_of_type_azuread_needs_the_azuread_block() {
    let p = without(&sample("dcrprovider.yaml"), "/spec/azureAD");
    assert_rejected(
        PROVIDER,
        &p,
        None,
        "spec.azureAD is required when spec.type is AzureAD",
    );
}

#[test]
fn provider_tenant_id_is_immutable() {
    let old = sample("dcrprovider.yaml");
    let new = with(&old, "/spec/azureAD/tenantId", json!("fabrikam.onmicrosoft.com"));
    assert_rejected(PROVIDER, &new, Some(&old), "spec.azureAD.tenantId is immutable");
    assert!(
        admission_errors(PROVIDER, &old, Some(&old)).is_empty(),
        "an unchanged tenant passes"
    );
}

// ---------------------------------------------------------------- AuthStrategy

#[test]
fn strategy_sample_is_accepted() {
    assert_accepted(STRATEGY, &sample("authstrategy.yaml"));
}

#[test]
fn strategy_with_only_the_required_fields_is_accepted_and_defaults_hold_the_rules() {
    let s = json!({
        "apiVersion": "dcr-operator.io/v1alpha1", "kind": "AuthStrategy", "metadata": {"name": "min"},
        "spec": {"providerRef": {"name": "entra"}, "displayName": "Minimal", "openIDConnect": {}}
    });
    assert_accepted(STRATEGY, &s);
}

#[test]
fn strategy_renew_before_must_be_shorter_than_lifetime() {
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/credentials/renewBefore",
        json!("2160h"),
    );
    assert_rejected(
        STRATEGY,
        &s,
        None,
        "credentials.renewBefore must be shorter than credentials.lifetime",
    );
}

#[test]
fn strategy_lifetime_must_not_exceed_max_lifetime() {
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/credentials/lifetime",
        json!("5000h"),
    );
    assert_rejected(
        STRATEGY,
        &s,
        None,
        "credentials.lifetime must not exceed credentials.maxLifetime",
    );
}

#[test]
fn strategy_rejects_durations_that_are_not_go_durations() {
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/credentials/lifetime",
        json!("90d"),
    );
    assert_rejected(STRATEGY, &s, None, "/spec/credentials/lifetime");
}

#[test]
fn strategy_rejects_scopes_with_whitespace() {
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/openIDConnect/scopes",
        json!(["api://x/.default other"]),
    );
    assert_rejected(STRATEGY, &s, None, "/spec/openIDConnect/scopes/0");
}

#[test]
fn strategy_rejects_unknown_and_repeated_auth_methods() {
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/openIDConnect/authMethods",
        json!(["password"]),
    );
    assert_rejected(STRATEGY, &s, None, "/spec/openIDConnect/authMethods/0");
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/openIDConnect/authMethods",
        json!(["bearer", "bearer"]),
    );
    assert_rejected(STRATEGY, &s, None, "/spec/openIDConnect/authMethods");
}

#[test]
fn strategy_rejects_tags_with_whitespace_or_repeats() {
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/applicationTemplate/azureAD/tags",
        json!(["a b"]),
    );
    assert_rejected(STRATEGY, &s, None, "/spec/applicationTemplate/azureAD/tags/0");
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/applicationTemplate/azureAD/tags",
        json!(["a", "a"]),
    );
    assert_rejected(STRATEGY, &s, None, "/spec/applicationTemplate/azureAD/tags");
}

#[test]
fn strategy_allowed_namespaces_needs_names_or_a_selector() {
    let s = with(&sample("authstrategy.yaml"), "/spec/allowedNamespaces", json!({}));
    assert_rejected(STRATEGY, &s, None, "allowedNamespaces needs names or a selector");
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/allowedNamespaces",
        json!({"names": ["orders"]}),
    );
    assert_accepted(STRATEGY, &s);
}

#[test]
fn strategy_provider_ref_is_immutable() {
    let old = sample("authstrategy.yaml");
    let new = with(&old, "/spec/providerRef/name", json!("other"));
    assert_rejected(STRATEGY, &new, Some(&old), "spec.providerRef is immutable");
}

#[test]
fn strategy_rejects_a_display_name_over_120_characters() {
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/displayName",
        json!("x".repeat(121)),
    );
    assert_rejected(STRATEGY, &s, None, "/spec/displayName");
}

#[test]
fn strategy_rejects_a_required_resource_access_id_that_is_not_a_guid() {
    let s = with(
        &sample("authstrategy.yaml"),
        "/spec/applicationTemplate/azureAD/requiredResourceAccess",
        json!([{"resourceAppId": "graph", "resourceAccess": [{"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"}]}]),
    );
    assert_rejected(STRATEGY, &s, None, "resourceAppId");
}

// ---------------------------------------------------------------- Application

#[test]
fn application_sample_is_accepted() {
    assert_accepted(APPLICATION, &sample("application.yaml"));
}

#[test]
fn application_with_only_a_strategy_is_accepted() {
    let a = json!({
        "apiVersion": "dcr-operator.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "min", "namespace": "team"},
        "spec": {"authStrategyRef": {"name": "entra-client-credentials"}}
    });
    assert_accepted(APPLICATION, &a);
}

#[test]
fn application_rejects_a_description_over_1024_characters() {
    let a = with(
        &sample("application.yaml"),
        "/spec/description",
        json!("d".repeat(1025)),
    );
    assert_rejected(APPLICATION, &a, None, "/spec/description");
}

#[test]
fn application_rejects_plain_http_redirects_except_localhost() {
    let a = with(
        &sample("application.yaml"),
        "/spec/redirectUris",
        json!(["http://orders.example.com/cb"]),
    );
    assert_rejected(APPLICATION, &a, None, "/spec/redirectUris/0");
    let a = with(
        &sample("application.yaml"),
        "/spec/redirectUris",
        json!(["http://localhost:8080/cb"]),
    );
    assert_accepted(APPLICATION, &a);
}

#[test]
fn application_rejects_repeated_redirect_uris() {
    let uri = "https://orders.example.com/callback";
    let a = with(
        &sample("application.yaml"),
        "/spec/redirectUris",
        json!([uri, uri]),
    );
    assert_rejected(APPLICATION, &a, None, "/spec/redirectUris");
}

#[test]
fn application_rejects_an_unknown_deletion_policy() {
    let a = with(&sample("application.yaml"), "/spec/deletionPolicy", json!("Keep"));
    assert_rejected(APPLICATION, &a, None, "/spec/deletionPolicy");
}

#[test]
fn application_rejects_a_secret_name_that_is_not_a_dns_subdomain() {
    let a = with(
        &sample("application.yaml"),
        "/spec/secret/name",
        json!("Orders_Secret"),
    );
    assert_rejected(APPLICATION, &a, None, "/spec/secret/name");
}

#[test]
fn application_credentials_renew_before_must_be_shorter_than_lifetime() {
    let a = with(
        &sample("application.yaml"),
        "/spec/credentials",
        json!({"lifetime": "24h", "renewBefore": "48h"}),
    );
    assert_rejected(
        APPLICATION,
        &a,
        None,
        "credentials.renewBefore must be shorter than credentials.lifetime",
    );
    let a = with(
        &sample("application.yaml"),
        "/spec/credentials",
        json!({"lifetime": "48h", "renewBefore": "24h"}),
    );
    assert_accepted(APPLICATION, &a);
}

#[test]
fn application_strategy_ref_is_immutable() {
    let old = sample("application.yaml");
    let new = with(&old, "/spec/authStrategyRef/name", json!("other"));
    assert_rejected(APPLICATION, &new, Some(&old), "spec.authStrategyRef is immutable");
}

#[test]
fn application_secret_name_is_immutable() {
    let old = sample("application.yaml");
    let new = with(&old, "/spec/secret/name", json!("renamed"));
    assert_rejected(APPLICATION, &new, Some(&old), "spec.secret.name is immutable");
    let edited = with(&old, "/spec/description", json!("new words"));
    assert!(
        admission_errors(APPLICATION, &edited, Some(&old)).is_empty(),
        "other fields may change"
    );
}

#[test]
fn readme_explains_every_condition_reason() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for reason in dcr_operator::crd::conditions::Reason::ALL {
        let row = format!("| `{}` |", reason.as_str());
        assert!(
            readme.contains(&row),
            "README.md's conditions table lacks {reason}"
        );
    }
}

#[test]
fn application_template_renames_only_credential_fields() {
    let a = with(
        &sample("application.yaml"),
        "/spec/secret/template",
        json!({"keys": {"client_secret": "CLIENT_SECRET"}}),
    );
    assert_accepted(APPLICATION, &a);
    let a = with(
        &sample("application.yaml"),
        "/spec/secret/template",
        json!({"keys": {"password": "PASSWORD"}}),
    );
    assert_rejected(
        APPLICATION,
        &a,
        None,
        "secret.template.keys renames only client_id",
    );
}

#[test]
fn application_template_data_keys_must_be_secret_keys() {
    let a = with(
        &sample("application.yaml"),
        "/spec/secret/template",
        json!({"data": {".env": "ID={{client_id}}"}}),
    );
    assert_accepted(APPLICATION, &a);
    let a = with(
        &sample("application.yaml"),
        "/spec/secret/template",
        json!({"data": {"my file": "x"}}),
    );
    assert_rejected(
        APPLICATION,
        &a,
        None,
        "secret.template.data keys must be valid Secret keys",
    );
}

// ---------------------------------------------------------------- bounds (issue 11)

#[test]
fn durations_are_bounded_by_length_and_a_cel_maximum() {
    let s = sample("authstrategy.yaml");
    let at = |v: &str| {
        let s = with(&s, "/spec/credentials/maxLifetime", json!(v));
        with(&s, "/spec/credentials/lifetime", json!(v))
    };
    assert_accepted(STRATEGY, &at("87600h"));
    assert_rejected(STRATEGY, &at("87601h"), None, "must be at most 87600h");
    // Admitted by the pattern: the crash of issue 11. CEL refuses it where enforced, and
    // the operator decodes it as an error everywhere (src/crd/duration.rs).
    assert_rejected(
        STRATEGY,
        &at("99999999999999999999h"),
        None,
        "must be at most 87600h",
    );
    let too_long = format!("1{}h", "0".repeat(31));
    assert_rejected(STRATEGY, &at(&too_long), None, "/spec/credentials/lifetime");
    let a = with(
        &sample("application.yaml"),
        "/spec/credentials",
        json!({"lifetime": "87601h"}),
    );
    assert_rejected(APPLICATION, &a, None, "must be at most 87600h");
}

#[test]
fn every_duration_field_carries_the_bounds() {
    fn walk(v: &Value, path: &str, found: &mut Vec<String>) {
        if let Some(p) = v.get("pattern").and_then(Value::as_str) {
            if p == dcr_operator::crd::common::DURATION_PATTERN {
                assert_eq!(v["maxLength"], json!(32), "{path}");
                let rules = v["x-kubernetes-validations"].to_string();
                assert!(rules.contains("duration('87600h')"), "{path}: {rules}");
                found.push(path.to_string());
            }
        }
        if let Some(map) = v.as_object() {
            for (k, child) in map {
                walk(child, &format!("{path}/{k}"), found);
            }
        }
    }
    let mut found = vec![];
    for file in [PROVIDER, STRATEGY, APPLICATION] {
        walk(&stored_schema(file), file, &mut found);
    }
    assert_eq!(
        found.len(),
        8,
        "the strategy's five, the Application's two and its status.accessGrace: {found:?}"
    );
}

#[test]
fn application_template_labels_and_annotations_are_checked() {
    let t = |template: Value| with(&sample("application.yaml"), "/spec/secret/template", template);
    assert_accepted(
        APPLICATION,
        &t(
            json!({"labels": {"team": "orders", "app.kubernetes.io/name": "x"}, "annotations": {"example.com/note": "any text at all"}}),
        ),
    );
    assert_rejected(
        APPLICATION,
        &t(json!({"labels": {"a/b/c": "x"}})),
        None,
        "secret.template.labels keys must be label keys",
    );
    assert_rejected(
        APPLICATION,
        &t(json!({"labels": {"team": "a b"}})),
        None,
        "/spec/secret/template/labels/team",
    );
    assert_rejected(
        APPLICATION,
        &t(json!({"labels": {"team": "v".repeat(64)}})),
        None,
        "/spec/secret/template/labels/team",
    );
    assert_rejected(
        APPLICATION,
        &t(json!({"annotations": {"kubernetes.io/service-account.name": "default"}})),
        None,
        "reserved prefixes",
    );
    assert_rejected(
        APPLICATION,
        &t(json!({"labels": {"dcr-operator.io/application": "x"}})),
        None,
        "reserved prefixes",
    );
    assert_rejected(
        APPLICATION,
        &t(json!({"labels": {"app.kubernetes.io/managed-by": "x"}})),
        None,
        "reserved prefixes",
    );
    let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("l{i}"), json!("x"))).collect();
    assert_rejected(
        APPLICATION,
        &t(json!({"labels": many})),
        None,
        "/spec/secret/template/labels",
    );
    assert_rejected(
        APPLICATION,
        &t(json!({"annotations": {"a": "v".repeat(2049)}})),
        None,
        "/spec/secret/template/annotations/a",
    );
}

#[test]
fn application_template_types_are_an_allow_list() {
    let t = |type_: &str| {
        with(
            &sample("application.yaml"),
            "/spec/secret/template",
            json!({"type": type_}),
        )
    };
    for ok in ["Opaque", "kubernetes.io/basic-auth", "example.com/oauth-client"] {
        assert_accepted(APPLICATION, &t(ok));
    }
    for bad in [
        "kubernetes.io/service-account-token",
        "kubernetes.io/tls",
        "bootstrap.kubernetes.io/token",
    ] {
        assert_rejected(APPLICATION, &t(bad), None, "secret.template.type must be Opaque");
    }
    assert_rejected(APPLICATION, &t("not a type"), None, "/spec/secret/template/type");
}

fn oidc_provider() -> Value {
    let p = without(&sample("dcrprovider.yaml"), "/spec/azureAD");
    let p = without(&p, "/spec/initialClient");
    let p = with(&p, "/spec/type", json!("OIDC"));
    let p = with(&p, "/spec/issuer", json!("https://idp.example.com/realms/ops"));
    with(
        &p,
        "/spec/oidc",
        json!({"registrationAuth": {
            "type": "InitialAccessToken",
            "secretRef": {"namespace": "dcr-system", "name": "oidc-iat", "key": "token"}
        }}),
    )
}

#[test]
fn an_oidc_provider_needs_no_initial_client_but_its_settings() {
    assert_accepted(PROVIDER, &oidc_provider());
    let p = without(&oidc_provider(), "/spec/oidc");
    assert_rejected(PROVIDER, &p, None, "spec.oidc is required when spec.type is OIDC");
    let p = without(&sample("dcrprovider.yaml"), "/spec/initialClient");
    assert_rejected(
        PROVIDER,
        &p,
        None,
        "spec.initialClient is required when spec.type is AzureAD",
    );
}

#[test]
fn oidc_registration_auth_comes_from_a_secret_unless_open() {
    let p = without(&oidc_provider(), "/spec/oidc/registrationAuth/secretRef");
    assert_rejected(PROVIDER, &p, None, "secretRef is required unless type is None");
    let p = with(&p, "/spec/oidc/registrationAuth/type", json!("None"));
    assert_accepted(PROVIDER, &p);
    let p = with(&p, "/spec/oidc/registrationAuth/scheme", json!("SSWS"));
    assert_rejected(
        PROVIDER,
        &p,
        None,
        "headerName and scheme apply to type Header only",
    );

    let okta = with(
        &oidc_provider(),
        "/spec/oidc/registrationAuth/type",
        json!("Header"),
    );
    let okta = with(&okta, "/spec/oidc/registrationAuth/scheme", json!("SSWS"));
    assert_accepted(PROVIDER, &okta);
    let bad = with(
        &okta,
        "/spec/oidc/registrationAuth/headerName",
        json!("X Api Key"),
    );
    assert_rejected(PROVIDER, &bad, None, "headerName");
}

#[test]
fn oidc_endpoint_overrides_must_be_https() {
    let p = with(
        &oidc_provider(),
        "/spec/oidc/tokenEndpoint",
        json!("http://idp.example.com/token"),
    );
    assert_rejected(PROVIDER, &p, None, "/spec/oidc/tokenEndpoint");
    let p = with(
        &oidc_provider(),
        "/spec/oidc/registrationEndpoint",
        json!(format!("https://idp.example.com/{}", "r".repeat(2048))),
    );
    assert_rejected(PROVIDER, &p, None, "/spec/oidc/registrationEndpoint");
    let p = with(&oidc_provider(), "/spec/type", json!("Okta"));
    assert_rejected(PROVIDER, &p, None, "/spec/type");
}
