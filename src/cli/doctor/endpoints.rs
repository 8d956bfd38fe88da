//! The endpoint probes of `xero-auth doctor`: one credential-free `GET` per origin the profiles
//! talk to, bounded in time, and the server's `Date` for the clock check.

use std::time::Instant;

use url::Url;

use super::{MAX_WAIT, ProfileCheck};
use crate::config::Profile;
use crate::time::parse_http_date;

/// What an endpoint origin answered.
pub enum Answer {
    Http {
        status: u16,
        millis: u128,
        date: Option<i64>,
    },
    Failed {
        cause: String,
    },
}

/// One origin the profiles talk to, probed once.
pub struct EndpointProbe {
    /// `scheme://host:port`.
    pub origin: String,
    /// What was fetched.
    pub url: Url,
    /// (profile, role, configured URL) for every endpoint at this origin.
    pub uses: Vec<(String, &'static str, String)>,
    /// The proxy variable the request went through, if any (never its value).
    pub proxy: Option<&'static str>,
    /// What came back.
    pub answer: Answer,
}

impl EndpointProbe {
    /// Any answer below 500.
    pub fn usable(&self) -> bool {
        matches!(self.answer, Answer::Http { status, .. } if status < 500)
    }

    /// "token endpoint of 'a', api endpoint of 'b'".
    pub fn uses_phrase(&self) -> String {
        let mut roles: Vec<String> = Vec::new();
        for (profile, role, _) in &self.uses {
            let text = format!("{role} endpoint of '{profile}'");
            if !roles.contains(&text) {
                roles.push(text);
            }
        }
        roles.join(", ")
    }
}

/// The configured endpoints a profile talks to, by role. `authorize` is opened by the browser,
/// possibly on another machine, so it is listed but not probed.
pub fn endpoint_roles(profile: &Profile) -> Vec<(&'static str, &Url)> {
    let e = &profile.endpoints;
    vec![
        ("token", &e.token),
        ("revocation", &e.revocation),
        ("connections", &e.connections),
        ("api", &e.api),
        ("authorize", &e.authorize),
    ]
}

/// Probes every origin the profiles' endpoints are at, once each, concurrently.
pub async fn probe_endpoints(
    profiles: &[ProfileCheck],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<EndpointProbe> {
    // Origins in order of first use; the token endpoint's origin gets the discovery document.
    let mut probes: Vec<(EndpointProbe, Profile)> = Vec::new();
    for p in profiles {
        let Ok(profile) = &p.resolved else { continue };
        for (role, url) in endpoint_roles(profile) {
            if role == "authorize" {
                continue;
            }
            let origin = url.origin().ascii_serialization();
            let use_ = (p.name.clone(), role, url.to_string());
            if let Some((probe, _)) = probes.iter_mut().find(|(e, _)| e.origin == origin) {
                probe.uses.push(use_);
                if role == "token" {
                    probe.url = discovery_url(url);
                }
                continue;
            }
            let probe_url = if role == "token" {
                discovery_url(url)
            } else {
                let mut root = url.clone();
                root.set_path("/");
                root.set_query(None);
                root.set_fragment(None);
                root
            };
            let proxy = crate::http::proxy_variable(url, env);
            probes.push((
                EndpointProbe {
                    origin,
                    url: probe_url,
                    uses: vec![use_],
                    proxy,
                    answer: Answer::Failed {
                        cause: "not probed".into(),
                    },
                },
                profile.clone(),
            ));
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    for (i, (probe, profile)) in probes.iter().enumerate() {
        let url = probe.url.clone();
        let profile = profile.clone();
        tasks.spawn(async move { (i, get_without_credentials(&profile, url).await) });
    }
    let mut answers: Vec<Option<Answer>> = probes.iter().map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, answer)) = done {
            answers[i] = Some(answer);
        }
    }
    probes
        .into_iter()
        .zip(answers)
        .map(|((mut probe, _), answer)| {
            probe.answer = answer.unwrap_or(Answer::Failed {
                cause: "the probe failed unexpectedly".into(),
            });
            probe
        })
        .collect()
}

/// `https://identity.xero.com/.well-known/openid-configuration` for Xero's token endpoint.
pub fn discovery_url(token_url: &Url) -> Url {
    let mut url = token_url.clone();
    url.set_path("/.well-known/openid-configuration");
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// A `GET` with no credential, no body, no redirect, bounded in time; only the status and the
/// `Date` header are kept.
async fn get_without_credentials(profile: &Profile, url: Url) -> Answer {
    let client = match crate::http::client(profile) {
        Ok(client) => client,
        Err(e) => {
            return Answer::Failed {
                cause: format!(
                    "cannot set up HTTPS: {}",
                    crate::http::describe_transport(&e)
                ),
            };
        }
    };
    let wait = profile.http_timeout.min(MAX_WAIT);
    let started = Instant::now();
    match client.get(url).timeout(wait).send().await {
        Ok(response) => Answer::Http {
            status: response.status().as_u16(),
            millis: started.elapsed().as_millis(),
            date: response
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_http_date),
        },
        Err(e) => Answer::Failed {
            cause: crate::http::describe_transport(&e),
        },
    }
}

pub fn unreachable_fix(e: &EndpointProbe) -> String {
    let settings: Vec<String> = e
        .uses
        .iter()
        .map(|(_, role, _)| match *role {
            "token" => "token_url / XERO_AUTH_TOKEN_URL",
            "revocation" => "revocation_url / XERO_AUTH_REVOCATION_URL",
            "connections" => "connections_url / XERO_AUTH_CONNECTIONS_URL",
            _ => "api_url / XERO_AUTH_API_URL",
        })
        .map(String::from)
        .fold(Vec::new(), |mut acc, s| {
            if !acc.contains(&s) {
                acc.push(s);
            }
            acc
        });
    let proxy = match e.proxy {
        Some(v) => format!("the proxy in {v}, "),
        None => String::new(),
    };
    format!(
        "check the network, {proxy}the firewall and the URL ({}); stored credentials are not \
         affected — run again once it answers",
        settings.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_origin_is_probed_at_its_discovery_document() {
        let token = Url::parse("https://identity.xero.com/connect/token?x=1").unwrap();
        assert_eq!(
            discovery_url(&token).as_str(),
            "https://identity.xero.com/.well-known/openid-configuration"
        );
    }
}
