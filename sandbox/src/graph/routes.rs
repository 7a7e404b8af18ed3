//! URL routing. Graph addresses objects with OData key segments such as
//! `applications(appId='…')`, which a path router cannot match, so paths are parsed here:
//! percent-decoded, split into segments, and each segment into a name and an optional key.

use axum::http::Method;

use super::errors::GraphError;

/// How an application is addressed (contract §3.2, §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppKey {
    Id(String),
    AppId(String),
    UniqueName(String),
}

/// How a service principal is addressed (contract §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpKey {
    Id(String),
    AppId(String),
}

/// How a federated identity credential is addressed (contract §6: `name` is an alternate key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FicKey {
    Id(String),
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppAction {
    AddPassword,
    RemovePassword,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeletedType {
    Application,
    ServicePrincipal,
}

/// A Graph v1.0 resource path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Applications,
    ApplicationsCount,
    ApplicationsDelta,
    Application(AppKey),
    ApplicationAction(AppKey, AppAction),
    ApplicationOwners(AppKey),
    ApplicationOwnersRef(AppKey),
    ApplicationOwnerRef(AppKey, String),
    Fics(AppKey),
    Fic(AppKey, FicKey),
    ServicePrincipals,
    ServicePrincipalsCount,
    ServicePrincipal(SpKey),
    DeletedItems(DeletedType),
    DeletedItem(String),
    DeletedItemRestore(String),
    DirectoryObject(String),
}

/// Which part of the emulator a request is for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// `/v1.0/...`: the route, or the error to answer for an unknown path.
    Graph(Result<Route, GraphError>),
    /// `/{tenant}/oauth2/v2.0/token` (v2 = true) or `/{tenant}/oauth2/token`.
    Token {
        tenant: String,
        v2: bool,
    },
    /// `/{tenant}/v2.0/.well-known/openid-configuration` (v2) or `/{tenant}/.well-known/...`.
    OpenIdConfig {
        tenant: String,
        v2: bool,
    },
    /// `/_emulator/...`: control and inspection.
    Control(Vec<String>),
    NotFound,
}

/// Percent-decode a path segment (`%27` → `'`); invalid escapes are kept verbatim.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Classify a request path.
pub(crate) fn target(path: &str) -> Target {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let Some(first) = segs.first() else {
        return Target::NotFound;
    };
    if first == "_emulator" {
        return Target::Control(segs[1..].to_vec());
    }
    if first == "v1.0" {
        return Target::Graph(graph_route(&segs[1..]));
    }
    let rest: Vec<&str> = segs[1..].iter().map(String::as_str).collect();
    match rest.as_slice() {
        ["oauth2", "v2.0", "token"] => Target::Token {
            tenant: first.clone(),
            v2: true,
        },
        ["oauth2", "token"] => Target::Token {
            tenant: first.clone(),
            v2: false,
        },
        ["v2.0", ".well-known", "openid-configuration"] => Target::OpenIdConfig {
            tenant: first.clone(),
            v2: true,
        },
        [".well-known", "openid-configuration"] => Target::OpenIdConfig {
            tenant: first.clone(),
            v2: false,
        },
        _ => Target::NotFound,
    }
}

/// A segment `name` or `name(key)` / `name(prop='value')`.
struct Seg {
    name: String,
    key: Option<(Option<String>, String)>,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        v[1..v.len() - 1].replace("''", "'")
    } else {
        v.to_string()
    }
}

fn parse_seg(s: &str) -> Seg {
    if let Some(open) = s.find('(') {
        if s.ends_with(')') {
            let inner = &s[open + 1..s.len() - 1];
            let name = s[..open].to_string();
            // `prop='value'` when an `=` precedes the first quote; else a bare key.
            let eq = inner.find('=');
            let quote = inner.find('\'');
            let key = match (eq, quote) {
                (Some(e), Some(q)) if e < q => {
                    (Some(inner[..e].trim().to_string()), unquote(&inner[e + 1..]))
                }
                (Some(e), None) => (Some(inner[..e].trim().to_string()), unquote(&inner[e + 1..])),
                _ => (None, unquote(inner)),
            };
            return Seg { name, key: Some(key) };
        }
    }
    Seg {
        name: s.to_string(),
        key: None,
    }
}

/// Strip the optional `microsoft.graph.` namespace from an action or type segment.
fn unqualify(s: &str) -> &str {
    s.strip_prefix("microsoft.graph.").unwrap_or(s)
}

