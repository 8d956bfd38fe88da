//! Showing the report: as text for people, as JSON for programs.

use super::*;

impl Report {
    pub(super) fn to_json(&self) -> Value {
        let stores: Vec<Value> = self
            .stores
            .iter()
            .map(|s| {
                json!({
                    "store": s.kind.name(),
                    "description": s.description,
                    "usable": s.outcome.is_ok(),
                    "detail": match &s.outcome { Ok(note) => note.clone(), Err(f) => f.cause.clone() },
                    "fix": s.outcome.as_ref().err().map(|f| f.fix.clone()),
                    "used_by": s.used_by,
                })
            })
            .collect();
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                json!({
                    "what": f.label,
                    "path": f.path.display().to_string(),
                    "set_by": f.source,
                    "exists": f.exists,
                    "writable": f.writable.as_ref().map(Result::is_ok),
                    "detail": match &f.writable { Some(Ok(at)) => at.display().to_string(), Some(Err(why)) => why.clone(), None => String::new() },
                    "trust": match &f.trust {
                        Some(Access::Private) => "private",
                        Some(Access::Loose(_)) => "open to others",
                        Some(Access::Refused(_)) => "refused",
                        None => "absent",
                    },
                    "trust_detail": match &f.trust { Some(Access::Refused(why)) => Some(why.clone()), Some(Access::Loose(mode)) => Some(format!("mode {mode:04o}")), _ => None },
                })
            })
            .collect();
        let profiles: Vec<Value> = self
            .profiles
            .iter()
            .map(|p| {
                let resolved = p.resolved.as_ref().ok();
                json!({
                    "profile": p.name,
                    "selected": p.selected,
                    "configured": p.configured,
                    "error": p.resolved.as_ref().err(),
                    "store": resolved.map(|r| r.store.name()),
                    "store_usable": resolved.map(|_| p.store_failure.is_none()),
                    "client_id": resolved.and_then(|r| r.client_id.clone()),
                    "client_secret_stored": p.client_secret.to_json(),
                    "token_set_stored": p.token_set.to_json(),
                    "endpoints": resolved.map(|r| endpoint_roles(r).iter().map(|(role, url)| {
                        (role.to_string(), json!(url.as_str()))
                    }).collect::<serde_json::Map<String, Value>>()),
                })
            })
            .collect();
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| {
                let (status, millis, error) = match &e.answer {
                    Answer::Http { status, millis, .. } => (Some(*status), Some(*millis), None),
                    Answer::Failed { cause } => (None, None, Some(cause.clone())),
                };
                json!({
                    "origin": e.origin,
                    "probe_url": e.url.as_str(),
                    "used_for": e.uses.iter().map(|(profile, role, url)| json!({
                        "profile": profile, "role": role, "url": url,
                    })).collect::<Vec<_>>(),
                    "reachable": e.usable(),
                    "http_status": status,
                    "elapsed_ms": millis,
                    "error": error,
                    "proxy_variable": e.proxy,
                })
            })
            .collect();
        let item = |what: &str, fix: &str| json!({"what": what, "fix": fix});
        json!({
            "ok": self.problems.is_empty(),
            "nothing_set_up": self.first_step(),
            "exit_code": self.exit_code(),
            "os": self.os,
            "stores": stores,
            "files": files,
            "clock": {
                "now": self.clock.now,
                "now_rfc3339": format_time(self.clock.now),
                "plausible": self.clock.plausible(),
                "compared_with": self.clock.server.as_ref().map(|(origin, _)| origin),
                "skew_secs": self.clock.skew(),
            },
            "profiles": profiles,
            "profiles_not_checked": self.not_checked,
            "endpoints": endpoints,
            "problems": self.problems.iter().map(|p| {
                let mut v = item(&p.what, &p.fix);
                v["exit_code"] = json!(p.code());
                v
            }).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(|w| item(&w.what, &w.fix)).collect::<Vec<_>>(),
        })
    }

    pub(super) fn render(&self) -> String {
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();

        let mut rows = Vec::new();
        for s in &self.stores {
            let users = if s.used_by.is_empty() {
                "not used by any profile checked".to_string()
            } else {
                format!("used by {}", profiles_phrase(&s.used_by))
            };
            match &s.outcome {
                Ok(note) => rows.push((
                    s.kind.name().to_string(),
                    format!("usable: {} — {note}; {users}", s.description),
                )),
                // Unused, it is information: no remedy for what nobody needs.
                Err(f) if s.used_by.is_empty() => rows.push((
                    s.kind.name().to_string(),
                    format!("unavailable: {} — {}; {users}", s.description, f.cause),
                )),
                Err(f) => {
                    rows.push((
                        s.kind.name().to_string(),
                        format!("UNAVAILABLE: {} — {}; {users}", s.description, f.cause),
                    ));
                    rows.push((String::new(), format!("what to do: {}", f.fix)));
                }
            }
        }
        if self.stores.is_empty() {
            rows.push((
                "(none)".into(),
                "this build has no secret store for this operating system".into(),
            ));
        }
        sections.push((format!("stores on this machine ({})", self.os), rows));

        let mut rows = Vec::new();
        for f in &self.files {
            let by = f.source.map(|v| format!(" (from {v})")).unwrap_or_default();
            let mut state = match (&f.writable, f.exists) {
                (Some(Ok(_)), true) => "exists, writable".to_string(),
                (Some(Ok(at)), false) => format!(
                    "not there yet (created on first use; {} is writable)",
                    at.display()
                ),
                (Some(Err(why)), _) => format!("NOT WRITABLE: {why}"),
                (None, true) => "exists".to_string(),
                (None, false) => "NOT THERE".to_string(),
            };
            match &f.trust {
                Some(Access::Private) if f.exists => state.push_str(", yours alone"),
                Some(Access::Loose(mode)) => state.push_str(&format!(
                    ", OPEN TO OTHERS (mode {mode:04o}; made 0700 on next use)"
                )),
                Some(Access::Refused(why)) => state.push_str(&format!(", REFUSED: {why}")),
                _ => {}
            }
            rows.push((
                f.label.to_string(),
                format!("{}{by}: {state}", f.path.display()),
            ));
        }
        sections.push(("files".into(), rows));

        let mut clock = format!(
            "{}: {}",
            format_time(self.clock.now),
            if self.clock.plausible() {
                "plausible"
            } else {
                "NOT PLAUSIBLE"
            }
        );
        match (self.clock.skew(), &self.clock.server) {
            (Some(skew), Some((origin, _))) => clock.push_str(&format!(
                "; {} {origin}'s Date",
                if skew.abs() <= 2 {
                    "agrees with".to_string()
                } else {
                    format!(
                        "{} {}",
                        format_span(skew.abs()),
                        if skew > 0 { "ahead of" } else { "behind" }
                    )
                }
            )),
            _ => clock.push_str("; no endpoint sent a Date to compare with"),
        }
        sections.push(("clock".into(), vec![("system time".into(), clock)]));

        let mut shown_endpoints: Vec<(String, Vec<(&'static str, &url::Url)>)> = Vec::new();
        for p in &self.profiles {
            let notes: Vec<&str> = [
                p.selected.then_some("selected"),
                (!p.configured).then_some("not in config.toml"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let mut title = format!("profile '{}'", p.name);
            if !notes.is_empty() {
                title.push_str(&format!(" ({})", notes.join("; ")));
            }
            let mut rows = Vec::new();
            let profile = match &p.resolved {
                Ok(profile) => profile,
                Err(why) => {
                    rows.push(("configuration".into(), format!("UNUSABLE: {why}")));
                    sections.push((title, rows));
                    continue;
                }
            };
            rows.push((
                "store".into(),
                match &p.store_failure {
                    None => format!("{}: usable", profile.store.name()),
                    // The cause is in the stores section and the problems, said once.
                    Some(_)
                        if self
                            .stores
                            .iter()
                            .any(|s| s.kind == profile.store && s.outcome.is_err()) =>
                    {
                        format!("{}: UNAVAILABLE (see its line above)", profile.store.name())
                    }
                    Some(f) => format!("{}: UNAVAILABLE ({})", profile.store.name(), f.cause),
                },
            ));
            rows.push((
                "client id".into(),
                profile.client_id.clone().unwrap_or_else(|| {
                    format!(
                        "NONE: run {}",
                        crate::hint::command(&p.name, "client set --client-id ID")
                    )
                }),
            ));
            rows.push((
                "client secret".into(),
                match &p.client_secret {
                    Presence::Stored => "stored".into(),
                    Presence::Missing => {
                        "none (right for a PKCE app; a web app or custom connection needs one)"
                            .into()
                    }
                    Presence::Unknown(why) => why.clone(),
                },
            ));
            rows.push((
                "token set".into(),
                match &p.token_set {
                    Presence::Stored => {
                        format!(
                            "stored ({} shows its lifetimes)",
                            crate::hint::command(&p.name, "status")
                        )
                    }
                    Presence::Missing => {
                        format!(
                            "NONE: run {} or {}",
                            crate::hint::command(&p.name, "login"),
                            crate::hint::command(&p.name, "import FILE")
                        )
                    }
                    Presence::Unknown(why) => why.clone(),
                },
            ));
            let roles = endpoint_roles(profile);
            // Profiles on the same endpoints (most: Xero's) get their lines once.
            let same_as = shown_endpoints
                .iter()
                .find(|(_, shown)| *shown == roles)
                .map(|(name, _)| name.clone());
            if let Some(earlier) = same_as {
                rows.push((
                    "endpoints".into(),
                    format!("the same as profile '{earlier}' (above)"),
                ));
                sections.push((title, rows));
                continue;
            }
            shown_endpoints.push((p.name.clone(), roles.clone()));
            for (role, url) in roles {
                let probe = self
                    .endpoints
                    .iter()
                    .find(|e| e.uses.iter().any(|(n, r, _)| *n == p.name && *r == role));
                let result = match probe {
                    None => "opened in the browser; not checked from here".to_string(),
                    Some(e) => describe_answer(e),
                };
                rows.push((role.to_string(), format!("{url} — {result}")));
            }
            sections.push((title, rows));
        }
        if !self.not_checked.is_empty() {
            sections.push((
                "other profiles".into(),
                vec![(
                    "not checked".into(),
                    format!(
                        "{} (`xero-auth doctor --all` checks every profile)",
                        self.not_checked
                            .iter()
                            .map(|n| format!("'{n}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )],
            ));
        }

        let mut out = String::new();
        for (title, rows) in sections {
            out.push_str(&title);
            out.push('\n');
            for (label, text) in rows {
                out.push_str(&format!("  {label:<15} {text}\n"));
            }
        }

        if !self.warnings.is_empty() {
            out.push_str("warnings\n");
            for w in &self.warnings {
                out.push_str(&format!("  - {}\n    what to do: {}\n", w.what, w.fix));
            }
        }
        if !self.problems.is_empty() {
            out.push_str("problems\n");
            for (i, p) in self.problems.iter().enumerate() {
                out.push_str(&format!(
                    "  {}. [exit {}] {}\n     what to do: {}\n",
                    i + 1,
                    p.code(),
                    p.what,
                    p.fix
                ));
            }
        }
        out.push_str(&match (self.problems.len(), self.first_step()) {
            (0, Some(first)) => format!("verdict: {first} (exit 0)\n"),
            (0, None) if self.profiles.len() == 1 => format!(
                "verdict: profile '{}' can be used (exit 0)\n",
                self.profiles.first().map_or("", |p| p.name.as_str())
            ),
            (0, None) => "verdict: every profile checked can be used (exit 0)\n".to_string(),
            (n, _) => format!(
                "verdict: {n} problem{} (exit {}, the first one's)\n",
                if n == 1 { "" } else { "s" },
                self.exit_code()
            ),
        });
        out
    }
}

fn describe_answer(e: &EndpointProbe) -> String {
    let via = e
        .proxy
        .map(|v| format!(" through the proxy in {v}"))
        .unwrap_or_default();
    match &e.answer {
        Answer::Http { status, millis, .. } if *status < 500 => {
            format!(
                "reachable{via} (HTTP {status} from {} in {millis} ms)",
                e.url
            )
        }
        Answer::Http { status, .. } => format!("FAILING{via}: HTTP {status} from {}", e.url),
        Answer::Failed { cause } => format!("UNREACHABLE{via}: {cause}"),
    }
}
