//! Microsoft Entra ID through Microsoft Graph.
