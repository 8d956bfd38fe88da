//! `config.toml` as a document: loaded through the file-safety check, read for what it sets,
//! edited keeping the user's comments and positions, and saved atomically.

use std::path::{Path, PathBuf};

use toml_edit::{Document, DocumentMut, Item, Table, Value};

use super::{DEFAULT_PROFILE, LIMITS_TABLE, profile_keys, validate_profile_name};
use crate::error::{Error, Result};
use crate::private_fs::{self, FileKind};

/// The largest `config.toml` read: a configuration of hundreds of profiles is a few hundred KB.
const MAX_CONFIG_FILE: usize = 16 << 20;

/// The configuration file, kept as a document so that writes preserve the user's comments.
#[derive(Debug)]
pub struct Config {
    path: PathBuf,
    /// The document with the edits made, once a command makes one (a copy of `read` then).
    /// Until then `read` is the document: the commands that only read the file (`token`, `api`,
    /// every one but the few that change it) never copy it, a cost that grew with each profile.
    edited: Option<DocumentMut>,
    /// The file as it was read, with the byte positions of its keys and tables, to say where a
    /// problem is (edits go to `edited`; this one is not changed).
    read: Document<String>,
    warnings: Vec<String>,
}

impl Config {
    /// Loads `config.toml`; a missing file is an empty configuration.
    ///
    /// The file decides where the client secret and the refresh token are sent (its endpoints),
    /// so it passes [`private_fs`]'s check first: its folder the user's alone (a loose one is
    /// tightened), no folder above it that another user can change, and the file itself the
    /// user's, changed by no one else. Anything else is refused (exit 1), naming it.
    pub fn load(path: &Path) -> Result<Self> {
        Config::load_as(path, FileKind::Own)
    }

    /// [`Config::load`] for `doctor`, which changes nothing: a loose folder is not tightened, and
    /// a file the check refuses reads as an empty configuration (`doctor` reports the refusal
    /// itself).
    pub fn load_unchanged(path: &Path) -> Result<Self> {
        match Config::load_as(path, FileKind::Named) {
            Err(Error::Untrusted { .. }) => Config::from_str(path, ""),
            other => other,
        }
    }

    fn load_as(path: &Path, kind: FileKind) -> Result<Self> {
        let bytes = private_fs::read_file(
            path,
            kind,
            MAX_CONFIG_FILE,
            "if you did not make it so, check that its endpoints are Xero's or yours, then \
             `chmod go-w` it (and `chmod 700` its folder); a file another user owns is theirs, not \
             yours: remove it",
        )?;
        let text = match bytes {
            Some(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| Error::Config {
                path: path.to_path_buf(),
                at: None,
                message: "not UTF-8 text".into(),
            })?,
            None => String::new(),
        };
        Config::from_str(path, &text)
    }

    /// Parses `text` as the configuration file at `path` (named in messages and used by
    /// [`Config::save`]; not read).
    pub fn from_str(path: &Path, text: &str) -> Result<Self> {
        let read = Document::parse(text.to_string()).map_err(|e| {
            let at = e.span().map(|span| line_and_column(text, span.start));
            // The line itself, as a compiler shows it: the position alone is hard to count to.
            let shown = at
                .and_then(|(line, _)| Some((line, text.lines().nth(line - 1)?)))
                .map(|(line, source)| format!("\n  {line} | {source}"))
                .unwrap_or_default();
            Error::Config {
                path: path.to_path_buf(),
                at,
                message: format!("not valid TOML: {}{shown}", e.message().trim_end()),
            }
        })?;
        let mut config = Config {
            path: path.to_path_buf(),
            edited: None,
            read,
            warnings: Vec::new(),
        };
        config.warnings = config.unknown_keys();
        Ok(config)
    }

