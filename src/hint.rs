//! The commands that messages suggest. A hint is copied as written, so it must act on the
//! profile the user is working with: without `--profile` it would act on the default profile
//! (set up a client there, log in there), which is the one thing the user did not ask for.

use crate::names::DEFAULT_PROFILE;

/// The command `xero-auth ARGS` for `profile`, in backticks as messages quote commands, with
/// `--profile NAME` at its end when the profile is not the default one. At the end, because a
/// global flag is accepted there by every command and the words before it read as the user
/// types them.
pub fn command(profile: &str, args: &str) -> String {
    if profile == DEFAULT_PROFILE {
        format!("`xero-auth {args}`")
    } else {
        format!("`xero-auth {args} --profile {profile}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_profile_only_when_it_is_not_the_default() {
        assert_eq!(command("default", "login"), "`xero-auth login`");
        assert_eq!(command("imp", "login"), "`xero-auth login --profile imp`");
        assert_eq!(
            command("imp", "client set --client-id ID"),
            "`xero-auth client set --client-id ID --profile imp`"
        );
    }
}
