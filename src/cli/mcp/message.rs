//! What the MCP bridge knows of the messages it passes on: the MCP stdio
//! transport carries JSON-RPC 2.0 messages, one per line, and the bridge needs only to tell
//! requests, notifications and responses apart and to read their ids — to know when a server
//! is quiet, to answer requests a server can no longer answer, and to replay `initialize`.
//! Messages themselves pass through byte for byte.

use serde_json::Value;

/// A request id as its JSON text (`7`, `"a-1"`): the number 1 and the string "1" stay apart.
pub type Id = String;

/// The method that opens an MCP session.
pub const INITIALIZE: &str = "initialize";
/// The notification a client sends once it has the `initialize` result.
pub const INITIALIZED: &str = "notifications/initialized";
/// The notification that withdraws a request (`params.requestId`).
pub const CANCELLED: &str = "notifications/cancelled";
/// The notification that reports progress on a request (from the client: on one of the
/// server's requests, such as a long `sampling/createMessage`).
pub const PROGRESS: &str = "notifications/progress";

/// One JSON-RPC message, as far as the bridge cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A request: it expects a response with the same id.
    Request {
        /// Its id.
        id: Id,
        /// Its method.
        method: String,
    },
    /// A notification (no id, no response). `cancelled` is the request it withdraws, for
    /// `notifications/cancelled`.
    Notification {
        /// Its method.
        method: String,
        /// For `notifications/cancelled`: the id of the request withdrawn.
        cancelled: Option<Id>,
    },
    /// A response (result or error) to the request with this id.
    Response {
        /// The id of the request it answers.
        id: Id,
    },
    /// Anything else: not JSON, not JSON-RPC, a response with a null id.
    Other,
}

/// The messages of one line: one, or several for a JSON-RPC batch.
pub fn classify(line: &[u8]) -> Vec<Message> {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Array(items)) => items.iter().map(classify_value).collect(),
        Ok(value) => vec![classify_value(&value)],
        Err(_) => vec![Message::Other],
    }
}

fn classify_value(value: &Value) -> Message {
    let Some(object) = value.as_object() else {
        return Message::Other;
    };
    let id = object
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .map(Value::to_string);
    let method = object.get("method").and_then(Value::as_str);
    match (method, id) {
        (Some(method), Some(id)) => Message::Request {
            id,
            method: method.to_string(),
        },
        (Some(method), None) => Message::Notification {
            method: method.to_string(),
            cancelled: (method == CANCELLED)
                .then(|| object.get("params")?.get("requestId"))
                .flatten()
                .filter(|id| id.is_string() || id.is_number())
                .map(Value::to_string),
        },
        (None, Some(id)) if object.contains_key("result") || object.contains_key("error") => {
            Message::Response { id }
        }
        _ => Message::Other,
    }
}

/// The `tools/call` requests of a line: each one's id (as JSON text) and tool name. Lines that
/// cannot hold one are not parsed.
pub fn tool_calls(line: &[u8]) -> Vec<(Id, String)> {
    if !contains(line, b"tools/call") {
        return Vec::new();
    }
    let one = |value: &Value| -> Option<(Id, String)> {
        if value.get("method")?.as_str()? != "tools/call" {
            return None;
        }
        let id = value.get("id").filter(|id| id.is_string() || id.is_number())?;
        let name = value.get("params")?.get("name")?.as_str()?;
        Some((id.to_string(), name.to_string()))
    };
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Ok(value) => one(&value).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// How a response ended, as far as the bridge cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The id of the request it answers.
    pub id: Id,
    /// A JSON-RPC error, or a tool result with `isError`.
    pub is_error: bool,
    /// A tool error saying that Xero refused the call (401 or 403). Xero's MCP server (0.0.17,
    /// `src/helpers/format-error.ts`) words those "Authentication failed. Please check your Xero
    /// credentials." and "You don't have permission to access this resource in Xero.", or gives
    /// the status and Xero's title ("403 Forbidden: …").
    pub refused_by_xero: bool,
}

