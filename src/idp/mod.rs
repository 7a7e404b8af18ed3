//! Identity-provider backends behind one boundary.
//!
//! The Application pipeline (`controller::application`) talks to a provider only through
//! [`Backend`]: find, prove and register a client, make it usable, add, remove and prove
//! secrets, release or delete it. Each backend maps its own failures onto [`ProviderError`]
//! and says which [`Step`] failed; what differs between providers is in [`Capabilities`],
//! never in a `match` on the backend outside this module.
//!
//! An enum, not a trait object (after cert-manager's issuer factory): the set of backends is
//! closed and known at compile time, the calls are `async` (a trait would need boxed futures),
//! and adding a backend is one variant plus one arm per call here, with no step of the
//! pipeline touched.

pub mod azure;
mod error;
pub mod oidc;

pub use error::{at, Failure, ProviderError, Step, Throttler};

use crate::crd::strategy::AuthStrategy;
use crate::sensitive::SecretString;
use k8s_openapi::jiff::Timestamp;

/// The label (Entra: tag) prefix marking registrations this operator manages.
pub const MANAGED_LABEL: &str = "dcr-operator";

/// What differs between providers. The pipeline reads these instead of naming a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The client can hold two secrets at once, so a new one is staged while the old one
    /// still works (Entra: yes; most RFC 7592 servers: one secret, replaced).
    pub concurrent_secrets: bool,
    /// Registration is keyed by a stable name, so a lost response never registers twice
    /// (Entra's `uniqueName`; RFC 7591 has none).
    pub idempotency_key: bool,
    /// A deleted client goes to a recycle bin first, from which it can be restored or purged.
    pub soft_delete: bool,
    /// The provider can list what this cluster owns (Entra: delta queries and tags), which
    /// feeds the inventory reads and the orphan sweep.
    pub list_owned: bool,
}

/// What proves a registration to be one Application's: never the status alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The idempotency key, stable for the Application's lifetime.
    pub unique_name: String,
    /// The label every registration of this cluster carries.
    pub cluster_label: String,
}

/// What the Application asks the provider to register.
#[derive(Clone, Debug)]
pub struct ClientSpec<'a> {
    pub identity: &'a Identity,
    pub display_name: String,
    pub description: Option<String>,
    pub redirect_uris: Vec<String>,
    /// Labels recording the owner (Entra: tags), the cluster label among them.
    pub ownership: Vec<String>,
    /// The strategy's provider-specific template.
    pub strategy: &'a AuthStrategy,
}

/// Provider-side ids the status recorded; trusted only once the provider proves them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The registration's object id.
    pub object_id: Option<String>,
    /// What makes it usable (Entra: its service principal).
    pub principal_id: Option<String>,
}

/// How a pass learns the state of the provider-side objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// From the backend's inventory when it knows them unchanged (no request of its own),
    /// else directly. Only for backends that can list what they own.
    Inventory,
    /// Directly (the Application was edited: its owner expects a fresh look).
    Direct,
}

/// Where a pass learned of a provider-side object (logged, for the steady-state cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadSource {
    /// The inventory knew it unchanged: no request of its own.
    Inventory,
    /// Read, created or repaired with requests of its own.
    Graph,
}

/// A secret the provider lists for a client (never its value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretKey {
    pub key_id: String,
    pub created_at: Option<Timestamp>,
}

/// A client registration, as one pass found it.
#[derive(Clone, Debug)]
pub struct Client {
    /// The provider's handle for the registration (Entra: the application's object id).
    pub object_id: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The secrets the provider lists for it.
    pub secrets: Vec<SecretKey>,
    /// Created or restored moments ago: reads of it may lag, calls on it are retried.
    pub fresh: bool,
    /// The backend's own view of it, for the backend's later calls.
    pub native: Native,
}

/// A backend's own representation of a registration (opaque to the pipeline).
#[derive(Clone, Debug)]
pub enum Native {
    Entra(Box<azure::Application>),
}

/// Something the Application's owner should hear about (an Event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl Notice {
    pub fn warning(reason: &'static str, action: &'static str, note: String) -> Self {
        Self {
            warning: true,
            reason,
            action,
            note,
        }
    }
}

/// What [`Backend::register`] found or made.
#[derive(Debug)]
pub struct Registered {
    pub client: Client,
    /// This pass created it.
    pub created: bool,
    /// Brought back from the recycle bin: same client id and secrets, to be proven again.
    pub restored: bool,
    pub notices: Vec<Notice>,
    pub source: ReadSource,
}

/// What [`Backend::recall`] made of the recorded ids.
#[derive(Debug, Default)]
pub struct Recall {
    /// The recorded registration, proven to be this Application's (or restored).
    pub proven: Option<Registered>,
    /// The recorded ids named something that is not this Application's: forget them.
    pub forget_recorded: bool,
    /// The recorded registration is gone (neither live nor in the recycle bin).
    pub lost: Option<String>,
    pub notices: Vec<Notice>,
}

