//! The Microsoft Graph / Entra ID emulator.
