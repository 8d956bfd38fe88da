//! Organisation pinning: which organisation Xero's MCP server will work on, and whether it is
//! the one the user chose (`mcp --tenant NAME|ID`, or the profile's default tenant when several
//! are connected). Without I/O: the driver lists `/connections` with the token a server is about
//! to get and asks [`check`]; a server is started only when it says so.
//!
//! Xero's server (`@xeroapi/xero-mcp-server` 0.0.17) does not let the caller choose: with a
//! bearer token, `BearerTokenXeroClient.authenticate()` calls xero-node's `updateTenants()`
//! before every tool call (`src/clients/xero-client.ts`), which lists `/connections`, sorts the
//! list by `updatedDateUtc`, newest first (`tenants.sort((a, b) => new Date(b.updatedDateUtc) -
//! new Date(a.updatedDateUtc))`, a stable sort), and the server takes `tenants[0].tenantId`. So
//! it works on the organisation whose connection Xero updated last, the first of `/connections`
//! when they tie. [`server_choice`] works that out the same way, and refuses to guess when the
//! dates do not allow it: the pin fails closed.

use crate::xero::Connection;

/// Whether a server may be started: `Ok` with the organisation it will work on (none when no
/// organisation is connected: its calls fail at Xero, on no one's books), or why not, with what
/// to do. `chosen` is `--tenant`; `default_tenant` the profile's, which counts when several
/// organisations are connected.
pub fn check<'a>(
    connections: &'a [Connection],
    chosen: Option<&str>,
    default_tenant: Option<&str>,
    profile: &str,
) -> Result<Option<&'a Connection>, String> {
    let listed = || {
        connections
            .iter()
            .map(|c| format!("{} ({})", c.tenant_name, c.tenant_id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let wanted = match (chosen, connections) {
        (Some(wanted), _) => Some((wanted, "--tenant")),
        (None, []) => return Ok(None),
        (None, [one]) => return Ok(Some(one)),
        (None, _) => default_tenant.map(|id| (id, "the profile's default tenant")),
    };
    let Some((wanted, from)) = wanted else {
        return Err(format!(
            "several organisations are connected to the app ({}), and Xero's MCP server would \
             work on whichever Xero lists first: choose one with --tenant NAME|ID (or {}), and \
             the bridge starts the server only while it is the one the server will use",
            listed(),
            crate::hint::command(profile, "tenants use NAME|ID")
        ));
    };
    let target = find(connections, wanted).map_err(|why| {
        format!(
            "{from} '{wanted}' {why}; connected: {}",
            if connections.is_empty() {
                "none".to_string()
            } else {
                listed()
            }
        )
    })?;
    let first = server_choice(connections)?;
    if first.tenant_id != target.tenant_id {
        return Err(format!(
            "Xero's MCP server would work on {} ({}), not on {} ({}) that {from} names: it uses \
             the organisation whose connection Xero updated last (the first of /connections). \
             The MCP server was not started. To work on {} through it, disconnect the other \
             organisations ({} for each, or in Xero: Settings → Connected apps), or give it a \
             profile of its own whose login connects that organisation only ({})",
            first.tenant_name,
            first.tenant_id,
            target.tenant_name,
            target.tenant_id,
            target.tenant_name,
            crate::hint::command(profile, "tenants disconnect NAME|ID"),
            crate::hint::command("NAME", "login")
        ));
    }
    Ok(Some(target))
}

/// The connection `wanted` names: a tenant id, or one organisation's name (any case).
fn find<'a>(connections: &'a [Connection], wanted: &str) -> Result<&'a Connection, &'static str> {
    if let Some(c) = connections
        .iter()
        .find(|c| c.tenant_id.eq_ignore_ascii_case(wanted))
    {
        return Ok(c);
    }
    let mut by_name = connections
        .iter()
        .filter(|c| c.tenant_name.eq_ignore_ascii_case(wanted));
    match (by_name.next(), by_name.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err("is not connected to the app"),
        (Some(_), Some(_)) => Err("names several organisations; use the id"),
    }
}

/// The organisation Xero's server takes from `connections` (not empty): the one updated last,
/// the first listed among those updated at the same millisecond — or an error when a date is
/// missing or not one JavaScript would read the same way, and it cannot be told.
pub fn server_choice(connections: &[Connection]) -> Result<&Connection, String> {
    let unknown = |c: &Connection| {
        format!(
            "cannot tell which organisation Xero's MCP server would work on: the connection to \
             {} ({}) has no last-updated date the bridge can read ({:?}); the MCP server was not \
             started",
            c.tenant_name, c.tenant_id, c.updated_date_utc
        )
    };
    if let [one] = connections {
        return Ok(one);
    }
    let mut best: Option<(&Connection, Stamp)> = None;
    let mut in_utc: Option<bool> = None;
    for c in connections {
        let stamp = c
            .updated_date_utc
            .as_deref()
            .and_then(Stamp::parse)
            .ok_or_else(|| unknown(c))?;
        // JavaScript reads a date without a zone as local time and one with `Z` as UTC: mixed,
        // their order depends on the machine's zone.
        if *in_utc.get_or_insert(stamp.utc) != stamp.utc {
            return Err(unknown(c));
        }
        if best.as_ref().is_none_or(|(_, top)| stamp.at > top.at) {
            best = Some((c, stamp));
        }
    }
    best.map(|(c, _)| c)
        .ok_or_else(|| "no organisation is connected to the app".to_string())
}

/// A `updatedDateUtc` as JavaScript's `Date` compares it: to the millisecond.
struct Stamp {
    /// Year, month, day, hour, minute, second, millisecond.
    at: (u32, u32, u32, u32, u32, u32, u32),
    /// It ends in `Z`.
    utc: bool,
}

impl Stamp {
    /// `YYYY-MM-DDTHH:MM:SS`, then optionally `.` and digits (Xero gives seven), then
    /// optionally `Z`; anything else is `None`.
    fn parse(text: &str) -> Option<Stamp> {
        let (text, utc) = match text.strip_suffix('Z') {
            Some(rest) => (rest, true),
            None => (text, false),
        };
        let (main, fraction) = match text.split_once('.') {
            Some((main, fraction)) => (main, Some(fraction)),
            None => (text, None),
        };
        let bytes = main.as_bytes();
        if bytes.len() != 19
            || [4, 7].iter().any(|i| bytes.get(*i) != Some(&b'-'))
            || bytes.get(10) != Some(&b'T')
            || [13, 16].iter().any(|i| bytes.get(*i) != Some(&b':'))
        {
            return None;
        }
        let number = |from: usize, to: usize| -> Option<u32> {
            let digits = main.get(from..to)?;
            digits
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| digits.parse().ok())
                .flatten()
        };
        let millis = match fraction {
            None => 0,
            Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{:0<3}", f.get(..3).unwrap_or(f)).parse().ok()?
            }
            Some(_) => return None,
        };
        let at = (
            number(0, 4)?,
            number(5, 7)?,
            number(8, 10)?,
            number(11, 13)?,
            number(14, 16)?,
            number(17, 19)?,
            millis,
        );
        let valid = (1..=12).contains(&at.1) && (1..=31).contains(&at.2) && at.3 < 24
            && at.4 < 60
            && at.5 < 60;
        valid.then_some(Stamp { at, utc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(id: &str, name: &str, updated: &str) -> Connection {
        Connection {
            id: format!("c-{id}"),
            tenant_id: id.into(),
            tenant_type: "ORGANISATION".into(),
            tenant_name: name.into(),
            updated_date_utc: Some(updated.into()),
        }
    }

    fn three() -> Vec<Connection> {
        vec![
            connection("a1", "Alpha Ltd", "2026-01-05T10:00:00.1000000"),
            connection("b2", "Beta Ltd", "2026-03-01T09:00:00.5551234"),
            connection("c3", "Gamma Ltd", "2026-03-01T09:00:00.5559999"),
        ]
    }

    #[test]
    fn the_server_takes_the_connection_updated_last_the_first_listed_on_a_tie() {
        let list = three();
        // Beta and Gamma tie to the millisecond, as JavaScript compares them: Beta is listed
        // first.
        assert_eq!(server_choice(&list).unwrap().tenant_id, "b2");
        let mut later = three();
        later[0].updated_date_utc = Some("2026-03-01T09:00:01".into());
        assert_eq!(server_choice(&later).unwrap().tenant_id, "a1");
        let mut mixed = three();
        mixed[1].updated_date_utc = Some("2026-03-01T09:00:00.555Z".into());
        assert!(server_choice(&mixed).unwrap_err().contains("Beta Ltd"));
        for bad in ["", "yesterday", "2026-13-01T00:00:00", "2026-03-01T09:00:00.", "2026-03-01 09:00:00"] {
            let mut list = three();
            list[2].updated_date_utc = Some(bad.into());
            assert!(server_choice(&list).is_err(), "{bad:?}");
        }
        let mut missing = three();
        missing[0].updated_date_utc = None;
        assert!(server_choice(&missing).is_err());
        // One connection is the one, whatever its date says.
        assert_eq!(server_choice(&missing[..1]).unwrap().tenant_id, "a1");
    }

    #[test]
    fn a_pin_passes_only_when_the_server_would_take_that_organisation() {
        let list = three();
        assert_eq!(
            check(&list, Some("beta ltd"), None, "default").unwrap().map(|c| c.tenant_id.as_str()),
            Some("b2")
        );
        assert!(check(&list, Some("B2"), Some("a1"), "default").is_ok(), "--tenant wins");
        let refused = check(&list, Some("Alpha Ltd"), None, "default").unwrap_err();
        for part in [
            "would work on Beta Ltd (b2), not on Alpha Ltd (a1)",
            "xero-auth tenants disconnect NAME|ID",
            "was not started",
        ] {
            assert!(refused.contains(part), "{part}: {refused}");
        }
        let unknown = check(&list, Some("Delta"), None, "default").unwrap_err();
        assert!(unknown.contains("'Delta' is not connected"), "{unknown}");
        assert!(unknown.contains("Gamma Ltd (c3)"), "{unknown}");
    }

    #[test]
    fn several_organisations_need_a_choice_and_the_default_tenant_is_one() {
        let list = three();
        let refused = check(&list, None, None, "work").unwrap_err();
        assert!(
            refused.contains("Alpha Ltd (a1), Beta Ltd (b2), Gamma Ltd (c3)")
                && refused.contains("--tenant NAME|ID")
                && refused.contains("`xero-auth tenants use NAME|ID --profile work`"),
            "{refused}"
        );
        assert!(check(&list, None, Some("b2"), "work").is_ok());
        assert!(
            check(&list, None, Some("c3"), "work")
                .unwrap_err()
                .contains("the profile's default tenant")
        );
        // One organisation (whatever the default says), or none: nothing to choose.
        assert_eq!(
            check(&list[2..], None, Some("a1"), "work").unwrap().map(|c| c.tenant_id.as_str()),
            Some("c3")
        );
        assert!(check(&[], None, None, "work").unwrap().is_none());
        assert!(check(&[], Some("a1"), None, "work").unwrap_err().contains("connected: none"));
    }
}
