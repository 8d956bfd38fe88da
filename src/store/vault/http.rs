//! The vault store's HTTP: the client (the tool's set-up, the server's CA), the URLs built from
//! `vault_addr`'s origin, one request run to its end from a blocking thread, and the failures
//! every call reports alike (transport, sealed, denied, unexpected).

use super::credentials::read_named;
use super::{Answer, AuthMethod, MAX_ANSWER, SecretStore as _, StoreFailure, VaultStore};
use crate::private_fs::FileKind;
use crate::secret::{ExposeSecret, SecretString, Zeroizing};

impl VaultStore {
    pub(super) fn client(&self) -> Result<&reqwest::Client, StoreFailure> {
        self.client
            .get_or_init(|| {
                let mut builder = crate::http::client_builder(self.http_timeout);
                if let Some(path) = &self.settings.cacert {
                    let pem = read_named(
                        path,
                        FileKind::Named,
                        "the CA file",
                        "point vault_cacert / VAULT_CACERT at a PEM file of the CA certificates \
                         that signed the server's certificate",
                    )?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .ok()
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| StoreFailure {
                            cause: format!(
                                "the CA file {} holds no PEM certificate",
                                path.display()
                            ),
                            fix: "give a PEM file (-----BEGIN CERTIFICATE-----)".into(),
                        })?;
                    // As the Vault CLI does: the given CAs only, not the system's as well.
                    builder = builder.tls_certs_only(certs);
                }
                builder.build().map_err(|e| StoreFailure {
                    cause: format!(
                        "cannot set up HTTPS ({})",
                        crate::http::describe_transport(&e)
                    ),
                    fix: "check vault_cacert / VAULT_CACERT".into(),
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `MOUNT/data/PREFIX/ACCOUNT` (or `metadata`) as path segments.
    pub(super) fn entry_path(
        &self,
        kind: &str,
        account: &str,
    ) -> Result<Vec<String>, StoreFailure> {
        let bad =
            || StoreFailure::mistyped(format!("'{account}' is not an entry name this store uses"));
        let mut segments: Vec<String> = self.settings.mount.split('/').map(String::from).collect();
        segments.push(kind.into());
        segments.extend(self.settings.prefix.split('/').map(String::from));
        for part in account.split('/') {
            crate::config::vault_path("entry", part).map_err(|_| bad())?;
            segments.push(part.into());
        }
        Ok(segments)
    }

    /// What messages call an entry: `MOUNT/data/PREFIX/ACCOUNT`, as a policy names it.
    pub(super) fn shown_path(segments: &[String]) -> String {
        segments.join("/")
    }

    pub(super) fn url(&self, segments: &[String]) -> Result<url::Url, StoreFailure> {
        let mut url = self.addr()?.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| StoreFailure {
                cause: "vault_addr cannot carry a path".into(),
                fix: "give the server's address, e.g. https://vault.example.com:8200".into(),
            })?;
            path.clear().push("v1");
            for segment in segments {
                path.push(segment);
            }
        }
        Ok(url)
    }

    /// Runs a request to its end from this blocking thread (see the module documentation).
    pub(super) fn block<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreFailure>>,
    ) -> Result<T, StoreFailure> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(fut),
            // A program calling the store outside any runtime: one of its own for the call.
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreFailure {
                    cause: format!("cannot start an async runtime for the vault store ({e})"),
                    fix: "run the command again".into(),
                })?
                .block_on(fut),
        }
    }

    /// Sends one request; `token` adds `X-Vault-Token`. Transport failures become a failure with
    /// a cause and a fix; any status comes back as it is.
    pub(super) async fn send(
        &self,
        method: reqwest::Method,
        segments: &[String],
        body: Option<Zeroizing<Vec<u8>>>,
        token: Option<&SecretString>,
    ) -> Result<Answer, StoreFailure> {
        let url = self.url(segments)?;
        let mut request = self.client()?.request(method, url);
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(token.expose_secret())
                .map_err(|_| StoreFailure {
                    cause: "the Vault token has characters a header cannot carry".into(),
                    fix: "sign in again (`bao login` / `vault login`) or set VAULT_TOKEN to the token as Vault printed it".into(),
                })?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(namespace) = &self.settings.namespace {
            request = request.header("X-Vault-Namespace", namespace.as_str());
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(crate::secret::zeroizing_bytes(body));
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::time::parse_http_date);
        let body = crate::http::read_body(response, MAX_ANSWER)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::Transport(e) => self.transport(&e),
                crate::http::BodyError::TooLarge => StoreFailure {
                    cause: format!(
                        "{} answered with more than {MAX_ANSWER} bytes",
                        self.where_()
                    ),
                    fix: "check that vault_addr names a Vault or OpenBao server".into(),
                },
            })?;
        Ok(Answer { status, date, body })
    }

    pub(super) fn transport(&self, e: &reqwest::Error) -> StoreFailure {
        if e.is_timeout() {
            return StoreFailure {
                cause: format!(
                    "{} does not answer ({})",
                    self.where_(),
                    crate::http::describe_transport(e)
                ),
                fix: self.hang_fix(),
            };
        }
        let cause = format!(
            "cannot reach {} ({})",
            self.where_(),
            crate::http::describe_transport(e)
        );
        let lower = cause.to_ascii_lowercase();
        let fix = if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake")
        {
            "the server's certificate is not trusted: set vault_cacert (or VAULT_CACERT) to the PEM \
             file of the CA that signed it, and check that vault_addr's host name is the one in it"
        } else if lower.contains("refused") || lower.contains("dns") || lower.contains("resolve") {
            "check that the server runs and that vault_addr (or VAULT_ADDR) names it, then run the \
             command again; nothing stored was changed"
        } else {
            "check the network path to the server and run the command again; nothing stored was \
             changed"
        };
        StoreFailure {
            cause,
            fix: fix.into(),
        }
    }

    /// A request with the token, and the failure for the statuses every call treats alike.
    pub(super) fn call(
        &self,
        method: reqwest::Method,
        segments: &[String],
        body: Option<Zeroizing<Vec<u8>>>,
        capability: &str,
    ) -> Result<Answer, StoreFailure> {
        let mut signed_in_again = false;
        loop {
            let token = self.token()?;
            let answer =
                self.block(self.send(method.clone(), segments, body.clone(), Some(&token)))?;
            match answer.status {
                // A process that runs for hours (`mcp`, `exec --server`) outlives an AppRole
                // token's `token_ttl`, or a `bao login` replaces the token file: a token that is
                // no longer valid is dropped and the process signs in again, once. A 403 means
                // nothing was done, so the call can be made again.
                403 if !signed_in_again
                    && matches!(
                        self.auth_method(),
                        AuthMethod::AppRole(_) | AuthMethod::TokenFile(_)
                    )
                    && !self.token_valid(&token) =>
                {
                    signed_in_again = true;
                    self.token.lock().unwrap_or_else(|p| p.into_inner()).take();
                    tracing::info!("the Vault token is no longer valid; signing in again");
                }
                403 => return Err(self.denied(&token, segments, capability)),
                503 | 501 => return Err(self.sealed_or_down(&answer)),
                _ => return Ok(answer),
            }
        }
    }

    /// Whether the server still takes `token` (`auth/token/lookup-self`); a lookup that fails
    /// for another reason counts as valid, so that only a refused token is replaced.
    pub(super) fn token_valid(&self, token: &SecretString) -> bool {
        let lookup: Vec<String> = ["auth", "token", "lookup-self"].map(String::from).to_vec();
        self.block(self.send(reqwest::Method::GET, &lookup, None, Some(token)))
            .map_or(true, |a| a.status == 200)
    }

    /// A 403: the token is no longer valid, or the policy lacks `capability` on the path.
    pub(super) fn denied(
        &self,
        token: &SecretString,
        segments: &[String],
        capability: &str,
    ) -> StoreFailure {
        let path = Self::shown_path(segments);
        if !self.token_valid(token) {
            return StoreFailure {
                cause: format!(
                    "{} refused the token: it is expired, revoked or from another server{}",
                    self.where_(),
                    self.namespace_note()
                ),
                fix: format!(
                    "sign in again ({}) and run the command again; nothing stored was changed",
                    match self.auth_method() {
                        AuthMethod::AppRole(_) =>
                            "check the AppRole's token_ttl and secret id".into(),
                        AuthMethod::TokenVariable(var) => {
                            format!("the token came from {var}: replace it")
                        }
                        AuthMethod::TokenFile(path) => format!(
                            "the token came from {}: sign in again to replace it",
                            path.display()
                        ),
                        AuthMethod::None => "no token was found: give one".into(),
                    }
                ),
            };
        }
        StoreFailure {
            cause: format!(
                "{} denied '{capability}' on {path}: the token's policy does not grant it{}",
                self.where_(),
                self.namespace_note()
            ),
            fix: format!(
                "add `path \"{path}\" {{ capabilities = [\"{capability}\"] }}` (see docs/teams.md \
                 for the whole policy) to the token's policy, or use a token that has it"
            ),
        }
    }

    pub(super) fn namespace_note(&self) -> String {
        match &self.settings.namespace {
            Some(ns) => format!(" (namespace '{ns}')"),
            None => String::new(),
        }
    }

    pub(super) fn sealed_or_down(&self, answer: &Answer) -> StoreFailure {
        let errors = answer.errors().join("; ");
        if errors.to_ascii_lowercase().contains("sealed") {
            return StoreFailure {
                cause: format!("{} is sealed", self.where_()),
                fix: "ask its operators to unseal it (`bao operator unseal` / `vault operator \
                      unseal`), then run the command again; nothing stored was changed"
                    .into(),
            };
        }
        StoreFailure {
            cause: format!(
                "{} is not available (HTTP {}{}{})",
                self.where_(),
                answer.status,
                if errors.is_empty() { "" } else { ": " },
                errors
            ),
            fix: "check `bao status` / `vault status` and run the command again; nothing stored \
                  was changed"
                .into(),
        }
    }

    /// Any other status a call did not expect.
    pub(super) fn unexpected(
        &self,
        what: &str,
        segments: &[String],
        answer: &Answer,
    ) -> StoreFailure {
        let errors = answer.errors().join("; ");
        let lower = errors.to_ascii_lowercase();
        let fix = if lower.contains("namespace") {
            "check vault_namespace (or VAULT_NAMESPACE): the namespace must exist on the server"
                .to_string()
        } else if lower.contains("no handler for route") || lower.contains("unsupported path") {
            format!(
                "no KV version 2 engine is mounted at '{}': check vault_mount, or enable one \
                 (`bao secrets enable -path={} kv-v2`)",
                self.settings.mount, self.settings.mount
            )
        } else {
            "run `xero-auth doctor`; nothing stored was changed".into()
        };
        StoreFailure {
            cause: format!(
                "{} answered HTTP {} to a {what} of {}{}{}{}",
                self.where_(),
                answer.status,
                Self::shown_path(segments),
                self.namespace_note(),
                if errors.is_empty() { "" } else { ": " },
                errors
            ),
            fix,
        }
    }
}
