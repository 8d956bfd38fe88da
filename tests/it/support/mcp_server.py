#!/usr/bin/env python3
"""A small MCP server (stdio transport) for the tests of `xero-auth mcp`.

It answers `initialize`, `ping`, `tools/list` and `tools/call` (only after
`notifications/initialized`), and reports through its tools what a test needs to see:

  whoami {tag}      the bearer token in its environment, its pid, the order in which it received
                    requests, whether a client id or secret reached it, the raw line received
  slow {seconds}    answers after a while (other requests are answered meanwhile), or never
                    when the client cancels it first
  roots {after}     after a while, asks the client `roots/list` and answers with the client's
                    answer (the way a server asks its client something before it answers)
  crash             ends the process with status 3 without answering

Cancellations it receives are reported on stderr and by `whoami`; so are responses to requests
it never sent (`stray`).

Usage: mcp_server.py [TOKEN_VARIABLE]   (default XERO_CLIENT_BEARER_TOKEN)
"""

import json
import os
import sys
import threading
import time

TOKEN_VARIABLE = sys.argv[1] if len(sys.argv) > 1 else "XERO_CLIENT_BEARER_TOKEN"
out_lock = threading.Lock()
ask_lock = threading.Lock()
state = {"initialize": 0, "initialized": False, "seq": 0, "cancelled": [], "stray": [],
         "asked": 0}
# Ids of this server's own requests to the client -> [event, the client's answer].
waiting = {}

TOOLS = [
    {"name": "whoami", "description": "the token this server was given",
     "inputSchema": {"type": "object", "properties": {"tag": {"type": "string"}}}},
    {"name": "slow", "description": "answers after a while",
     "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
    {"name": "roots", "description": "asks the client for its roots",
     "inputSchema": {"type": "object", "properties": {"after": {"type": "number"}}}},
    {"name": "crash", "description": "ends the server without answering",
     "inputSchema": {"type": "object"}},
]


def send(message):
    with out_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def result(id_, value):
    send({"jsonrpc": "2.0", "id": id_, "result": value})


def text(id_, value):
    result(id_, {"content": [{"type": "text", "text": json.dumps(value)}]})


def error(id_, code, message):
    send({"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}})


def ask(method):
    """Sends the client a request and waits (bounded) for its answer."""
    with ask_lock:
        state["asked"] += 1
        id_ = "s-%d" % state["asked"]
        slot = waiting[id_] = [threading.Event(), None]
    send({"jsonrpc": "2.0", "id": id_, "method": method})
    slot[0].wait(90)
    return slot[1]


def handle(raw, message):
    method, id_ = message.get("method"), message.get("id")
    if method is None and ("result" in message or "error" in message):
        slot = waiting.pop(id_, None) if isinstance(id_, str) else None
        if slot is None:
            state["stray"].append(id_)
        else:
            slot[1] = message
            slot[0].set()
    elif method == "notifications/cancelled":
        cancelled = (message.get("params") or {}).get("requestId")
        state["cancelled"].append(cancelled)
        print("token-echo server %d: request %s cancelled" % (os.getpid(), json.dumps(cancelled)),
              file=sys.stderr, flush=True)
    elif method == "initialize":
        state["initialize"] += 1
        result(id_, {
            "protocolVersion": message.get("params", {}).get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "token-echo", "version": "1"},
        })
    elif method == "notifications/initialized":
        state["initialized"] = True
    elif id_ is None:
        pass
    elif method == "ping":
        result(id_, {})
    elif not state["initialized"]:
        error(id_, -32002, "not initialized")
    elif method == "tools/list":
        result(id_, {"tools": TOOLS})
    elif method == "tools/call":
        state["seq"] += 1
        name = message["params"]["name"]
        args = message["params"].get("arguments") or {}
        if name == "whoami":
            text(id_, {
                "token": os.environ.get(TOKEN_VARIABLE),
                "pid": os.getpid(),
                "seq": state["seq"],
                "tag": args.get("tag"),
                "initialize_count": state["initialize"],
                "initialized": state["initialized"],
                "client_id_present": "XERO_CLIENT_ID" in os.environ,
                "client_secret_present": "XERO_CLIENT_SECRET" in os.environ,
                "cancelled": state["cancelled"],
                "stray": state["stray"],
                "raw": raw,
            })
        elif name == "slow":
            def later():
                time.sleep(float(args.get("seconds", 1)))
                if id_ not in state["cancelled"]:
                    text(id_, {"slow": "done", "pid": os.getpid()})
            threading.Thread(target=later, daemon=True).start()
        elif name == "roots":
            def later():
                time.sleep(float(args.get("after", 0)))
                answer = ask("roots/list")
                if answer is None:
                    error(id_, -32001, "the client did not answer roots/list")
                else:
                    text(id_, {"roots": answer.get("result"), "pid": os.getpid()})
            threading.Thread(target=later, daemon=True).start()
        elif name == "crash":
            sys.stdout.flush()
            os._exit(3)
        else:
            error(id_, -32602, "unknown tool " + name)
    else:
        error(id_, -32601, "method not found")


print("token-echo server started, pid %d" % os.getpid(), file=sys.stderr, flush=True)
for line in sys.stdin:
    raw = line.rstrip("\n")
    if not raw.strip():
        continue
    try:
        message = json.loads(raw)
    except ValueError:
        error(None, -32700, "parse error")
        continue
    handle(raw, message)
