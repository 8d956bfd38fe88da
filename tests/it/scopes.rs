//! `scopes`, `scopes for PATH [METHOD]` and the scope lines of `status`, against the fake Xero
//! and the real Secret Service: what a token set was granted, what Xero is retiring, what a call
//! needs. Only scope names and expiry are printed, never a token or another claim.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json_of(env: &TestEnv, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_slice(&env.ok(&all).stdout).unwrap()
}

/// Nothing of a token, and no claim but the scopes, in `output`.
fn assert_only_scope_names(output: &str, tokens: &IssuedTokens) {
    for secret in [
        &tokens.access_token,
        &tokens.refresh_token,
        &tokens.id_token,
    ] {
        if !secret.is_empty() {
            assert!(!output.contains(secret.as_str()), "a token in:\n{output}");
            // Nor its claims segment, nor a piece of its signature.
            for part in secret.split('.') {
                assert!(part.len() < 16 || !output.contains(part), "{output}");
            }
        }
    }
    for claim in [
        "xero_userid",
        "global_session_id",
        "authentication_event_id",
        "\"sub\"",
    ] {
        assert!(!output.contains(claim), "{claim} in:\n{output}");
    }
}

#[test]
fn scopes_of_a_broad_set_name_the_deprecation_and_the_granular_login() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "scopes-broad", Duration::from_secs(60));

    let out = env.ok(&["scopes"]);
    let shown = text(&out);
    for part in [
        "accounting.transactions",
        "Accounting, read and write (broad, deprecated)",
        "accounting.transactions is a broad scope Xero is retiring",
        "2 March 2026",
        "29 April 2026",
        "September 2027",
        "accounting.transactions → accounting.invoices accounting.payments",
        &format!(
            "`xero-auth login --scope \"openid profile email accounting.invoices \
             accounting.payments accounting.banktransactions accounting.manualjournals \
             accounting.classicexpenses\" --profile {}`",
            env.profile
        ),
    ] {
        assert!(shown.contains(part), "{part:?} in:\n{shown}");
    }
    assert_only_scope_names(&shown, &tokens);

    let doc = json_of(&env, &["scopes"]);
    assert_eq!(doc["deprecated"][0]["name"], "accounting.transactions");
    assert_eq!(
        doc["deprecated"][0]["existing_apps_until"],
        "September 2027"
    );
    assert_eq!(doc["access_token_scopes_differ"], false);
    assert!(
        doc["granular_login"]
            .as_str()
            .unwrap()
            .starts_with("xero-auth login --scope \"openid profile email accounting.invoices"),
        "{doc}"
    );
    assert_only_scope_names(&doc.to_string(), &tokens);

    // status says it in one line, and --json lists them.
    let status = text(&env.ok(&["status"]));
    assert!(
        status.contains("accounting.transactions is deprecated"),
        "{status}"
    );
    let status = json_of(&env, &["status"]);
    assert_eq!(
        status["tokens"]["deprecated_scopes"],
        serde_json::json!(["accounting.transactions"])
    );
    assert_only_scope_names(&status.to_string(), &tokens);
}

#[test]
fn scopes_shows_the_access_tokens_own_claim_where_it_differs() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "scopes-claim");
    env.set_client(&fake);
    // The token response said less than the token carries.
    let mut tokens = fake.issue_tokens(CLIENT_ID, "openid accounting.invoices.read offline_access");
    tokens.scope = "openid offline_access".into();
    let file = env.write_token_file(&tokens, Duration::from_secs(60));
    env.ok(&["import", file.to_str().unwrap()]);

    let doc = json_of(&env, &["scopes"]);
    assert_eq!(doc["access_token_scopes_differ"], true, "{doc}");
    assert_eq!(
        doc["access_token_scopes"],
        serde_json::json!(["openid", "accounting.invoices.read", "offline_access"])
    );
    let shown = text(&env.ok(&["scopes"]));
    assert!(
        shown.contains("the access token itself carries:"),
        "{shown}"
    );
    assert!(shown.contains("accounting.invoices.read"), "{shown}");
    assert_only_scope_names(&shown, &tokens);
}

