//! The refresh lease in the vault store: one entry `PREFIX/PROFILE/refresh-lease` that names its
//! holder, judged on the server's clock, and carries the unsaved-refresh note over to the next
//! holder (ARCHITECTURE.md, The refresh protocol).

use std::time::Duration;

use super::{Entry, LeaseGuard, StoreFailure, VaultStore};

impl VaultStore {
    /// Who this process is, for a lease: host, process id and a random part.
    pub(super) fn holder() -> String {
        format!(
            "{}/{}/{}",
            host_name(),
            std::process::id(),
            crate::secret::random_urlsafe(6)
        )
    }

    pub(super) fn lease_fields(lease: &LeaseGuard, state: &str) -> serde_json::Value {
        serde_json::json!({
            "holder": lease.holder,
            "state": state,
            "ttl_secs": lease.ttl.as_secs().max(1),
            "unsaved_refresh_sent_at": lease.unsaved_refresh_sent_at,
        })
    }

    /// The lease entry of `profile` as it is now: who holds it and for how much longer (on the
    /// server's clock), if anyone.
    pub fn lease_state(&self, profile: &str) -> Result<Option<(String, Duration)>, StoreFailure> {
        let entry = self.read_entry(&lease_account(profile))?;
        Ok(held_by(&entry))
    }
}

/// The lease entry's account.
pub(super) fn lease_account(profile: &str) -> String {
    format!("{profile}/refresh-lease")
}

/// Who holds the lease `entry` holds and for how much longer, judged on the server's clock: the
/// entry's `created_time` against the `Date` of the answer that read it.
pub(super) fn held_by(entry: &Entry) -> Option<(String, Duration)> {
    let fields = entry.fields.as_ref()?;
    if fields.get("state").and_then(|v| v.as_str()) != Some("held") {
        return None;
    }
    let ttl = fields.get("ttl_secs").and_then(|v| v.as_i64()).unwrap_or(0);
    let holder = fields
        .get("holder")
        .and_then(|v| v.as_str())
        .unwrap_or("someone")
        .to_string();
    // Without the server's times (a proxy that drops `Date`), the lease is not taken to be free:
    // this machine's clock stands in for the server's, and a missing creation time counts as
    // just written.
    let now = entry.date.unwrap_or_else(crate::time::unix_now);
    let created = entry.created.unwrap_or(now);
    let left = created.saturating_add(ttl).saturating_sub(now);
    (left > 0).then(|| (holder, Duration::from_secs(left as u64)))
}

/// The lease note an entry carries over from an earlier holder.
pub(super) fn unsaved_note(entry: &Entry) -> Option<i64> {
    entry
        .fields
        .as_ref()?
        .get("unsaved_refresh_sent_at")?
        .as_i64()
}

/// This machine's name, for the lease's holder.
pub(super) fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        if ok {
            let name = buf.split(|&b| b == 0).next().unwrap_or_default();
            if let Ok(name) = std::str::from_utf8(name)
                && !name.is_empty()
            {
                return name.to_string();
            }
        }
    }
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_lease_is_judged_on_the_servers_clock() {
        let entry = |state: &str, created: i64, now: i64| Entry {
            fields: Some(HashMap::from([
                ("state".to_string(), serde_json::json!(state)),
                ("ttl_secs".to_string(), serde_json::json!(30)),
                ("holder".to_string(), serde_json::json!("ci-1/42/abc")),
            ])),
            version: 3,
            created: Some(created),
            date: Some(now),
        };
        assert_eq!(
            held_by(&entry("held", 1000, 1010)),
            Some(("ci-1/42/abc".to_string(), Duration::from_secs(20)))
        );
        assert_eq!(held_by(&entry("held", 1000, 1030)), None, "expired");
        let mut undated = entry("held", 1000, 1010);
        undated.date = None;
        undated.created = None;
        assert_eq!(
            held_by(&undated).map(|(_, left)| left),
            Some(Duration::from_secs(30)),
            "no Date from the server: held, never free"
        );
        assert_eq!(held_by(&entry("free", 1000, 1010)), None, "released");
    }
}
