//! The Graph client: typed calls, each going through the rate limiter, the token cache and
//! the retry policy, inside one tracing span.

use std::sync::Arc;
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, field, info, Instrument};
use url::Url;

use crate::sensitive::SecretString;

use super::config::{ClientCredential, GraphClientConfig};
use super::error::{graph_error_for, parse_error_info, ConfigError, GraphError, GraphErrorInfo, TokenError};
use super::inventory::Inventory;
use super::models::{
    AddPasswordBody, AddPasswordRequest, Application, ApplicationPatch, CreateServicePrincipalBody,
    DeltaCursor, DeltaItem, DeltaRound, EnsuredApplication, IssuedPasswordWire, Page, RemovePasswordBody,
    ServicePrincipal, UpsertOutcome,
};
use super::observer::{GraphObserver, NoopObserver};
use super::ratelimit::{Cost, MustWait, RateLimiter};
use super::retry::{
    parse_retry_after, random_jitter, CallClass, Decision, Freshness, Idempotency, Outcome, RetryPolicy,
    StopReason,
};
use super::settle::Settling;
use super::token::{reason_name, transport_message, AccessToken, TokenCache, TokenEndpoint};

type Bytes = Vec<u8>;

/// A Microsoft Graph v1.0 client for one tenant and one operator identity.
///
/// Cheap to clone (shared state behind an `Arc`): one instance per `DcrProvider`, shared by
/// all reconcilers, so they share one token cache and one rate limit. Each clone carries the
/// namespace its calls are made for ([`GraphClient::for_namespace`]), whose fair share of the
/// request budget they take.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
    /// Whose share of the request budget the calls take (`""`: cluster-scoped work).
    namespace: Arc<str>,
}

struct Inner {
    config: GraphClientConfig,
    http: reqwest::Client,
    base: Url,
    tokens: TokenCache,
    limiter: RateLimiter,
    policy: RetryPolicy,
    observer: Arc<dyn GraphObserver>,
    own_sp: tokio::sync::OnceCell<ServicePrincipal>,
    inventory: Option<Inventory>,
    /// When this client created its new applications (the service-principal create waits).
    settling: Settling,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("config", &self.inner.config)
            .field("base", &self.inner.base.as_str())
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// One Graph request as the retry loop sees it.
struct Call<'a> {
    op: &'static str,
    method: Method,
    url: Url,
    body: Option<Bytes>,
    prefer: Option<&'a str>,
    class: CallClass,
}

/// A successful answer.
struct Answer {
    status: u16,
    body: Bytes,
}

impl GraphClient {
    /// Builds a client from `config` (validated) with no metrics observer.
    pub fn new(config: GraphClientConfig) -> Result<Self, ConfigError> {
        Self::with_observer(config, Arc::new(NoopObserver))
    }

    /// Builds a client that reports every exchange to `observer` (metrics).
    pub fn with_observer(
        config: GraphClientConfig,
        observer: Arc<dyn GraphObserver>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let http = build_http_client(&config)?;
        let base = config.graph_base()?;
        let policy = RetryPolicy::new(config.retry);
        let endpoint = TokenEndpoint {
            http: http.clone(),
            url: config.token_url()?,
            scope: config.scope(),
            policy,
            observer: observer.clone(),
        };
        let tokens = TokenCache::new(
            endpoint,
            config.client_id.clone(),
            config.credential.clone(),
            config.token_refresh_margin,
        );
        Ok(Self {
            namespace: Arc::from(""),
            inner: Arc::new(Inner {
                limiter: RateLimiter::new(config.budget, config.retry.max_inline_wait),
                http,
                base,
                tokens,
                policy,
                observer,
                own_sp: tokio::sync::OnceCell::new(),
                inventory: config.inventory.clone().map(Inventory::new),
                settling: Settling::new(config.retry.replication_settle.min(config.retry.max_inline_wait)),
                config,
            }),
        })
    }

    /// The same client (token cache, budget), with its calls made for `namespace`: they wait
    /// in that namespace's queue of the request budget, served in turn with the others.
    pub fn for_namespace(&self, namespace: &str) -> GraphClient {
        GraphClient {
            inner: self.inner.clone(),
            namespace: Arc::from(namespace),
        }
    }

    /// The namespace this client's calls are made for (`""`: cluster-scoped work).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The inventory of tagged objects, when configured.
    pub(crate) fn inventory(&self) -> Option<&Inventory> {
        self.inner.inventory.as_ref()
    }

    /// Tells the inventory that the client wrote to application `id`.
    fn touched_application(&self, id: &str) {
        if let Some(inventory) = self.inventory() {
            inventory.touched_application(id);
        }
    }

    /// Tells the inventory that the client wrote to service principal `id`.
    fn touched_service_principal(&self, id: &str) {
        if let Some(inventory) = self.inventory() {
            inventory.touched_service_principal(id);
        }
    }

    /// A write mark for a read that may feed the inventory.
    fn inventory_mark(&self) -> u64 {
        self.inventory().map_or(0, Inventory::mark)
    }

    /// The configuration the client was built from.
    pub fn config(&self) -> &GraphClientConfig {
        &self.inner.config
    }

    /// The token endpoint URL (`{authority}/{tenant}/oauth2/v2.0/token`), e.g. for the
    /// `token_url` key of the credential Secret.
    pub fn token_url(&self) -> &Url {
        self.inner.tokens.endpoint().url()
    }