fn graph_route(segs: &[String]) -> Result<Route, GraphError> {
    let Some(first) = segs.first() else {
        return Err(GraphError::unknown_segment("v1.0"));
    };
    let head = parse_seg(first);
    let rest = &segs[1..];
    match head.name.as_str() {
        "applications" => {
            let key = match head.key {
                None => {
                    return match rest {
                        [] => Ok(Route::Applications),
                        [c] if c == "$count" => Ok(Route::ApplicationsCount),
                        [d] if unqualify(d) == "delta" || d == "delta()" => Ok(Route::ApplicationsDelta),
                        [id, tail @ ..] => app_tail(AppKey::Id(id.clone()), tail),
                    };
                }
                Some((None, v)) => AppKey::Id(v),
                Some((Some(p), v)) if p.eq_ignore_ascii_case("appId") => AppKey::AppId(v),
                Some((Some(p), v)) if p.eq_ignore_ascii_case("uniqueName") => AppKey::UniqueName(v),
                Some(_) => return Err(GraphError::unknown_segment(first)),
            };
            app_tail(key, rest)
        }
        "servicePrincipals" => {
            let key = match head.key {
                None => {
                    return match rest {
                        [] => Ok(Route::ServicePrincipals),
                        [c] if c == "$count" => Ok(Route::ServicePrincipalsCount),
                        [id] => Ok(Route::ServicePrincipal(SpKey::Id(id.clone()))),
                        [_, x, ..] => Err(GraphError::unknown_segment(x)),
                    };
                }
                Some((None, v)) => SpKey::Id(v),
                Some((Some(p), v)) if p.eq_ignore_ascii_case("appId") => SpKey::AppId(v),
                Some(_) => return Err(GraphError::unknown_segment(first)),
            };
            match rest {
                [] => Ok(Route::ServicePrincipal(key)),
                [x, ..] => Err(GraphError::unknown_segment(x)),
            }
        }
        "directory" => match rest {
            [d, t] if d == "deletedItems" && unqualify(t) == "application" => {
                Ok(Route::DeletedItems(DeletedType::Application))
            }
            [d, t] if d == "deletedItems" && unqualify(t) == "servicePrincipal" => {
                Ok(Route::DeletedItems(DeletedType::ServicePrincipal))
            }
            [d, id] if d == "deletedItems" => Ok(Route::DeletedItem(id.clone())),
            [d, id, r] if d == "deletedItems" && unqualify(r) == "restore" => {
                Ok(Route::DeletedItemRestore(id.clone()))
            }
            [x, ..] => Err(GraphError::unknown_segment(x)),
            [] => Err(GraphError::unknown_segment("directory")),
        },
        "directoryObjects" => match rest {
            [id] => Ok(Route::DirectoryObject(id.clone())),
            _ => Err(GraphError::unknown_segment(first)),
        },
        _ => Err(GraphError::unknown_segment(&head.name)),
    }
}

fn app_tail(key: AppKey, tail: &[String]) -> Result<Route, GraphError> {
    match tail {
        [] => Ok(Route::Application(key)),
        [a] if unqualify(a) == "addPassword" => Ok(Route::ApplicationAction(key, AppAction::AddPassword)),
        [a] if unqualify(a) == "removePassword" => {
            Ok(Route::ApplicationAction(key, AppAction::RemovePassword))
        }
        [o] if o == "owners" => Ok(Route::ApplicationOwners(key)),
        [o, r] if o == "owners" && r == "$ref" => Ok(Route::ApplicationOwnersRef(key)),
        [o, id, r] if o == "owners" && r == "$ref" => Ok(Route::ApplicationOwnerRef(key, id.clone())),
        [f] if f == "federatedIdentityCredentials" => Ok(Route::Fics(key)),
        [f, id] if f == "federatedIdentityCredentials" => Ok(Route::Fic(key, FicKey::Id(id.clone()))),
        [f] if f.starts_with("federatedIdentityCredentials(") => {
            let seg = parse_seg(f);
            match seg.key {
                Some((Some(p), v)) if p.eq_ignore_ascii_case("name") => Ok(Route::Fic(key, FicKey::Name(v))),
                Some((None, v)) => Ok(Route::Fic(key, FicKey::Id(v))),
                _ => Err(GraphError::unknown_segment(f)),
            }
        }
        [x, ..] => Err(GraphError::unknown_segment(x)),
    }
}

