//! The bridge's guard rails: which of the server's tools the client may see and call
//! (`--read-only`, `--allow-tool`, `--deny-tool` and the profile's `mcp_*` settings). Without
//! I/O: `core` asks [`Guard::check`] for each tool a `tools/list` answer lists and each
//! `tools/call` the client makes.
//!
//! The rules, in order (the first that applies decides):
//! 1. a tool that matches a deny pattern is refused;
//! 2. with read-only, a tool that does not read is refused;
//! 3. with allow patterns, a tool that matches none is refused;
//! 4. anything else passes.
//!
//! Whether a tool reads: by its MCP annotations where the server gives them
//! (`destructiveHint: true` or `readOnlyHint: false`: it writes; `readOnlyHint: true`: it
//! reads), else by Xero's tool names: `list-…` and `get-…` read, anything else does not. Xero's
//! server (`@xeroapi/xero-mcp-server` 0.0.17) gives no annotations: `src/tools/tool-factory.ts`
//! registers each tool with `server.tool(name, description, schema, handler)` only; its read
//! tools are named `list-…` (and `get-timesheet`), its writes `create-…`, `update-…`,
//! `delete-…`, `add-timesheet-line`, `approve-timesheet` and `revert-timesheet` — which the name
//! rule counts as writes, as it does any name it does not know.

use serde_json::Value;

/// Where a pattern came from, to name it in a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--allow-tool` / `--deny-tool`.
    CommandLine,
    /// `mcp_allow_tools` / `mcp_deny_tools` in the profile's configuration.
    Config,
}

/// A tool name pattern: `*` stands for any run of characters, `?` for one; the rest is matched
/// as it is, against the whole name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    source: Source,
}

impl Pattern {
    /// A pattern as given.
    pub fn new(text: &str, source: Source) -> Self {
        Pattern {
            text: text.to_string(),
            source,
        }
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob(
            &self.text.chars().collect::<Vec<_>>(),
            &name.chars().collect::<Vec<_>>(),
        )
    }

    fn describe(&self, flag: &str, key: &str) -> String {
        match self.source {
            Source::CommandLine => format!("'{}' (--{flag})", self.text),
            Source::Config => format!("'{}' ({key} in the profile's configuration)", self.text),
        }
    }
}

/// `*` and `?` matching without recursion: on a mismatch after a `*`, that `*` takes one more
/// character (the usual greedy-with-backtrack walk, linear in practice).
fn glob(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == '?' || Some(c) == name.get(n) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// What a server says of a tool in its `annotations` (MCP 2025-03-26 and later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Annotations {
    /// `readOnlyHint`.
    pub read_only: Option<bool>,
    /// `destructiveHint`.
    pub destructive: Option<bool>,
}

impl Annotations {
    /// The annotations of a tool as `tools/list` lists it (`None`: it has none).
    pub fn of(tool: &Value) -> Option<Self> {
        let annotations = tool.get("annotations")?.as_object()?;
        let found = Annotations {
            read_only: annotations.get("readOnlyHint").and_then(Value::as_bool),
            destructive: annotations.get("destructiveHint").and_then(Value::as_bool),
        };
        (found != Annotations::default()).then_some(found)
    }
}

/// Why a tool is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule, short: `deny-tool`, `read-only` or `allow-tool` (and `no-name` for a call
    /// that names no tool).
    pub rule: &'static str,
    /// The whole message for the client.
    pub message: String,
}

/// The guard rails in force; the default lets everything through.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Pass only tools that read.
    pub read_only: bool,
    /// With any, a tool must match one.
    pub allow: Vec<Pattern>,
    /// A tool that matches one is refused, whatever else says.
    pub deny: Vec<Pattern>,
}