    /// The Graph v1.0 base URL.
    pub fn graph_base(&self) -> &Url {
        &self.inner.base
    }

    /// The URL that refers to a directory object in `owners@odata.bind` and `$ref` bodies:
    /// `{the cloud's Graph root}/v1.0/directoryObjects/{id}`. Always the cloud's own service
    /// root, whatever transport endpoint is configured (a proxy): the reference names an
    /// object in Graph, not a place to send requests, and Graph may refuse one outside its
    /// root.
    pub fn directory_object_url(&self, id: &str) -> String {
        let root = self.inner.config.cloud.graph_endpoint();
        // The roots are constant https URLs; the fallback only keeps this free of panics.
        match Url::parse(root) {
            Ok(mut url) if !url.cannot_be_a_base() => {
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.pop_if_empty().extend(["v1.0", "directoryObjects", id]);
                }
                url.to_string()
            }
            _ => format!("{}/v1.0/directoryObjects/{id}", root.trim_end_matches('/')),
        }
    }

    // ------------------------------------------------------------------ tokens

    /// Acquires a fresh token with the operator's own credential, bypassing the cache: proves
    /// the tenant, client id and secret work (DcrProvider readiness).
    pub async fn verify_credentials(&self) -> Result<(), TokenError> {
        self.inner.tokens.refresh().await.map(|_| ())
    }

    /// Checks that `client_id` + `secret` obtain a token at this tenant's token endpoint
    /// (one request, retried only on throttling/5xx/transport; nothing cached). Used during
    /// rotation before the old password is revoked; a just-issued secret may answer
    /// `ExpiredClientSecret` or `InvalidClientSecret` for a few seconds (contract §4.1).
    pub async fn verify_client_secret(
        &self,
        client_id: &str,
        secret: &SecretString,
    ) -> Result<(), TokenError> {
        self.inner
            .tokens
            .endpoint()
            .request(client_id, &ClientCredential::Secret(secret.clone()))
            .await
            .map(|_| ())
    }

    // ------------------------------------------------------------ applications

    /// `PATCH /applications(uniqueName='{unique_name}')` with `Prefer: create-if-missing`
    /// (contract §3.4): 201 → [`UpsertOutcome::Created`] with the object, 204 →
    /// [`UpsertOutcome::Updated`] (no body). `patch.display_name` is required. A `uniqueName`
    /// still reserved by a soft-deleted app fails with `BadRequest`.
    pub async fn upsert_application(
        &self,
        unique_name: &str,
        patch: &ApplicationPatch,
    ) -> Result<UpsertOutcome, GraphError> {
        const OP: &str = "application.upsert";
        if patch.display_name.as_deref().is_none_or(str::is_empty) {
            return Err(GraphError::InvalidInput {
                op: OP,
                message: "the upsert requires displayName".into(),
            });
        }
        let answer = self
            .execute(Call {
                op: OP,
                method: Method::PATCH,
                url: self.url(&[&key_segment("applications", "uniqueName", unique_name)]),
                body: Some(json_body(OP, patch)?),
                prefer: Some("create-if-missing"),
                class: CallClass::idempotent(),
            })
            .await?;
        if answer.status == 201 {
            let created: Application = decode(OP, &answer.body)?;
            if let Some(app_id) = &created.app_id {
                self.inner.settling.created(app_id, Instant::now());
            }
            Ok(UpsertOutcome::Created(Box::new(created)))
        } else {
            Ok(UpsertOutcome::Updated)
        }
    }

    /// Upserts by `uniqueName` and returns the application either way: on 204 it is read back
    /// by `uniqueName` (retrying replication 404s, since the 204 proved it exists).
    pub async fn ensure_application(
        &self,
        unique_name: &str,
        patch: &ApplicationPatch,
    ) -> Result<EnsuredApplication, GraphError> {
        let ensured = match self.upsert_application(unique_name, patch).await? {
            UpsertOutcome::Created(application) => EnsuredApplication {
                application: *application,
                created: true,
            },
            UpsertOutcome::Updated => EnsuredApplication {
                application: self
                    .get_application_by_unique_name(unique_name, Freshness::JustCreated)
                    .await?,
                created: false,
            },
        };
        self.touched_application(&ensured.application.id);
        Ok(ensured)
    }

    /// `GET /applications/{id}` (object id).
    pub async fn get_application(&self, id: &str, freshness: Freshness) -> Result<Application, GraphError> {
        let mark = self.inventory_mark();
        let app: Application = self
            .get_json("application.get", self.url(&["applications", id]), freshness)
            .await?;
        if let Some(inventory) = self.inventory() {
            inventory.read_application(&app, mark);
        }
        Ok(app)
    }

    /// `GET /applications(uniqueName='{unique_name}')`.
    pub async fn get_application_by_unique_name(
        &self,
        unique_name: &str,
        freshness: Freshness,
    ) -> Result<Application, GraphError> {
        self.get_json(
            "application.getByUniqueName",
            self.url(&[&key_segment("applications", "uniqueName", unique_name)]),
            freshness,
        )
        .await
    }

    /// `GET /applications(appId='{app_id}')`.
    pub async fn get_application_by_app_id(
        &self,
        app_id: &str,
        freshness: Freshness,
    ) -> Result<Application, GraphError> {
        self.get_json(
            "application.getByAppId",
            self.url(&[&key_segment("applications", "appId", app_id)]),
            freshness,
        )
        .await
    }

    /// `PATCH /applications/{id}` → 204: changes only the fields set in `patch`.
    pub async fn update_application(
        &self,
        id: &str,
        patch: &ApplicationPatch,
        freshness: Freshness,
    ) -> Result<(), GraphError> {
        const OP: &str = "application.update";
        let result = self
            .execute(Call {
                op: OP,
                method: Method::PATCH,
                url: self.url(&["applications", id]),
                body: Some(json_body(OP, patch)?),
                prefer: None,
                class: CallClass::idempotent().with_freshness(freshness),
            })
            .await;
        self.touched_application(id);
        result.map(|_| ())
    }

    /// `DELETE /applications/{id}`: soft-deletes (restorable for 30 days; the `uniqueName`
    /// stays reserved). `Ok(false)` when it was already gone.
    pub async fn delete_application(&self, id: &str) -> Result<bool, GraphError> {
        let result = self
            .delete("application.delete", self.url(&["applications", id]))
            .await;
        self.touched_application(id);
        result
    }

    /// `GET /directory/deletedItems/{id}`: a soft-deleted application.
    pub async fn get_deleted_application(&self, id: &str) -> Result<Application, GraphError> {
        self.get_json(
            "deletedApplication.get",
            self.url(&["directory", "deletedItems", id]),
            Freshness::Settled,
        )
        .await
    }

    /// `GET /directory/deletedItems/microsoft.graph.application?$filter=uniqueName eq '…'`:
    /// the soft-deleted application that still reserves `unique_name`, if any.
    pub async fn find_deleted_application_by_unique_name(
        &self,
        unique_name: &str,
    ) -> Result<Option<Application>, GraphError> {
        let mut url = self.url(&["directory", "deletedItems", "microsoft.graph.application"]);
        set_query(
            &mut url,
            &[("$filter", &format!("uniqueName eq {}", odata_string(unique_name)))],
        );
        let found: Vec<Application> = self.collect_pages("deletedApplication.list", url).await?;
        Ok(found.into_iter().next())
    }

    /// `POST /directory/deletedItems/{id}/restore`: brings a soft-deleted application back.
    pub async fn restore_deleted_application(&self, id: &str) -> Result<Application, GraphError> {
        const OP: &str = "deletedApplication.restore";
        let answer = self
            .execute(Call {
                op: OP,
                method: Method::POST,
                url: self.url(&["directory", "deletedItems", id, "restore"]),
                body: None,
                prefer: None,
                class: CallClass::idempotent(),
            })
            .await;
        self.touched_application(id);
        decode(OP, &answer?.body)
    }

    /// `DELETE /directory/deletedItems/{id}`: permanent (frees the `uniqueName`; the service
    /// principal is not purged with it). `Ok(false)` when it was not in deleted items.
    pub async fn permanently_delete_application(&self, id: &str) -> Result<bool, GraphError> {
        self.delete(
            "deletedApplication.purge",
            self.url(&["directory", "deletedItems", id]),
        )
        .await
    }

    /// `GET /applications?$filter=tags/any(t:t eq '{tag}')`, following `@odata.nextLink` to the
    /// end (works without advanced-query headers, contract §3.6). Pages of 999, the maximum.
    pub async fn list_applications_by_tag(&self, tag: &str) -> Result<Vec<Application>, GraphError> {
        self.list_applications_by_tag_paged(tag, 999).await
    }

    /// [`GraphClient::list_applications_by_tag`] with pages of `page_size` (1..=999) objects.
    pub async fn list_applications_by_tag_paged(
        &self,
        tag: &str,
        page_size: u16,
    ) -> Result<Vec<Application>, GraphError> {
        let mut url = self.url(&["applications"]);
        set_query(
            &mut url,
            &[
                ("$filter", &format!("tags/any(t:t eq {})", odata_string(tag))),
                ("$top", &page_size.clamp(1, 999).to_string()),
            ],
        );
        self.collect_pages("application.list", url).await
    }

    /// `GET /applications/delta`: one full round from `cursor`, following `@odata.nextLink`
    /// until the `@odata.deltaLink` (contract §3.7).
    pub async fn applications_delta(&self, cursor: DeltaCursor) -> Result<DeltaRound, GraphError> {
        const OP: &str = "application.delta";
        let mut url = match cursor {
            DeltaCursor::Initial { select } => {
                let mut u = self.url(&["applications", "delta"]);
                if !select.is_empty() {
                    set_query(&mut u, &[("$select", &select.join(","))]);
                }
                u
            }
            DeltaCursor::Latest => {
                let mut u = self.url(&["applications", "delta"]);
                set_query(&mut u, &[("$deltatoken", "latest")]);
                u
            }
            DeltaCursor::Link(link) => self.rebase_link(OP, &link)?,
        };
        let mut items = Vec::new();
        loop {
            let page: Page<serde_json::Value> = self.get_json(OP, url, Freshness::Settled).await?;
            for v in page.value {
                items.push(DeltaItem::from_value(v).map_err(|e| decode_error(OP, &e))?);
            }
            match (page.next_link, page.delta_link) {
                (Some(next), _) => url = self.rebase_link(OP, &next)?,
                (None, Some(delta_link)) => return Ok(DeltaRound { items, delta_link }),
                (None, None) => {
                    return Err(GraphError::Decode {
                        op: OP,
                        message: "page has neither @odata.nextLink nor @odata.deltaLink".into(),
                    })
                }
            }
        }
    }

    /// `GET /applications/{id}/owners?$select=id`, every page: the owners' object ids.
    pub async fn list_application_owner_ids(&self, id: &str) -> Result<Vec<String>, GraphError> {
        let mut url = self.url(&["applications", id, "owners"]);
        set_query(&mut url, &[("$select", "id")]);
        let owners: Vec<DirectoryObjectRef> = self.collect_pages("application.owners.list", url).await?;
        Ok(owners.into_iter().map(|o| o.id).collect())
    }

    /// `POST /applications/{id}/owners/$ref` naming `owner_id`. `Ok(false)` when the owner was
    /// there already: the directory answers a duplicate reference with a 400 whose message,
    /// not code, says so ("One or more added object references already exist ..."), which
    /// public Graph clients match the same way.
    pub async fn add_application_owner(&self, id: &str, owner_id: &str) -> Result<bool, GraphError> {
        const OP: &str = "application.owners.add";
        let body = serde_json::json!({ "@odata.id": self.directory_object_url(owner_id) });
        let result = self
            .execute(Call {
                op: OP,
                method: Method::POST,
                url: self.url(&["applications", id, "owners", "$ref"]),
                body: Some(json_body(OP, &body)?),
                prefer: None,
                class: CallClass::idempotent(),
            })
            .await;
        self.touched_application(id);
        match result {
            Ok(_) => Ok(true),
            Err(GraphError::BadRequest(info)) if is_duplicate_reference(&info) => Ok(false),
            Err(e) => Err(e),
        }
    }

    // --------------------------------------------------------------- passwords

    /// `POST /applications/{id}/addPassword` → the new password, whose `secretText` Graph
    /// returns only now (contract §4.1). Not idempotent: retried only when the request provably
    /// did not take effect (connect failure, 429, 401, replication 404 on a
    /// [`Freshness::JustCreated`] app). Otherwise the error says
    /// [`GraphError::outcome_unknown`] and the caller must reconcile the app's passwords.
    pub async fn add_password(
        &self,
        application_id: &str,
        request: &AddPasswordRequest,
        freshness: Freshness,
    ) -> Result<super::models::IssuedPassword, GraphError> {
        const OP: &str = "application.addPassword";
        let body = AddPasswordBody {
            password_credential: request,
        };
        let answer = self
            .execute(Call {
                op: OP,
                method: Method::POST,
                url: self.url(&["applications", application_id, "addPassword"]),
                body: Some(json_body(OP, &body)?),
                prefer: None,
                class: CallClass::non_idempotent().with_freshness(freshness),
            })
            .await;
        // Touched even on error: the outcome may be unknown.
        self.touched_application(application_id);
        let answer = answer?;
        let wire: IssuedPasswordWire = decode(OP, &answer.body)?;
        wire.into_issued().ok_or(GraphError::Decode {
            op: OP,
            message: "answer carries no secretText".into(),
        })
    }

    /// `POST /applications/{id}/removePassword` `{keyId}` → 204.
    pub async fn remove_password(&self, application_id: &str, key_id: &str) -> Result<(), GraphError> {
        const OP: &str = "application.removePassword";
        let result = self
            .execute(Call {
                op: OP,
                method: Method::POST,
                url: self.url(&["applications", application_id, "removePassword"]),
                body: Some(json_body(OP, &RemovePasswordBody { key_id })?),
                prefer: None,
                class: CallClass::idempotent(),
            })
            .await;
        self.touched_application(application_id);
        result.map(|_| ())
    }

    // ------------------------------------------------------- service principals

    /// `POST /servicePrincipals {appId, tags}` → 201; a 409 (one already exists) returns the
    /// existing one. Replication errors (400 `NoBackingApplicationObject`; 403 when
    /// `freshness` is [`Freshness::JustCreated`]) are retried (contract §5). The duplicate
    /// check makes a repeated create harmless, so it is retried like an idempotent call.
    /// `tags` let the inventory list the operator's principals in one query.
    pub async fn create_service_principal(
        &self,
        app_id: &str,
        tags: &[String],
        freshness: Freshness,
    ) -> Result<ServicePrincipal, GraphError> {
        const OP: &str = "servicePrincipal.create";
        // A create this soon after the application's would only meet replication lag. Only
        // for a caller that says the application is new: a settled one is taken at its word.
        let settle = match freshness {
            Freshness::JustCreated => self.inner.settling.remaining(app_id, Instant::now()),
            Freshness::Settled => std::time::Duration::ZERO,
        };
        if !settle.is_zero() {
            debug!(?settle, "waiting for the new application to replicate");
            tokio::time::sleep(settle).await;
        }
        let result = self
            .execute(Call {
                op: OP,
                method: Method::POST,
                url: self.url(&["servicePrincipals"]),
                body: Some(json_body(OP, &CreateServicePrincipalBody { app_id, tags })?),
                prefer: None,
                class: CallClass {
                    idempotency: Idempotency::Idempotent,
                    freshness,
                    service_principal_create: true,
                },
            })
            .await;
        let created: ServicePrincipal = match result {
            Ok(answer) => decode(OP, &answer.body)?,
            Err(GraphError::Conflict(info)) => {
                debug!(request_id = ?info.request_id, "service principal exists; reading it");
                self.get_service_principal_by_app_id(app_id, Freshness::JustCreated)
                    .await?
            }
            Err(e) => return Err(e),
        };
        self.inner.settling.settled(app_id);
        if let Some(inventory) = self.inventory() {
            inventory.touched_service_principal(&created.id);
            inventory.read_service_principal(&created, inventory.mark());
        }
        Ok(created)
    }

    /// `GET /servicePrincipals/{id}`.
    pub async fn get_service_principal(
        &self,
        id: &str,
        freshness: Freshness,
    ) -> Result<ServicePrincipal, GraphError> {
        let mark = self.inventory_mark();
        let sp: ServicePrincipal = self
            .get_json(
                "servicePrincipal.get",
                self.url(&["servicePrincipals", id]),
                freshness,
            )
            .await?;
        if let Some(inventory) = self.inventory() {
            inventory.read_service_principal(&sp, mark);
        }
        Ok(sp)
    }

    /// `GET /servicePrincipals?$filter=tags/any(t:t eq '{tag}')&$select=id,appId`, every page
    /// (999 per page, the maximum).
    pub async fn list_service_principals_by_tag(
        &self,
        tag: &str,
    ) -> Result<Vec<ServicePrincipal>, GraphError> {
        let mut url = self.url(&["servicePrincipals"]);
        set_query(
            &mut url,
            &[
                ("$filter", &format!("tags/any(t:t eq {})", odata_string(tag))),
                ("$select", "id,appId"),
                ("$top", "999"),
            ],
        );
        self.collect_pages("servicePrincipal.list", url).await
    }

    /// `GET /servicePrincipals(appId='{app_id}')`.
    pub async fn get_service_principal_by_app_id(
        &self,
        app_id: &str,
        freshness: Freshness,
    ) -> Result<ServicePrincipal, GraphError> {
        self.get_json(
            "servicePrincipal.getByAppId",
            self.url(&[&key_segment("servicePrincipals", "appId", app_id)]),
            freshness,
        )
        .await
    }

    /// `DELETE /servicePrincipals/{id}`. `Ok(false)` when it was already gone.
    pub async fn delete_service_principal(&self, id: &str) -> Result<bool, GraphError> {
        let result = self
            .delete("servicePrincipal.delete", self.url(&["servicePrincipals", id]))
            .await;
        self.touched_service_principal(id);
        result
    }

    /// The operator's own service principal (`GET /servicePrincipals(appId='{client id}')`),
    /// cached after the first success. Its `id` goes into `owners@odata.bind`.
    pub async fn own_service_principal(&self) -> Result<ServicePrincipal, GraphError> {
        self.inner
            .own_sp
            .get_or_try_init(|| {
                self.get_service_principal_by_app_id(&self.inner.config.client_id, Freshness::Settled)
            })
            .await
            .cloned()
    }

    // ---------------------------------------------------------------- plumbing

    /// `{base}/{segments...}`.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        // The base is an https URL (checked at construction), so it always has segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Maps a paging/delta link onto the configured Graph base: the part after `/v1.0/` is
    /// kept, the scheme/host/prefix are ours. The bearer token is never sent to a host the
    /// configuration did not name.
    fn rebase_link(&self, op: &'static str, link: &str) -> Result<Url, GraphError> {
        let base = self.inner.base.as_str().trim_end_matches('/');
        if let Some(rest) = link.strip_prefix(base) {
            if rest.starts_with('/') {
                return Url::parse(link).map_err(|e| GraphError::InvalidInput {
                    op,
                    message: format!("bad paging link: {e}"),
                });
            }
        }
        let parsed = Url::parse(link).map_err(|e| GraphError::InvalidInput {
            op,
            message: format!("bad paging link: {e}"),
        })?;
        let path = parsed.path();
        let Some(idx) = path.find("/v1.0/") else {
            return Err(GraphError::InvalidInput {
                op,
                message: "paging link is not a Graph v1.0 URL".into(),
            });
        };
        let mut url = self.inner.base.clone();
        let joined = format!(
            "{}{}",
            url.path().trim_end_matches('/'),
            &path[idx + "/v1.0".len()..]
        );
        url.set_path(&joined);
        url.set_query(parsed.query());
        Ok(url)
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        op: &'static str,
        url: Url,
        freshness: Freshness,
    ) -> Result<T, GraphError> {
        let answer = self
            .execute(Call {
                op,
                method: Method::GET,
                url,
                body: None,
                prefer: None,
                class: CallClass::idempotent().with_freshness(freshness),
            })
            .await?;
        decode(op, &answer.body)
    }

    async fn delete(&self, op: &'static str, url: Url) -> Result<bool, GraphError> {
        match self
            .execute(Call {
                op,
                method: Method::DELETE,
                url,
                body: None,
                prefer: None,
                class: CallClass::idempotent(),
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(GraphError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn collect_pages<T: DeserializeOwned>(
        &self,
        op: &'static str,
        first: Url,
    ) -> Result<Vec<T>, GraphError> {
        let mut out = Vec::new();
        let mut url = first;
        loop {
            let page: Page<T> = self.get_json(op, url, Freshness::Settled).await?;
            out.extend(page.value);
            match page.next_link {
                Some(next) => url = self.rebase_link(op, &next)?,
                None => return Ok(out),
            }
        }
    }

    /// Sends `call` until it succeeds or the retry policy stops, inside one `graph.request`
    /// span (op, method, path; attempts, final status and request-id recorded at the end),
    /// with one `graph.attempt` child span per HTTP exchange (attempt number, the fresh
    /// `client-request-id`, status, `request-id`).
    async fn execute(&self, call: Call<'_>) -> Result<Answer, GraphError> {
        let span = tracing::info_span!(
            "graph.request",
            op = call.op,
            method = %call.method,
            path = %call.url.path(),
            attempts = field::Empty,
            status = field::Empty,
            request_id = field::Empty,
        );
        self.execute_inner(call).instrument(span).await
    }

    async fn execute_inner(&self, call: Call<'_>) -> Result<Answer, GraphError> {
        let inner = &*self.inner;
        let span = tracing::Span::current();
        let start = Instant::now();
        let mut attempt = 0u32;
        let mut token_refreshed = false;
        loop {
            attempt += 1;

            let cost = Cost::of(&call.method, &call.url);
            let waited = match inner.limiter.acquire(&self.namespace, cost).await {
                Ok(waited) => waited,
                Err(MustWait { wait }) => return Err(budget_exhausted(call.op, wait, attempt)),
            };
            if !waited.is_zero() {
                inner.observer.on_rate_limited(call.op, waited);
                debug!(?waited, "client-side rate limit delayed the request");
            }
            let token = inner.tokens.get().await?;

            let client_request_id = uuid::Uuid::new_v4().to_string();
            let attempt_span = tracing::debug_span!(
                "graph.attempt",
                attempt,
                client_request_id = client_request_id.as_str(),
                status = field::Empty,
                request_id = field::Empty,
            );
            let sent = self
                .send_once(&call, &token, &client_request_id)
                .instrument(attempt_span)
                .await?;

            let failure = match sent {
                Sent::Answer {
                    status,
                    body,
                    request_id,
                    retry_after,
                    received_at,
                } => {
                    if (200..300).contains(&status) {
                        // Recorded once, at the end, so the span shows the final answer.
                        span.record("attempts", attempt);
                        span.record("status", status);
                        if let Some(r) = &request_id {
                            span.record("request_id", r.as_str());
                        }
                        return Ok(Answer { status, body });
                    }
                    let info = parse_error_info(
                        call.op,
                        status,
                        &body,
                        request_id,
                        Some(client_request_id.clone()),
                    );
                    if status == 429 || (status == 503 && retry_after.is_some()) {
                        inner.observer.on_throttle(call.op, retry_after);
                        if let Some(ra) = retry_after {
                            // Hold every call of this client, not only this one.
                            inner.limiter.pause_until(received_at + ra);
                        }
                        info!(
                            attempt,
                            status,
                            retry_after = ?retry_after,
                            request_id = info.request_id.as_deref().unwrap_or(""),
                            "graph throttled the request"
                        );
                    }
                    Failure::Graph {
                        info,
                        retry_after,
                        received_at,
                    }
                }
                Sent::Transport { connect, message } => Failure::Transport { connect, message },
            };

            match inner.policy.decide(
                call.class,
                &failure.outcome(),
                attempt,
                start.elapsed(),
                token_refreshed,
                random_jitter(),
            ) {
                Decision::Retry { delay, reason } => {
                    inner.observer.on_retry(call.op, reason_name(reason), delay);
                    debug!(
                        attempt,
                        ?delay,
                        ?reason,
                        code = failure.code(),
                        "retrying graph request"
                    );
                    // Waits are measured from the moment the answer arrived.
                    tokio::time::sleep_until((failure.at() + delay).into()).await;
                }
                Decision::RefreshTokenAndRetry => {
                    inner
                        .observer
                        .on_retry(call.op, "TokenRefresh", std::time::Duration::ZERO);
                    debug!(attempt, "token rejected; refreshing once");
                    inner.tokens.invalidate(token.generation).await;
                    token_refreshed = true;
                }
                Decision::Stop(reason) => {
                    span.record("attempts", attempt);
                    if let Failure::Graph { info, .. } = &failure {
                        span.record("status", info.status);
                        if let Some(r) = &info.request_id {
                            span.record("request_id", r.as_str());
                        }
                    }
                    debug!(attempt, ?reason, code = failure.code(), "graph request failed");
                    let error = failure.into_error(call.op, reason == StopReason::OutcomeUnknown);
                    return Err(match reason {
                        // Throttled without a header, and the backoff would be long: the
                        // caller comes back after it.
                        StopReason::MustWait { wait } => error.with_retry_hint(wait),
                        _ => error,
                    });
                }
            }
        }
    }

    /// One HTTP exchange: sends the request and reads the whole answer.
    async fn send_once(
        &self,
        call: &Call<'_>,
        token: &AccessToken,
        client_request_id: &str,
    ) -> Result<Sent, GraphError> {
        let inner = &*self.inner;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.token.expose())).map_err(|_| {
            GraphError::Token(TokenError::unexpected(
                200,
                "token is not a valid header value",
                "",
            ))
        })?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            "client-request-id",
            HeaderValue::from_str(client_request_id).unwrap_or(HeaderValue::from_static("invalid")),
        );
        headers.insert("return-client-request-id", HeaderValue::from_static("true"));
        if let Some(prefer) = call.prefer {
            if let Ok(value) = HeaderValue::from_str(prefer) {
                headers.insert("Prefer", value);
            }
        }
        let mut req = inner
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(headers);
        if let Some(body) = &call.body {
            req = req.header(CONTENT_TYPE, "application/json").body(body.clone());
        } else if matches!(call.method, Method::POST | Method::PATCH) {
            req = req.header(reqwest::header::CONTENT_LENGTH, "0");
        }

        let span = tracing::Span::current();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let connect = e.is_connect();
                let kind = if connect { "connect" } else { "interrupted" };
                inner.observer.on_transport_error(call.op, kind);
                let message = transport_message(&e);
                debug!(kind, error = %message, "graph request failed without an answer");
                return Ok(Sent::Transport { connect, message });
            }
        };
        let status = resp.status().as_u16();
        inner.observer.on_response(call.op, status);
        span.record("status", status);
        let request_id = header_str(resp.headers(), "request-id");
        if let Some(r) = &request_id {
            span.record("request_id", r.as_str());
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let received_at = Instant::now();
        match resp.bytes().await {
            Ok(b) => {
                debug!(status, "graph answered");
                Ok(Sent::Answer {
                    status,
                    body: b.to_vec(),
                    request_id,
                    retry_after,
                    received_at,
                })
            }
            Err(e) => {
                // The status line arrived, so the server processed the request: this counts
                // as interrupted (only idempotent calls are repeated).
                inner.observer.on_transport_error(call.op, "interrupted");
                let message = transport_message(&e);
                debug!(status, error = %message, "reading the answer failed");
                Ok(Sent::Transport {
                    connect: false,
                    message,
                })
            }
        }
    }
}