    /// What in the file is not read, said once each with the line and the name most likely
    /// meant (`scope` → `scopes`, `[profile.x]` → `[profiles.x]`). Only warnings: the file may
    /// have been written for a newer version, and everything else in it still works.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn unknown_keys(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut warn = |span: Option<std::ops::Range<usize>>, what: String| {
            let line = span
                .map(|s| format!(", line {}", line_and_column(self.read.raw(), s.start).0))
                .unwrap_or_default();
            found.push(format!("{}{line}: {what}", self.path.display()));
        };
        for (key, item) in self.read.as_table().iter() {
            let span = self.read.as_table().key(key).and_then(|k| k.span());
            if key == "profiles" {
                let Some(profiles) = item.as_table() else {
                    continue; // a type error, reported when profiles are read
                };
                for (name, profile) in profiles.iter() {
                    let Some(table) = profile.as_table() else {
                        continue;
                    };
                    for (k, _) in table.iter() {
                        // `[profiles.NAME.limits]` is a table of its own, read by `rate_limits`.
                        if k == LIMITS_TABLE || profile_keys().any(|known| known == k) {
                            continue;
                        }
                        let meant = closest(k, profile_keys())
                            .map(|m| format!(": did you mean `{m}`?"))
                            .unwrap_or_default();
                        let span = table.key(k).and_then(|k| k.span());
                        warn(
                            span,
                            format!("unknown key `{k}` in [profiles.{name}], ignored{meant}"),
                        );
                    }
                }
            } else if profile_keys().any(|known| known == key) {
                warn(
                    span,
                    format!(
                        "`{key}` is outside any [profiles.NAME] table, ignored: put it under \
                         [profiles.{DEFAULT_PROFILE}]"
                    ),
                );
            } else {
                let meant = closest(key, ["profiles"]);
                match item.as_table() {
                    // `[profile.default]`: name each table the way it was meant.
                    Some(table) if table.iter().next().is_some() => {
                        for (name, sub) in table.iter() {
                            let span = sub.as_table().and_then(Table::span).or(span.clone());
                            let hint = meant
                                .map(|m| format!(": did you mean [{m}.{name}]?"))
                                .unwrap_or_default();
                            warn(span, format!("unknown table [{key}.{name}], ignored{hint}"));
                        }
                    }
                    _ => {
                        let hint = meant
                            .map(|m| format!(": did you mean `{m}`?"))
                            .unwrap_or_default();
                        warn(span, format!("unknown key `{key}`, ignored{hint}"));
                    }
                }
            }
        }
        found
    }

    /// The document as it is now: the file as read, with the edits made so far.
    fn doc(&self) -> &Table {
        match &self.edited {
            Some(doc) => doc.as_table(),
            None => self.read.as_table(),
        }
    }

    /// The document to edit, copied from the file as read on the first edit.
    fn doc_mut(&mut self) -> &mut DocumentMut {
        let read = &self.read;
        self.edited.get_or_insert_with(|| read.clone().into_mut())
    }

    /// The document's text as it is now.
    fn text(&self) -> String {
        match &self.edited {
            Some(doc) => doc.to_string(),
            None => self.read.clone().into_mut().to_string(),
        }
    }

    /// The file this configuration came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the profiles in the file. An empty table (`[profiles.NAME]` with no key left)
    /// sets nothing, and is no profile.
    pub fn profile_names(&self) -> Vec<String> {
        self.doc()
            .get("profiles")
            .and_then(Item::as_table)
            .map(|t| {
                t.iter()
                    .filter(|(_, item)| item.as_table().is_none_or(|t| !t.is_empty()))
                    .map(|(k, _)| k.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `profiles.NAME.KEY` as written in the file, if it is a value.
    pub fn raw_value(&self, profile: &str, key: &str) -> Option<&Value> {
        self.doc()
            .get("profiles")?
            .as_table()?
            .get(profile)?
            .as_table()?
            .get(key)?
            .as_value()
    }

    /// Whether `config.toml` has a `[profiles.NAME]` table.
    pub fn has_profile(&self, name: &str) -> bool {
        self.profile_names().iter().any(|n| n == name)
    }

    pub(super) fn profile_table(&self, name: &str) -> Result<Option<&Table>> {
        let Some(profiles) = self.doc().get("profiles") else {
            return Ok(None);
        };
        let profiles = profiles.as_table().ok_or_else(|| {
            self.error(
                &["profiles"],
                "`profiles` must be a table of [profiles.NAME] tables",
            )
        })?;
        match profiles.get(name) {
            None => Ok(None),
            Some(item) => item.as_table().map(Some).ok_or_else(|| {
                self.error(
                    &["profiles", name],
                    &format!("`profiles.{name}` must be a table"),
                )
            }),
        }
    }

    /// A configuration error about the item at `keys` (placed in the file as it was read).
    pub(super) fn error(&self, keys: &[&str], message: &str) -> Error {
        Error::Config {
            path: self.path.clone(),
            at: self.position(keys),
            message: message.to_string(),
        }
    }

    /// Line and column of the item at `keys` in the file as it was read: its key, or for a table
    /// its header.
    fn position(&self, keys: &[&str]) -> Option<(usize, usize)> {
        let (last, parents) = keys.split_last()?;
        let mut table = self.read.as_table();
        for key in parents {
            table = table.get(key)?.as_table()?;
        }
        let span = table
            .key(last)
            .and_then(|k| k.span())
            .or_else(|| table.get(last)?.as_table()?.span())?;
        Some(line_and_column(self.read.raw(), span.start))
    }
    /// Sets `profiles.NAME.KEY` (creating the profile), keeping everything else.
    pub fn set(&mut self, profile: &str, key: &str, value: impl Into<Value>) -> Result<()> {
        validate_profile_name(profile)?;
        self.profile_table(profile)?; // type-check what is there before changing it
        let profiles = self.doc_mut().entry("profiles").or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        let table = profiles
            .as_table_mut()
            .expect("checked above")
            .entry(profile)
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .expect("checked above");
        let mut value = value.into();
        // A value replaced in place keeps what surrounds it: a comment after it, the line break.
        if let Some(old) = table.get(key).and_then(Item::as_value) {
            *value.decor_mut() = old.decor().clone();
        }
        table[key] = Item::Value(value);
        Ok(())
    }

    /// Sets `profiles.NAME.KEY` from text as a person types it (`xero-auth config set`): KEY
    /// must be one of [`profile_keys`], the text becomes the TOML type the key is read as when
    /// it parses as one, and the profile must then resolve — through the same code every command
    /// reads it with, environment aside — or nothing is changed and that code's message is the
    /// error.
    pub fn set_checked(&mut self, profile: &str, key: &str, text: &str) -> Result<()> {
        if !profile_keys().any(|k| k == key) {
            let meant = closest(key, profile_keys())
                .map(|m| format!("did you mean `{m}`? "))
                .unwrap_or_default();
            return Err(Error::InvalidInput(format!(
                "unknown key `{key}`: {meant}the keys are {}",
                profile_keys().collect::<Vec<_>>().join(", ")
            )));
        }
        let value = match key {
            "file_work_factor" | "file_unlock_ttl" => text.parse::<i64>().map(Value::from).ok(),
            "mcp_read_only" => text.parse::<bool>().map(Value::from).ok(),
            "http_timeout" | "store_timeout" | "vault_lease_ttl" => {
                (text.parse::<i64>().map(Value::from).ok())
                    .or_else(|| text.parse::<f64>().ok().map(Value::from))
            }
            _ => None,
        }
        .unwrap_or_else(|| Value::from(text));
        let before = self.edited.clone();
        self.set(profile, key, value)?;
        let checked = self.checked(profile);
        if checked.is_err() {
            self.edited = before;
        }
        checked
    }

    /// Resolves `profile` from the document as it is now, without the environment's overrides,
    /// which would hide the file's values.
    fn checked(&self, profile: &str) -> Result<()> {
        // Positions stay the file's as read: an edited key is still on its line, a new one has
        // none.
        let edited = Config {
            path: self.path.clone(),
            read: self.read.clone(),
            edited: self.edited.clone(),
            warnings: Vec::new(),
        };
        edited.profile(profile, &|_| None).map(|_| ())
    }

    /// Removes `profiles.NAME.KEY`; true when it was there. A table left empty goes too: it
    /// would set nothing, yet read as a profile.
    pub fn remove(&mut self, profile: &str, key: &str) -> Result<bool> {
        self.profile_table(profile)?;
        let Some(profiles) = self.doc_mut().get_mut("profiles").and_then(Item::as_table_mut) else {
            return Ok(false);
        };
        let Some(table) = profiles.get_mut(profile).and_then(Item::as_table_mut) else {
            return Ok(false);
        };
        let removed = table.remove(key).is_some();
        if removed && table.is_empty() {
            profiles.remove(profile);
        }
        Ok(removed)
    }

    /// Removes the `[profiles.NAME]` table; true when it was there.
    pub fn remove_profile(&mut self, profile: &str) -> Result<bool> {
        self.profile_table(profile)?;
        Ok(self
            .doc_mut()
            .get_mut("profiles")
            .and_then(Item::as_table_mut)
            .is_some_and(|p| p.remove(profile).is_some()))
    }

    /// The keys `config.toml` sets for `profile`, with their values as written (TOML).
    pub fn raw_settings(&self, profile: &str) -> Vec<(String, Value)> {
        self.doc()
            .get("profiles")
            .and_then(Item::as_table)
            .and_then(|p| p.get(profile))
            .and_then(Item::as_table)
            .map(|t| {
                t.iter()
                    .filter_map(|(k, item)| Some((k.to_string(), item.as_value()?.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes the file atomically ([`private_fs::replace_file`]) in its folder, made the user's
    /// alone first.
    pub fn save(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        private_fs::private_folder(dir)?;
        private_fs::replace_file(&self.path, self.text().as_bytes())
            .map_err(|e| Error::io("cannot write the configuration file", &self.path, e))
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    // The parser's offset, moved back to a character boundary: slicing elsewhere would panic.
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The candidate closest to `word` when it is close enough to be what was meant: a typo or two
/// away, or `word` cut short or run on (`scope` for `scopes`, `redirect` for `redirect_uri`).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(distance, c)| {
            *distance <= 2 || (word.len() >= 4 && (c.starts_with(word) || word.starts_with(c)))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{env, load};
    use super::*;

    #[test]
    fn set_keeps_comments_and_other_profiles() {
        let (_d, mut config) = load("# mine\n[profiles.other]\nclient_id = \"X\"\n");
        config.set("default", "client_id", "NEW").unwrap();
        config.save().unwrap();
        let text = std::fs::read_to_string(config.path()).unwrap();
        assert!(
            text.contains("# mine") && text.contains("client_id = \"X\"") && text.contains("NEW"),
            "{text}"
        );
        let again = Config::load(config.path()).unwrap();
        assert_eq!(
            again
                .profile("default", &env(&[]))
                .unwrap()
                .client_id
                .as_deref(),
            Some("NEW")
        );
        assert_eq!(again.profile_names(), vec!["other", "default"]);
    }

    /// The temporary file's name is predictable: a link planted under it must not make the save
    /// write through it, nor leave `config.toml` a link.
    #[test]
    #[cfg(unix)]
    fn saving_never_writes_through_a_link_at_the_temporary_name() {
        let (dir, mut config) = load("");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"not the configuration").unwrap();
        let tmp = dir
            .path()
            .join(format!(".config.toml.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        config.set("default", "client_id", "ABC").unwrap();
        config.save().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"not the configuration");
        let saved = config.path();
        assert!(!saved.is_symlink(), "config.toml is a file of its own");
        assert!(std::fs::read_to_string(saved).unwrap().contains("ABC"));
    }

    #[test]
    fn the_closest_name_is_suggested_only_when_close() {
        let keys = || profile_keys();
        assert_eq!(closest("scope", keys()), Some("scopes"));
        assert_eq!(closest("client-id", keys()), Some("client_id"));
        assert_eq!(closest("redirect", keys()), Some("redirect_uri"));
        assert_eq!(closest("profile", ["profiles"]), Some("profiles"));
        assert_eq!(closest("flavour", keys()), None);
        assert_eq!(closest("prod", ["default", "imp"]), None);
    }

    /// The example in docs/configuration.md is read without a warning, and names every key the
    /// reader knows: the list of keys and the documentation cannot drift apart.
    #[test]
    fn the_documented_example_uses_every_key_and_only_known_ones() {
        let doc = include_str!("../../docs/configuration.md");
        let example = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block in docs/configuration.md");
        let (_d, config) = load(example);
        assert_eq!(config.warnings(), &[] as &[String]);
        for key in profile_keys() {
            assert!(
                example.contains(&format!("\n{key} = ")),
                "docs/configuration.md's example lacks {key}"
            );
        }
    }

    /// Seen before the fix: every load copied the whole document (and dropped the copy at
    /// exit), so `token` and `api` cost more with every profile in the file (200 profiles:
    /// ~1 ms of a ~10 ms `token`). Reading copies nothing; the first edit copies, and the file
    /// saved is the same either way.
    #[test]
    fn reading_the_file_never_copies_it_and_an_edit_keeps_the_rest() {
        let text = "# mine\n[profiles.default]\nclient_id = \"A\" # kept\n\n[profiles.b]\nscopes = \"x\"\n";
        let (_d, mut config) = load(text);
        config.profile("default", &env(&[])).unwrap();
        assert!(config.has_profile("b"));
        assert_eq!(config.raw_settings("b").len(), 1);
        assert!(config.edited.is_none(), "reading copied the document");
        assert_eq!(config.text(), text);
        config.set("b", "client_id", "C").unwrap();
        assert!(config.edited.is_some());
        assert_eq!(config.text(), format!("{text}client_id = \"C\"\n"));
        assert_eq!(
            config.profile("b", &env(&[])).unwrap().client_id.as_deref(),
            Some("C")
        );
    }

    #[test]
    fn set_checked_refuses_what_the_reader_refuses_and_changes_nothing() {
        let (_d, mut config) = load("[profiles.default]\nclient_id = \"A\" # mine\n");
        let before = config.text();
        for (key, value) in [
            ("store", "plaintext"),
            ("file_work_factor", "9"),
            ("store_timeout", "0"),
            ("api_url", "ftp://127.0.0.1/"),
            ("scope", "openid"),
        ] {
            assert!(config.set_checked("default", key, value).is_err(), "{key}");
            assert_eq!(config.text(), before, "{key}");
        }
        config.set_checked("default", "client_id", "B").unwrap();
        config
            .set_checked("default", "store_timeout", "2.5")
            .unwrap();
        config
            .set_checked("default", "file_work_factor", "12")
            .unwrap();
        assert_eq!(
            config.text(),
            "[profiles.default]\nclient_id = \"B\" # mine\nstore_timeout = 2.5\nfile_work_factor = 12\n"
        );
        let p = config.profile("default", &env(&[])).unwrap();
        assert_eq!(p.value_of("store_timeout").as_deref(), Some("2.5"));
        assert_eq!(p.value_of("file_work_factor").as_deref(), Some("12"));
    }
}
