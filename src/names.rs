//! The names the tool goes by: its own, and its default profile's. A leaf, below every module
//! that names them (the configuration, the hints in error messages), so that none of those has to
//! import another for a constant.

/// The name the tool uses for its folders and its keychain service.
pub const APP_NAME: &str = "xero-auth";
/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";