/// The operation name used in the request log, in counts and in fault filters.
pub(crate) fn operation(method: &Method, route: &Route) -> String {
    let m = method.as_str();
    let name = match (route, m) {
        (Route::Applications, "GET") => "application.list",
        (Route::Applications, "POST") => "application.create",
        (Route::ApplicationsCount, "GET") => "application.count",
        (Route::ApplicationsDelta, "GET") => "application.delta",
        (Route::Application(_), "GET") => "application.get",
        (Route::Application(AppKey::UniqueName(_)), "PATCH") => "application.upsert",
        (Route::Application(_), "PATCH") => "application.update",
        (Route::Application(_), "DELETE") => "application.delete",
        (Route::ApplicationAction(_, AppAction::AddPassword), "POST") => "application.addPassword",
        (Route::ApplicationAction(_, AppAction::RemovePassword), "POST") => "application.removePassword",
        (Route::ApplicationOwners(_), "GET") => "application.owners.list",
        (Route::ApplicationOwnersRef(_), "POST") => "application.owners.add",
        (Route::ApplicationOwnerRef(..), "DELETE") => "application.owners.remove",
        (Route::Fics(_), "GET") => "fic.list",
        (Route::Fics(_), "POST") => "fic.create",
        (Route::Fic(..), "GET") => "fic.get",
        (Route::Fic(_, FicKey::Name(_)), "PATCH") => "fic.upsert",
        (Route::Fic(..), "PATCH") => "fic.update",
        (Route::Fic(..), "DELETE") => "fic.delete",
        (Route::ServicePrincipals, "GET") => "servicePrincipal.list",
        (Route::ServicePrincipals, "POST") => "servicePrincipal.create",
        (Route::ServicePrincipalsCount, "GET") => "servicePrincipal.count",
        (Route::ServicePrincipal(_), "GET") => "servicePrincipal.get",
        (Route::ServicePrincipal(SpKey::AppId(_)), "PATCH") => "servicePrincipal.upsert",
        (Route::ServicePrincipal(_), "PATCH") => "servicePrincipal.update",
        (Route::ServicePrincipal(_), "DELETE") => "servicePrincipal.delete",
        (Route::DeletedItems(_), "GET") => "deletedItems.list",
        (Route::DeletedItem(_), "GET") => "deletedItems.get",
        (Route::DeletedItem(_), "DELETE") => "deletedItems.delete",
        (Route::DeletedItemRestore(_), "POST") => "deletedItems.restore",
        (Route::DirectoryObject(_), "GET") => "directoryObject.get",
        _ => return format!("unsupported.{}", m.to_ascii_lowercase()),
    };
    name.to_string()
}

/// Whether the request is a write for throttling purposes (contract §2.2).
pub(crate) fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Route {
        match target(p) {
            Target::Graph(Ok(r)) => r,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn parses_key_segments() {
        assert_eq!(
            g("/v1.0/applications(appId='abc')"),
            Route::Application(AppKey::AppId("abc".into()))
        );
        assert_eq!(
            g("/v1.0/applications(uniqueName=%27a%20b''c%27)"),
            Route::Application(AppKey::UniqueName("a b'c".into()))
        );
        assert_eq!(
            g("/v1.0/applications/x/microsoft.graph.addPassword"),
            Route::ApplicationAction(AppKey::Id("x".into()), AppAction::AddPassword)
        );
        assert_eq!(
            g("/v1.0/applications(appId='a')/federatedIdentityCredentials(name='n')"),
            Route::Fic(AppKey::AppId("a".into()), FicKey::Name("n".into()))
        );
        assert_eq!(
            g("/v1.0/servicePrincipals(appId='a')"),
            Route::ServicePrincipal(SpKey::AppId("a".into()))
        );
        assert_eq!(
            g("/v1.0/directory/deletedItems/microsoft.graph.application"),
            Route::DeletedItems(DeletedType::Application)
        );
        assert_eq!(
            g("/v1.0/directory/deletedItems/x/restore"),
            Route::DeletedItemRestore("x".into())
        );
        assert_eq!(g("/v1.0/applications/delta"), Route::ApplicationsDelta);
        assert_eq!(
            g("/v1.0/applications/x/owners/y/$ref"),
            Route::ApplicationOwnerRef(AppKey::Id("x".into()), "y".into())
        );
    }

    #[test]
    fn classifies_token_paths() {
        assert_eq!(
            target("/contoso.onmicrosoft.com/oauth2/v2.0/token"),
            Target::Token {
                tenant: "contoso.onmicrosoft.com".into(),
                v2: true
            }
        );
        assert_eq!(
            target("/t/oauth2/token"),
            Target::Token {
                tenant: "t".into(),
                v2: false
            }
        );
        assert!(matches!(target("/v1.0/users"), Target::Graph(Err(_))));
        assert_eq!(target("/nothing"), Target::NotFound);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%27b%2"), "a'b%2");
        assert_eq!(percent_decode("%E2%9C%93"), "✓");
    }
}