impl Guard {
    /// Whether any rule is in force (without one, the bridge does not look into messages).
    pub fn is_active(&self) -> bool {
        self.read_only || !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// Whether tool `name` (with `annotations`, when the server gave some) may be listed and
    /// called; else which rule refuses it, and why.
    pub fn check(&self, name: &str, annotations: Option<Annotations>) -> Result<(), Refusal> {
        if let Some(pattern) = self.deny.iter().find(|p| p.matches(name)) {
            return Err(Refusal {
                rule: "deny-tool",
                message: format!(
                    "xero-auth mcp: the tool '{name}' is refused: it matches the deny pattern {}",
                    pattern.describe("deny-tool", "mcp_deny_tools")
                ),
            });
        }
        if self.read_only
            && let Some(why) = writes(name, annotations)
        {
            return Err(Refusal {
                rule: "read-only",
                message: format!(
                    "xero-auth mcp: the tool '{name}' is refused: the bridge runs read-only \
                     (--read-only or mcp_read_only) and passes only tools that read; {why}"
                ),
            });
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| p.matches(name)) {
            let patterns: Vec<String> = self
                .allow
                .iter()
                .map(|p| p.describe("allow-tool", "mcp_allow_tools"))
                .collect();
            return Err(Refusal {
                rule: "allow-tool",
                message: format!(
                    "xero-auth mcp: the tool '{name}' is refused: it matches none of the allow \
                     patterns {}",
                    patterns.join(", ")
                ),
            });
        }
        Ok(())
    }
}

/// Why tool `name` counts as one that may write; `None` when it reads.
fn writes(name: &str, annotations: Option<Annotations>) -> Option<String> {
    match annotations {
        Some(Annotations {
            destructive: Some(true),
            ..
        }) => Some("the server marks it destructive (destructiveHint)".into()),
        Some(Annotations {
            read_only: Some(false),
            ..
        }) => Some("the server says it is not read-only (readOnlyHint: false)".into()),
        Some(Annotations {
            read_only: Some(true),
            ..
        }) => None,
        _ if name.starts_with("list-") || name.starts_with("get-") => None,
        _ => Some(
            "the server gives no readOnlyHint for it, and by its name it is not one of the tools \
             that read (list-… and get-…)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cli(text: &str) -> Pattern {
        Pattern::new(text, Source::CommandLine)
    }

    #[test]
    fn patterns_match_whole_names_with_stars_and_question_marks() {
        for (pattern, name, expected) in [
            ("list-*", "list-contacts", true),
            ("list-*", "list-", true),
            ("list-*", "xlist-contacts", false),
            ("*-contact", "create-contact", true),
            ("*-contact", "create-contacts", false),
            ("*contact*", "list-contact-groups", true),
            ("create-*-*", "create-credit-note", true),
            ("create-*-*", "create-contact", false),
            ("get-?imesheet", "get-timesheet", true),
            ("get-?imesheet", "get-imesheet", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a**b", "ab", true),
            ("a*b*c", "abxbxc", true),
            ("a*b*c", "abxbx", false),
            ("update-invoice", "update-invoice", true),
            ("update-invoice", "update-invoices", false),
            ("*é", "café", true),
        ] {
            assert_eq!(cli(pattern).matches(name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn read_only_goes_by_annotations_where_given_else_by_xeros_names() {
        let guard = Guard {
            read_only: true,
            ..Guard::default()
        };
        for name in ["list-contacts", "get-timesheet", "list-profit-and-loss"] {
            assert_eq!(guard.check(name, None), Ok(()), "{name}");
        }
        for name in [
            "create-contact",
            "update-invoice",
            "delete-timesheet",
            "approve-timesheet",
            "revert-timesheet",
            "add-timesheet-line",
            "something-new",
            "List-contacts",
        ] {
            let refused = guard.check(name, None).unwrap_err();
            assert_eq!(refused.rule, "read-only", "{name}");
            assert!(refused.message.contains(&format!("'{name}'")), "{refused:?}");
            assert!(refused.message.contains("list-… and get-…"), "{refused:?}");
        }
        let reads = Annotations::of(&json!({"name": "x", "annotations": {"readOnlyHint": true}}));
        assert_eq!(guard.check("search", reads), Ok(()));
        let destructive = Annotations::of(
            &json!({"annotations": {"readOnlyHint": true, "destructiveHint": true}}),
        );
        assert!(
            guard
                .check("list-things", destructive)
                .unwrap_err()
                .message
                .contains("destructiveHint")
        );
        let writes = Annotations::of(&json!({"annotations": {"readOnlyHint": false}}));
        assert_eq!(guard.check("get-x", writes).unwrap_err().rule, "read-only");
        // Annotations without either hint (a title only) leave it to the name.
        let untitled = Annotations::of(&json!({"annotations": {"title": "Contacts"}}));
        assert_eq!(untitled, None);
        assert_eq!(Annotations::of(&json!({"annotations": 3})), None);
    }

    #[test]
    fn deny_wins_over_allow_and_read_only_over_allow() {
        let guard = Guard {
            read_only: true,
            allow: vec![cli("list-*"), Pattern::new("create-contact", Source::Config)],
            deny: vec![Pattern::new("list-payroll-*", Source::Config)],
        };
        assert_eq!(guard.check("list-contacts", None), Ok(()));
        let denied = guard.check("list-payroll-employees", None).unwrap_err();
        assert_eq!(denied.rule, "deny-tool");
        assert!(
            denied
                .message
                .contains("'list-payroll-*' (mcp_deny_tools in the profile's configuration)"),
            "{denied:?}"
        );
        // Allowed by name, but read-only does not let a write through.
        assert_eq!(
            guard.check("create-contact", None).unwrap_err().rule,
            "read-only"
        );
        let unlisted = guard.check("get-timesheet", None).unwrap_err();
        assert_eq!(unlisted.rule, "allow-tool");
        assert!(
            unlisted.message.contains("'list-*' (--allow-tool)"),
            "{unlisted:?}"
        );
    }

    #[test]
    fn without_rules_everything_passes() {
        let guard = Guard::default();
        assert!(!guard.is_active());
        assert_eq!(guard.check("delete-timesheet", None), Ok(()));
        let deny_only = Guard {
            deny: vec![cli("delete-*")],
            ..Guard::default()
        };
        assert!(deny_only.is_active());
        assert_eq!(deny_only.check("create-contact", None), Ok(()));
        assert_eq!(
            deny_only.check("delete-timesheet", None).unwrap_err().rule,
            "deny-tool"
        );
    }
}
