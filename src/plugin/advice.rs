//! What to do about each condition reason (the README's Conditions table, in words for the
//! person at the terminal).

/// Advice for a not-Ready `reason`.
pub fn for_reason(reason: &str) -> &'static str {
    match reason {
        "Progressing" => "Nothing: the operator is working on it (e.g. waiting for the IdP to replicate a new object).",
        "Deleting" => "Nothing: deletion is under way; the finalizer removes the provider side first.",
        "InvalidSpec" => "Fix the spec: the message names the field.",
        "Throttled" => "Nothing: the IdP answered 429 or the request budget is exhausted; work resumes after Retry-After.",
        "Unreachable" => "Check the IdP endpoints (authorityHost, graphEndpoint), DNS, proxies and the CA; the operator retries with backoff.",
        "InsufficientPermissions" => "Grant the admin client Application.ReadWrite.OwnedBy with admin consent (and make its service principal an owner of the application again if someone removed it).",
        "SecretNotFound" => "Create the Secret that spec.initialClient.clientSecretRef names; the provider recovers by itself.",
        "SecretKeyNotFound" => "Add the key spec.initialClient.clientSecretRef.key to that Secret.",
        "InvalidClientSecret" => "Put a valid (unexpired) admin client secret into the Secret that spec.initialClient.clientSecretRef names.",
        "FederatedTokenNotFound" => "Mount the projected ServiceAccount token (audience api://AzureADTokenExchange) where the operator's --federated-token-file points: the chart's workloadIdentity.enabled does it.",
        "FederatedTokenExpired" => "Check that the kubelet refreshes the projected token (the pod's token volume, node clock); the provider recovers when a current token is in the file.",
        "NoMatchingFederatedCredential" => "Add a federated identity credential to the admin app with the issuer, subject (system:serviceaccount:<namespace>:<serviceaccount>) and audience the message names.",
        "FederatedTokenRejected" => "Check that the IdP can read the cluster's ServiceAccount issuer (/.well-known/openid-configuration and its JWKS) and that the FIC's issuer is that URL exactly.",
        "ClientNotFound" => "Check spec.initialClient.clientId: the IdP does not know it in this tenant.",
        "TenantNotFound" => "Check spec.azureAD.tenantId and cloud: the IdP does not know the tenant.",
        "ProviderNotFound" => "Create the DcrProvider that spec.providerRef names (cluster admins).",
        "ProviderNotReady" => "Fix the DcrProvider first: see its reason above.",
        "StrategyNotFound" => "Ask the cluster admins to create the AuthStrategy, or recreate the Application with an existing one (authStrategyRef is immutable).",
        "StrategyNotReady" => "Fix the AuthStrategy first: see its reason above.",
        "NamespaceNotAllowed" => "Ask the cluster admins to admit this namespace in the AuthStrategy's allowedNamespaces (names or selector), or use another AuthStrategy.",
        "CredentialPolicyViolation" => "Shorten spec.credentials (lifetime, renewBefore) to fit the AuthStrategy's maxLifetime and minRenewalInterval.",
        "SecretConflict" => "Rename spec.secret.name (recreate the Application) or remove the Secret of that name that this Application does not own.",
        "ProviderError" => "Read the IdP error code below; the operator retries with backoff from 10s to 5m.",
        "SecretNamespaceNotAllowed" => "Move the admin Secret into one of the operator's --provider-secret-namespaces (default: its own namespace), or reinstall listing that namespace.",
        "CleanupBlocked" => "Recreate the DcrProvider of the same name so the client can be deleted at the IdP, or annotate dcr-operator.io/abandon=true and delete the client at the IdP by hand.",
        "RequestRateLimited" => "Nothing: the rotate or revoke-all request is served once the strategy's minRenewalInterval has passed since the newest secret.",
        "DiscoveryFailed" => "Check spec.issuer: the IdP must serve /.well-known/openid-configuration (or oauth-authorization-server) naming exactly that issuer, or set spec.oidc.registrationEndpoint and tokenEndpoint.",
        "RegistrationEndpointMissing" => "Enable dynamic client registration at the IdP, or set spec.oidc.registrationEndpoint if it does not advertise one.",
        "ClusterNameRequired" => "Run the operator with --cluster-name set to a name unique in the tenant, or set orphanedApplications to Report.",
        _ => "Read the message and the Events below.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::conditions::Reason;

    #[test]
    fn every_reason_has_its_own_advice() {
        for reason in Reason::ALL.iter().filter(|r| **r != Reason::Ready) {
            assert_ne!(
                for_reason(reason.as_str()),
                for_reason("NoSuchReason"),
                "{reason:?}"
            );
        }
    }
}