/// A failed attempt, as the retry policy and the caller see it.
enum Failure {
    /// Graph answered with an error status.
    Graph {
        info: GraphErrorInfo,
        retry_after: Option<std::time::Duration>,
        received_at: Instant,
    },
    /// No (complete) answer.
    Transport { connect: bool, message: String },
}

impl Failure {
    fn outcome(&self) -> Outcome<'_> {
        match self {
            Failure::Graph {
                info, retry_after, ..
            } => Outcome::Response {
                status: info.status,
                retry_after: *retry_after,
                detail_code: info.detail_code.as_deref(),
                message: &info.message,
            },
            Failure::Transport { connect: true, .. } => Outcome::ConnectFailed,
            Failure::Transport { connect: false, .. } => Outcome::Interrupted,
        }
    }

    fn code(&self) -> &str {
        match self {
            Failure::Graph { info, .. } => &info.code,
            Failure::Transport { .. } => "",
        }
    }

    /// When the failure was observed (for transport errors: now).
    fn at(&self) -> Instant {
        match self {
            Failure::Graph { received_at, .. } => *received_at,
            Failure::Transport { .. } => Instant::now(),
        }
    }

    fn into_error(self, op: &'static str, outcome_unknown: bool) -> GraphError {
        match self {
            Failure::Graph {
                info, retry_after, ..
            } => graph_error_for(info, retry_after, outcome_unknown),
            Failure::Transport { connect, message } => GraphError::Transport {
                op,
                message,
                outcome_unknown: !connect,
            },
        }
    }
}