impl Recall {
    pub fn proven(r: Registered) -> Self {
        Self {
            proven: Some(r),
            ..Self::default()
        }
    }

    pub fn forget(notices: Vec<Notice>) -> Self {
        Self {
            forget_recorded: true,
            notices,
            ..Self::default()
        }
    }
}

/// What [`Backend::enable`] made sure of.
#[derive(Debug)]
pub struct Enabled {
    /// The principal to record (Entra: the service principal id).
    pub principal_id: Option<String>,
    pub notices: Vec<Notice>,
    pub source: ReadSource,
}

/// A secret just added (its value is shown once).
#[derive(Debug)]
pub struct IssuedSecret {
    pub key_id: String,
    pub value: SecretString,
    /// When the provider says it ends, if it says.
    pub expires_at: Option<Timestamp>,
}

/// Where consumers obtain tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub token_url: String,
    /// The v1 form, for consumers that want it (Entra); the same URL elsewhere.
    pub token_url_v1: String,
    /// Entra's tenant; empty elsewhere.
    pub tenant_id: String,
}

/// What a deletion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Nothing of this Application's was there.
    Nothing,
    /// Deleted, and also purged from the recycle bin when `purged`.
    Deleted { purged: bool },
}

/// The backends, one per `DcrProvider` type.
pub enum Backend {
    /// Microsoft Entra ID through Microsoft Graph.
    Entra(azure::backend::Entra),
}

impl Backend {
    pub fn capabilities(&self) -> Capabilities {
        match self {
            Backend::Entra(b) => b.capabilities(),
        }
    }

    pub fn endpoints(&self) -> Endpoints {
        match self {
            Backend::Entra(b) => b.endpoints(),
        }
    }

    /// The recorded registration, when it proves to be `identity`'s (repaired from the
    /// recycle bin if it was deleted out of band).
    pub async fn recall(
        &self,
        identity: &Identity,
        recorded: &Recorded,
        reads: Reads,
    ) -> Result<Recall, Failure> {
        match self {
            Backend::Entra(b) => b.recall(identity, recorded, reads).await,
        }
    }

    /// The registration `spec.identity`'s idempotency key names (repaired from the recycle
    /// bin), else a new one. `lost`: the recorded one that [`Backend::recall`] found gone.
    pub async fn register(&self, spec: &ClientSpec<'_>, lost: Option<&str>) -> Result<Registered, Failure> {
        match self {
            Backend::Entra(b) => b.register(spec, lost).await,
        }
    }

    /// Brings managed fields to `spec` and makes the client able to obtain tokens.
    pub async fn enable(
        &self,
        client: &Client,
        spec: &ClientSpec<'_>,
        recorded: &Recorded,
        reads: Reads,
    ) -> Result<Enabled, Failure> {
        match self {
            Backend::Entra(b) => b.enable(client, spec, recorded, reads).await,
        }
    }

    /// Adds a secret valid until `end`. A policy refusal is `ProviderError::Rejected`.
    pub async fn add_secret(
        &self,
        client: &Client,
        label: &str,
        end: Timestamp,
    ) -> Result<IssuedSecret, Failure> {
        match self {
            Backend::Entra(b) => b.add_secret(client, label, end).await,
        }
    }

    /// Removes a secret; `false` when it was gone already.
    pub async fn remove_secret(&self, client: &Client, key_id: &str) -> Result<bool, Failure> {
        match self {
            Backend::Entra(b) => b.remove_secret(client, key_id).await,
        }
    }

    /// Obtains a token with the secret. `ProviderError::AuthFailed`: not accepted (yet).
    pub async fn prove_secret(&self, client_id: &str, secret: &SecretString) -> Result<(), Failure> {
        match self {
            Backend::Entra(b) => b.prove_secret(client_id, secret).await,
        }
    }

    /// The registration proven to be `identity`'s, if there is one (no repair, no create).
    pub async fn find(&self, identity: &Identity, recorded: &Recorded) -> Result<Option<Client>, Failure> {
        match self {
            Backend::Entra(b) => b.find(identity, recorded).await,
        }
    }

    /// Drops this cluster's ownership labels from a registration left behind on purpose.
    pub async fn release(&self, identity: &Identity, recorded: &Recorded) -> Result<(), Failure> {
        match self {
            Backend::Entra(b) => b.release(identity, recorded).await,
        }
    }

    /// Deletes what proves to be `identity`'s. `deleted_recently`: the Application's deletion
    /// began within the provider's replication window (a purge that finds nothing then is
    /// pending, not done).
    pub async fn delete(
        &self,
        identity: &Identity,
        recorded: &Recorded,
        deleted_recently: bool,
    ) -> Result<Deletion, Failure> {
        match self {
            Backend::Entra(b) => b.delete(identity, recorded, deleted_recently).await,
        }
    }
}