/// The responses of a line and how each ended.
pub fn outcomes(line: &[u8]) -> Vec<Outcome> {
    const REFUSALS: [&str; 4] = [
        "Authentication failed",
        "have permission to access",
        "401 ",
        "403 ",
    ];
    let one = |value: &Value| -> Option<Outcome> {
        if value.get("method").is_some() {
            return None;
        }
        let id = value.get("id").filter(|id| id.is_string() || id.is_number())?;
        let result = value.get("result");
        let tool_error = result
            .and_then(|r| r.get("isError"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let says_refused = result
            .and_then(|r| r.get("content"))
            .and_then(Value::as_array)
            .is_some_and(|parts| {
                parts.iter().any(|part| {
                    part.get("text")
                        .and_then(Value::as_str)
                        .is_some_and(|text| REFUSALS.iter().any(|r| text.contains(r)))
                })
            });
        Some(Outcome {
            id: id.to_string(),
            is_error: value.get("error").is_some() || tool_error,
            refused_by_xero: tool_error && says_refused,
        })
    };
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Ok(value) => one(&value).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A JSON-RPC error response to request `id` (its JSON text), as one line without the newline.
/// The code is in the range JSON-RPC leaves to implementations (-32000 to -32099).
pub fn error_response(id: &str, message: &str) -> Vec<u8> {
    let id: Value = serde_json::from_str(id).unwrap_or(Value::Null);
    to_line(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32000, "message": message},
    }))
}

/// A JSON-RPC error response to request `id` (as read) with `code`, `message` and `data`, as one
/// line without the newline.
pub fn error_response_with(id: &Value, code: i64, message: &str, data: Value) -> Vec<u8> {
    to_line(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message, "data": data},
    }))
}

/// A `notifications/cancelled` that withdraws request `id` (its JSON text), saying why, as one
/// line without the newline.
pub fn cancelled_notification(id: &str, reason: &str) -> Vec<u8> {
    let id: Value = serde_json::from_str(id).unwrap_or(Value::Null);
    to_line(&serde_json::json!({
        "jsonrpc": "2.0",
        "method": CANCELLED,
        "params": {"requestId": id, "reason": reason},
    }))
}

/// `value` as one line without the newline.
pub fn to_line(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_told_apart_by_method_and_id() {
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#),
            vec![Message::Request {
                id: "1".into(),
                method: "initialize".into()
            }]
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":"1","method":"tools/list"}"#),
            vec![Message::Request {
                id: "\"1\"".into(),
                method: "tools/list".into()
            }]
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            vec![Message::Notification {
                method: INITIALIZED.into(),
                cancelled: None
            }]
        );
        assert_eq!(
            classify(
                br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4}}"#
            ),
            vec![Message::Notification {
                method: CANCELLED.into(),
                cancelled: Some("4".into())
            }]
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            vec![Message::Response { id: "3".into() }]
        );
        assert_eq!(
            classify(br#"{"jsonrpc":"2.0","id":"x","error":{"code":1,"message":"m"}}"#),
            vec![Message::Response { id: "\"x\"".into() }]
        );
    }

    #[test]
    fn batches_and_junk_are_handled() {
        assert_eq!(
            classify(br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]"#),
            vec![
                Message::Request {
                    id: "1".into(),
                    method: "a".into()
                },
                Message::Notification {
                    method: "b".into(),
                    cancelled: None
                }
            ]
        );
        for junk in [
            &b"not json"[..],
            b"42",
            br#"{"jsonrpc":"2.0","id":null,"error":{}}"#,
            br#"{"jsonrpc":"2.0","id":{"x":1},"method":"a"}"#,
        ] {
            let kinds = classify(junk);
            assert!(
                kinds
                    .iter()
                    .all(|m| matches!(m, Message::Other | Message::Notification { .. })),
                "{kinds:?}"
            );
        }
    }

    #[test]
    fn error_responses_keep_the_id_as_it_was() {
        let line = error_response("\"a-1\"", "gone");
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["id"], "a-1");
        assert_eq!(v["error"]["message"], "gone");
        assert_eq!(v["jsonrpc"], "2.0");
        let v: Value = serde_json::from_slice(&error_response("7", "gone")).unwrap();
        assert_eq!(v["id"], 7);
    }

    #[test]
    fn a_cancellation_names_the_request_as_it_was_and_reads_back_as_one() {
        let line = cancelled_notification("\"s-1\"", "replaced");
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["params"]["requestId"], "s-1");
        assert_eq!(v["params"]["reason"], "replaced");
        assert_eq!(
            classify(&line),
            vec![Message::Notification {
                method: CANCELLED.into(),
                cancelled: Some("\"s-1\"".into())
            }]
        );
    }
}