/// What one HTTP exchange produced.
enum Sent {
    /// A complete answer (any status).
    Answer {
        status: u16,
        body: Bytes,
        request_id: Option<String>,
        retry_after: Option<std::time::Duration>,
        received_at: Instant,
    },
    /// No (complete) answer.
    Transport { connect: bool, message: String },
}

/// The request budget had no permit for this namespace within the inline bound: nothing was
/// sent; the caller requeues after `wait`.
fn budget_exhausted(op: &'static str, wait: std::time::Duration, attempt: u32) -> GraphError {
    debug!(attempt, ?wait, "no permit of the request budget within the bound");
    GraphError::Throttled {
        retry_after: Some(wait),
        info: Box::new(GraphErrorInfo {
            op,
            status: 429,
            code: BUDGET_EXHAUSTED.into(),
            message: "the provider's client-side request budget is in use (nothing was sent)".into(),
            detail_code: None,
            request_id: None,
            client_request_id: None,
        }),
    }
}

/// The `code` of a [`GraphError::Throttled`] made by the client's own request budget.
pub const BUDGET_EXHAUSTED: &str = "RequestBudgetExhausted";

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Builds the reqwest client: rustls with the web PKI roots plus the configured extra CAs,
/// timeouts, no redirects (Graph does not redirect these calls; a redirect must not carry the
/// bearer token elsewhere).
fn build_http_client(config: &GraphClientConfig) -> Result<reqwest::Client, ConfigError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("dcr-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &config.extra_ca_pem {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ConfigError::CaBundle(e.to_string()))?;
        if certs.is_empty() {
            return Err(ConfigError::CaBundle("no certificate found in the PEM".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| ConfigError::HttpClient(e.to_string()))
}

/// A directory object as listed with `$select=id`.
#[derive(serde::Deserialize)]
struct DirectoryObjectRef {
    id: String,
}

/// The 400 for adding a reference that already exists (owners, members).
pub fn is_duplicate_reference(info: &GraphErrorInfo) -> bool {
    info.status == 400 && info.message.contains("added object references already exist")
}

/// `applications(uniqueName='x')`: an alternate-key path segment with an OData string literal.
fn key_segment(collection: &str, key: &str, value: &str) -> String {
    format!("{collection}({key}={})", odata_string(value))
}

/// An OData string literal: single quotes, inner quotes doubled.
fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Sets the query string, percent-encoding values (space as `%20`, not `+`; OData's `$`,
/// `(`, `)`, `:`, `/`, `,` kept readable; `url` itself encodes `'` as `%27` in queries).
fn set_query(url: &mut Url, pairs: &[(&str, &str)]) {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z'
                | b'a'..=b'z'
                | b'0'..=b'9'
                | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'$'
                | b'\''
                | b'('
                | b')'
                | b':'
                | b'/'
                | b',' => out.push(b as char),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }
    let q = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    url.set_query(Some(&q));
}

fn json_body<T: Serialize>(op: &'static str, value: &T) -> Result<Bytes, GraphError> {
    serde_json::to_vec(value).map_err(|e| GraphError::InvalidInput {
        op,
        message: format!("cannot serialize the body: {e}"),
    })
}

fn decode<T: DeserializeOwned>(op: &'static str, body: &[u8]) -> Result<T, GraphError> {
    serde_json::from_slice(body).map_err(|e| decode_error(op, &e))
}

/// A decoding error without the body (an addPassword body holds a secret).
fn decode_error(op: &'static str, e: &serde_json::Error) -> GraphError {
    GraphError::Decode {
        op,
        message: format!("{:?} at line {} column {}", e.classify(), e.line(), e.column()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idp::azure::config::ClientCredential;

    fn client(graph: Option<&str>) -> GraphClient {
        let mut c = GraphClientConfig::new(
            "contoso.onmicrosoft.com",
            "11111111-2222-3333-4444-555555555555",
            ClientCredential::Secret(SecretString::new("client-secret-value")),
        );
        c.graph_endpoint = graph.map(|g| Url::parse(g).unwrap());
        GraphClient::new(c).unwrap()
    }

    #[test]
    fn alternate_key_urls_quote_and_escape() {
        let c = client(None);
        assert_eq!(
            c.url(&[&key_segment("applications", "uniqueName", "c1-o'brien x")])
                .as_str(),
            "https://graph.microsoft.com/v1.0/applications(uniqueName='c1-o''brien%20x')"
        );
        assert_eq!(
            c.url(&["applications", "a/b"]).as_str(),
            "https://graph.microsoft.com/v1.0/applications/a%2Fb"
        );
        assert_eq!(
            c.directory_object_url("abc"),
            "https://graph.microsoft.com/v1.0/directoryObjects/abc"
        );
    }

    #[test]
    fn bind_urls_name_the_clouds_graph_root_whatever_the_endpoint() {
        let proxied = client(Some("https://proxy.example/graph"));
        assert_eq!(
            proxied.directory_object_url("abc"),
            "https://graph.microsoft.com/v1.0/directoryObjects/abc"
        );
        let mut c = GraphClientConfig::new(
            "contoso.onmicrosoft.us",
            "11111111-2222-3333-4444-555555555555",
            ClientCredential::Secret(SecretString::new("s")),
        );
        c.cloud = crate::idp::azure::AzureCloud::AzureUSGovernment;
        c.graph_endpoint = Some(Url::parse("https://127.0.0.1:8443").unwrap());
        assert_eq!(
            GraphClient::new(c).unwrap().directory_object_url("a/b"),
            "https://graph.microsoft.us/v1.0/directoryObjects/a%2Fb"
        );
    }

    #[test]
    fn filter_query_is_percent_encoded() {
        let c = client(None);
        let mut u = c.url(&["applications"]);
        set_query(
            &mut u,
            &[("$filter", "tags/any(t:t eq 'ns:a b&c')"), ("$top", "999")],
        );
        assert_eq!(
            u.as_str(),
            "https://graph.microsoft.com/v1.0/applications?$filter=tags/any(t:t%20eq%20%27ns:a%20b%26c%27)&$top=999"
        );
    }

    #[test]
    fn paging_links_are_rebased_onto_the_configured_endpoint() {
        let c = client(Some("https://proxy.example/graph"));
        let u = c
            .rebase_link(
                "t",
                "https://graph.microsoft.com/v1.0/applications?$skiptoken=abc",
            )
            .unwrap();
        assert_eq!(
            u.as_str(),
            "https://proxy.example/graph/v1.0/applications?$skiptoken=abc"
        );
        let same = "https://proxy.example/graph/v1.0/applications/delta?$deltatoken=x";
        assert_eq!(c.rebase_link("t", same).unwrap().as_str(), same);
        assert!(c.rebase_link("t", "https://evil.example/steal").is_err());
        assert!(c.rebase_link("t", "not a url").is_err());
    }

    #[test]
    fn client_debug_shows_no_secret() {
        let d = format!("{:?}", client(None));
        assert!(!d.contains("client-secret-value"), "{d}");
    }

    #[test]
    fn bad_ca_bundle_is_a_config_error() {
        let mut c = GraphClientConfig::new("t", "c", ClientCredential::Secret(SecretString::new("s")));
        c.extra_ca_pem = Some(b"not a pem".to_vec());
        assert!(matches!(GraphClient::new(c), Err(ConfigError::CaBundle(_))));
    }
}