#[test]
fn scopes_for_agrees_with_the_table_for_read_and_write_calls() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "scopes-for", Duration::from_secs(60));
    let names = |doc: &Value| -> Vec<String> {
        doc["any_of"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };

    let write = json_of(&env, &["scopes", "for", "/api.xro/2.0/Invoices", "POST"]);
    assert_eq!(
        names(&write),
        ["accounting.invoices", "accounting.transactions"]
    );
    assert_eq!(
        write["granted"], true,
        "the broad set has accounting.transactions"
    );

    let read = json_of(&env, &["scopes", "for", "Invoices"]);
    assert_eq!(read["method"], "GET");
    assert_eq!(
        names(&read),
        [
            "accounting.invoices",
            "accounting.invoices.read",
            "accounting.transactions",
            "accounting.transactions.read"
        ]
    );

    // A report the set was not granted: the granular scope and the login that adds it.
    let report = json_of(&env, &["scopes", "for", "Reports/BalanceSheet"]);
    assert_eq!(
        names(&report),
        [
            "accounting.reports.balancesheet.read",
            "accounting.reports.read"
        ]
    );
    assert_eq!(report["granted"], false);
    let shown = text(&env.ok(&["scopes", "for", "Reports/BalanceSheet"]));
    assert!(
        shown.contains(&format!(
            "has none of them: ask with `xero-auth login --scope \
             accounting.reports.balancesheet.read --profile {}`",
            env.profile
        )),
        "{shown}"
    );
    assert_only_scope_names(&shown, &tokens);

    // A read the set lacks: the login asks for the read scope, not the write one that also
    // opens it (least privilege).
    let shown = text(&env.ok(&["scopes", "for", "/payroll.xro/2.0/Timesheets"]));
    assert!(
        shown.contains("ask with `xero-auth login --scope payroll.timesheets.read --profile"),
        "{shown}"
    );

    // Write calls to a read-only area: nothing opens them.
    let none = json_of(&env, &["scopes", "for", "Reports/BalanceSheet", "POST"]);
    assert_eq!(none["any_of"], serde_json::json!([]));
}

#[test]
fn scopes_all_lists_the_table_and_the_shorthands() {
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "scopes-all");
    let doc = json_of(&env, &["scopes", "--all"]);
    let scopes = doc["scopes"].as_array().unwrap();
    assert!(
        scopes
            .iter()
            .any(|s| s["name"] == "accounting.invoices" && s["kind"] == "granular")
    );
    assert!(
        scopes
            .iter()
            .any(|s| s["name"] == "accounting.reports.read" && s["kind"] == "deprecated")
    );
    assert!(
        doc["shorthands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "accounting.read")
    );
}

#[test]
fn api_names_the_scope_a_refused_call_needs() {
    require_keychain!();
    let fake = FakeXero::start();
    fake.set_require_scopes(true);
    let (env, tokens) = ready_profile(&fake, "scopes-api", Duration::from_secs(60));

    // The set has accounting.transactions, not contacts.
    let out = env
        .cmd(&["api", "api.xro/2.0/Contacts"])
        .assert()
        .code(4)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    for part in [
        "needs the scope accounting.contacts or accounting.contacts.read",
        "was granted openid profile email accounting.transactions offline_access",
        &format!(
            "`xero-auth login --scope accounting.contacts.read --profile {}`",
            env.profile
        ),
    ] {
        assert!(stderr.contains(part), "{part:?} in:\n{stderr}");
    }
    assert_only_scope_names(&stderr, &tokens);

    // A write names the write scope; a call the set has a scope for goes through.
    let out = env
        .cmd(&["api", "POST", "api.xro/2.0/Contacts", "--data", "{}"])
        .assert()
        .code(4)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("needs the scope accounting.contacts,")
            && stderr.contains("login --scope accounting.contacts --profile"),
        "{stderr}"
    );
    env.ok(&["api", "api.xro/2.0/Invoices"]);
}
