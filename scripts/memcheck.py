#!/usr/bin/env python3
"""Searches the memory image of xero-auth for the secrets it handled.

Runs `client set`, `import`, `token`, `refresh`, `login`, `exec --server` (the parent, which
outlives its child and refreshes for it) and `mcp` with its guard rails against the fake Xero,
each under
gdb, stops it at the exit_group system call, dumps the process image with gcore, and counts
every secret that process handled -- client secret, old and new refresh token, access tokens,
id token -- as raw bytes, as UTF-16LE, as 32-byte pieces of its random part (a buffer that held
part of a secret, such as a cipher's block buffer on a thread stack) and (for the client secret)
as the base64 Basic credential. Exits 1 on any occurrence, printing which secret, which form, and the count.

Needs: gdb, a reachable Secret Service (run it inside the test script's D-Bus session), and the
binaries target/<profile>/xero-auth and fake-xero (`--bin-dir` picks the folder).
Usage: scripts/memcheck.py [--bin-dir target/debug] [--fake PATH] [--report-only]
"""

import argparse
import hashlib
import base64
import fcntl
import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
import urllib.request

CLIENT_ID = "MEMCHECK0CLIENT0ID00000000000001"
SCOPE = "openid profile email accounting.transactions offline_access"
# The fake's one organisation (fake-xero's DEFAULT_TENANT_ID).
DEFAULT_TENANT_ID = "f4c6a0a3-2e1d-4b5c-9a8f-7e6d5c4b3a21"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PIECE = 32


def forms(name, value):
    """The byte patterns a secret can take in memory."""
    raw = value.encode()
    yield (name, "raw", raw)
    yield (name, "utf-16le", value.encode("utf-16-le"))


def pieces(value):
    """The secret's random part cut into 32-byte pieces. A buffer that held only part of a secret
    (a cipher's block buffer left on a stack, a chunk of a stream) is found by its pieces even when
    no whole copy is left. A JWT's header and claims are not random, so only its signature counts.
    """
    random_part = value.rsplit(".", 1)[-1].encode()
    return [random_part[i:i + PIECE] for i in range(0, len(random_part) - PIECE + 1, PIECE)]


class Run:
    def __init__(self, bin_dir, fake_bin, work):
        self.bin = os.path.join(bin_dir, "xero-auth")
        self.work = work
        self.secret = "memcheck-client-secret-" + os.urandom(12).hex()
        self.env = dict(os.environ)
        for key in list(self.env):
            if key.startswith("XERO_") or key == "RUST_LOG":
                del self.env[key]
        self.env.update(
            XERO_AUTH_CONFIG_DIR=os.path.join(work, "config"),
            XERO_AUTH_STATE_DIR=os.path.join(work, "state"),
            XERO_AUTH_PROFILE="memcheck-%d" % os.getpid(),
        )
        self.profile = self.env["XERO_AUTH_PROFILE"]
        token_file = os.path.join(work, "xero-access-token.json")
        self.fake = subprocess.Popen(
            [fake_bin or os.path.join(bin_dir, "fake-xero"), "--client-id", CLIENT_ID,
             "--client-secret-env", "FAKE_XERO_SECRET", "--scope", SCOPE,
             "--write-token-file", token_file],
            stdout=subprocess.PIPE, env=dict(self.env, FAKE_XERO_SECRET=self.secret), text=True)
        line = self.fake.stdout.readline()
        m = re.match(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if not m:
            raise SystemExit("the fake Xero did not start: %r" % line)
        self.base = m.group(1)
        self.env.update(
            XERO_AUTH_AUTHORIZE_URL=self.base + "/identity/connect/authorize",
            XERO_AUTH_TOKEN_URL=self.base + "/connect/token",
            XERO_AUTH_REVOCATION_URL=self.base + "/connect/revocation",
            XERO_AUTH_CONNECTIONS_URL=self.base + "/connections",
            XERO_AUTH_API_URL=self.base + "/",
        )
        self.token_file = token_file
        with open(token_file) as f:
            self.file_tokens = json.load(f)

    def issued(self):
        with urllib.request.urlopen(self.base + "/_fake/issued", timeout=10) as r:
            return json.load(r)

    def under_gdb(self, name, args, stdin_path="/dev/null", during=None, env=None,
                  terminal=False):
        """Runs xero-auth ARGS under gdb, stopped at exit_group; returns the core's bytes.

        With terminal=True gdb and the program run on a pseudo-terminal of their own (its
        controlling terminal, where prompts read from), and `during` gets a second argument: a
        function that types a line on it."""
        core = os.path.join(self.work, name + ".core")
        cmd = ["gdb", "-q", "-batch", "-nx",
               "-ex", "set pagination off",
               "-ex", "catch syscall exit_group",
               # `run` with arguments replaces the --args ones, so they go here; none of them
               # holds a character the shell that starts the program would interpret.
               "-ex", "run %s < %s" % (" ".join(args), stdin_path),
               "-ex", "gcore %s" % core,
               "-ex", "kill",
               self.bin]
        lines = []
        if terminal:
            master, slave = pty.openpty()

            def on_the_terminal():
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            proc = subprocess.Popen(cmd, env=env or self.env, stdin=slave, stdout=slave,
                                    stderr=slave, preexec_fn=on_the_terminal)
            os.close(slave)

            def reader():
                pending = ""
                while True:
                    try:
                        chunk = os.read(master, 4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    pending += chunk.decode(errors="replace").replace("\r", "")
                    *complete, pending = pending.split("\n")
                    lines.extend(line + "\n" for line in complete)
                    if pending:
                        # A prompt has no newline: seen as a line of its own until it ends.
                        lines.append(pending)
                        pending = ""

            def type_line(text):
                time.sleep(0.3)  # the prompt is printed just before echo is switched off
                os.write(master, (text + "\n").encode())
        else:
            proc = subprocess.Popen(cmd, env=env or self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)

            def reader():
                for line in proc.stdout:
                    lines.append(line)
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        if during and terminal:
            during(lines, type_line)
        elif during:
            during(lines)
        try:
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        t.join(timeout=5)
        if terminal:
            os.close(master)
        out = "".join(lines)
        if "exit_group" not in out or not os.path.exists(core):
            raise SystemExit("%s: gdb did not stop at exit_group:\n%s" % (name, out))
        status = re.search(r"_exit \(status=(?:status@entry=)?(\d+)\)", out)
        if not status or status.group(1) != "0":
            raise SystemExit("%s: xero-auth did not succeed under gdb:\n%s" % (name, out))
        with open(core, "rb") as f:
            data = f.read()
        os.remove(core)
        return data, out

    def open_stdin(self, name):
        """A FIFO this script holds open and never writes to: a stdin that neither ends nor
        sends anything (`login --no-browser` ends at once when its stdin ends)."""
        path = os.path.join(self.work, name + ".stdin")
        os.mkfifo(path, 0o600)
        # Read-write, so opening it neither blocks nor ends it; kept until this script exits.
        self.held_stdin = getattr(self, "held_stdin", []) + [os.open(path, os.O_RDWR)]
        return path

    def typed_passphrase_then_browser(self, passphrase):
        """For `login --no-browser` on a terminal: types `passphrase` at the file store's prompt,
        then plays the browser."""
        def during(lines, type_line):
            self.wait_for(lines, "Passphrase of the xero-auth file store")
            type_line(passphrase)
            self.browser(lines)
        return during

    @staticmethod
    def wait_for(lines, text):
        deadline = time.time() + 60
        while time.time() < deadline:
            if any(text in line for line in list(lines)):
                return
            time.sleep(0.05)
        raise SystemExit("no %r on the terminal:\n%s" % (text, "".join(lines)))

    def browser(self, lines):
        """Plays the browser for `login --no-browser`: follows the printed URL."""
        deadline = time.time() + 60
        url = None
        while time.time() < deadline and not url:
            for line in list(lines):
                if line.startswith(self.base + "/identity/connect/authorize?"):
                    url = line.strip()
            time.sleep(0.05)
        if not url:
            raise SystemExit("login printed no authorize URL:\n" + "".join(lines))

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(url, timeout=10)
            raise SystemExit("the authorize endpoint did not redirect")
        except urllib.error.HTTPError as e:
            location = e.headers["Location"]
        assert location.startswith("http://127.0.0.1:"), location
        for _ in range(100):
            try:
                urllib.request.urlopen(location, timeout=10).read()
                return
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.1)
        raise SystemExit("the login's redirect listener did not answer")

    def stored_set(self):
        out = subprocess.run(
            ["secret-tool", "lookup", "service", "xero-auth", "username",
             self.env["XERO_AUTH_PROFILE"] + "/token-set"],
            capture_output=True, text=True, env=self.env)
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout else None

    def cleanup(self):
        vault = getattr(self, "vault", None)
        if vault is not None:
            stop_openbao(vault)
        # The keychain profile, and the file-store one (`store move` brings it to the keychain).
        for profile in (self.profile, self.profile + "-file"):
            for account in ("token-set", "client-secret"):
                subprocess.run(["secret-tool", "clear", "service", "xero-auth", "username",
                                profile + "/" + account], env=self.env)
        self.fake.terminate()


# The child of `exec --server`: fetches one token valid 25 minutes, and writes the answer and
# the endpoint's key to the file named by its argument, for the counts.
TOKEN_CHILD = """
import json, os, sys, urllib.request
req = urllib.request.Request(os.environ["XERO_AUTH_ENDPOINT"] + "?min_valid=1500",
                             headers={"X-Xero-Auth-Key": os.environ["XERO_AUTH_ENDPOINT_KEY"]})
with urllib.request.urlopen(req, timeout=60) as r:
    body = json.load(r)
with open(sys.argv[1], "w") as f:
    json.dump({"body": body, "key": os.environ["XERO_AUTH_ENDPOINT_KEY"]}, f)
"""


# The MCP server under `mcp`: answers `initialize`, lists a tool that reads and one that writes,
# answers each call, and notes the names of the calls that reached it in the file named by its
# argument; ends when its stdin does.
MCP_SERVER = """
import json, sys
calls = open(sys.argv[1], "w")
for line in sys.stdin:
    msg = json.loads(line)
    method, mid = msg.get("method"), msg.get("id")
    if mid is None:
        continue
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "memcheck", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "list-contacts", "inputSchema": {"type": "object"}},
                            {"name": "create-contact", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call":
        calls.write(msg["params"]["name"] + "\\n")
        calls.flush()
        result = {"content": [{"type": "text", "text": "called " + msg["params"]["name"]}]}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": mid, "result": result}), flush=True)
"""

# What the MCP client sends the bridge: a session that lists the tools, calls one that writes
# (refused by --read-only) and one that reads.
MCP_CLIENT_LINES = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize",
     "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "memcheck", "version": "1"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
     "params": {"name": "create-contact", "arguments": {"name": "x"}}},
    {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
     "params": {"name": "list-contacts", "arguments": {}}},
]

# The fake's one organisation (fake_xero::DEFAULT_TENANT_ID), pinned with --tenant.
FAKE_TENANT_ID = "f4c6a0a3-2e1d-4b5c-9a8f-7e6d5c4b3a21"


def start_openbao(work):
    """A `bao server -dev` on 127.0.0.1 with a random root token, an AppRole and a policy for the
    vault-store cases, started by scripts/openbao-dev; None (said on stderr) when OpenBao cannot
    be installed, unless XERO_AUTH_REQUIRE_OPENBAO=1, where that ends the check."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openbao-dev")
    token = "memcheck-vault-token-" + os.urandom(12).hex()
    got = subprocess.run([script, "--token", token, "--approle", "memcheck",
                          "--dir", os.path.join(work, "openbao"), "--die-with", str(os.getpid())],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if got.returncode == 2:
        if os.environ.get("XERO_AUTH_REQUIRE_OPENBAO") == "1":
            raise SystemExit("OpenBao is required but could not be installed:\n" + got.stderr)
        print("memcheck: no OpenBao, the vault-store cases are skipped:\n" + got.stderr,
              file=sys.stderr)
        return None
    if got.returncode != 0:
        raise SystemExit("OpenBao did not start:\n" + got.stderr)
    return json.loads(got.stdout)


def stop_openbao(bao):
    """Stops the server scripts/openbao-dev started and waits until it is gone."""
    try:
        os.kill(bao["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(bao["pid"], 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def count(data, secrets):
    rows = []
    for name, value in secrets:
        if not value:
            continue
        for secret, form, pattern in forms(name, value):
            rows.append((secret, form, data.count(pattern)))
        cut = pieces(value)
        if cut:
            rows.append((name, "%d-byte pieces" % PIECE, sum(data.count(p) for p in cut)))
        if name == "client secret":
            basic = base64.b64encode(("%s:%s" % (CLIENT_ID, value)).encode())
            rows.append(("client secret", "base64 Basic credential", data.count(basic)))
    return rows


def count_bytes(data, secrets):
    """Like count, for secrets that are bytes (a derived key, a private key): raw and hex."""
    rows = []
    for name, value in secrets:
        rows.append((name, "raw bytes", data.count(value)))
        rows.append((name, "hex", data.count(value.hex().encode())))
    return rows


BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_bytes(text):
    """The payload of a Bech32 string (an age identity, AGE-SECRET-KEY-1...) as bytes."""
    text = text.lower()
    data = [BECH32.index(c) for c in text[text.rindex("1") + 1:-6]]
    acc, bits, out = 0, 0, bytearray()
    for v in data:
        acc, bits = (acc << 5) | v, bits + 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xff)
    return bytes(out)


def kept_identity(root):
    """The file store's key the kernel keeps for the store in ROOT (store/unlock_cache.rs), read
    from a new session keyring that links the user's persistent keyring, as a cron job would."""
    description = "xero-auth:file-store:" + hashlib.sha256(root.encode()).hexdigest()[:24]
    script = ('keyctl get_persistent @s >/dev/null && '
              'keyctl pipe "$(keyctl search @s user %s)"' % description)
    got = subprocess.run(["keyctl", "session", "-", "sh", "-c", script],
                         capture_output=True, text=True)
    if got.returncode != 0 or not got.stdout.startswith("AGE-SECRET-KEY-1"):
        raise SystemExit("the file store's key is not kept in the kernel: " + got.stderr)
    return got.stdout.strip()


def scrypt_key(path, passphrase):
    """The key scrypt derives from PASSPHRASE for the age file at PATH (age's scrypt stanza:
    salt 'age-encryption.org/v1/scrypt' + 16 bytes, N = 2^logN, r = 8, p = 1)."""
    with open(path, "rb") as f:
        lines = f.read(300).split(b"\n")
    _, _, salt, log_n = lines[1].decode().split(" ")
    unpad = lambda b64: base64.b64decode(b64 + "=" * (-len(b64) % 4))
    key = hashlib.scrypt(passphrase.encode(), salt=b"age-encryption.org/v1/scrypt" + unpad(salt),
                         n=1 << int(log_n), r=8, p=1, maxmem=1 << 30, dklen=32)
    # That it is the key: it opens the stanza's wrapped file key (ChaCha20-Poly1305, zero
    # nonce), where the cryptography package is there to check with.
    try:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    except ImportError:
        return key
    ChaCha20Poly1305(key).decrypt(bytes(12), unpad(lines[2].decode()), None)
    return key


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/debug")
    ap.add_argument("--fake", help="the fake-xero binary (default: BIN_DIR/fake-xero)")
    ap.add_argument("--report-only", action="store_true",
                    help="print the counts, exit 0 even when secrets are found")
    opts = ap.parse_args()
    if not shutil.which("gdb"):
        raise SystemExit("gdb is not installed (Debian package gdb)")
    work = tempfile.mkdtemp(prefix="xero-auth-memcheck")
    run = Run(opts.bin_dir, opts.fake, work)
    results = {}
    try:
        secret_file = os.path.join(work, "secret")
        with open(secret_file, "w") as f:
            f.write(run.secret + "\n")
        data, _ = run.under_gdb("client-set", ["client", "set", "--client-id", CLIENT_ID,
                                               "--secret-stdin"], stdin_path=secret_file)
        os.remove(secret_file)
        results["client set"] = count(data, [("client secret", run.secret)])

        ft = run.file_tokens
        data, _ = run.under_gdb("import", ["import", run.token_file])
        results["import"] = count(data, [("refresh token", ft["refresh_token"]),
                                         ("access token", ft["access_token"]),
                                         ("id token", ft["id_token"])])

        data, _ = run.under_gdb("token", ["token"])
        results["token"] = count(data, [("refresh token", ft["refresh_token"]),
                                        ("access token", ft["access_token"])])

        data, out = run.under_gdb("refresh", ["refresh"])
        new = run.issued()[-1]
        stored = run.stored_set() or {}
        if stored.get("refresh_token") != new.get("refresh_token"):
            raise SystemExit("refresh under gdb did not store the new tokens:\n" + out)
        results["refresh"] = count(data, [("client secret", run.secret),
                                          ("old refresh token", ft["refresh_token"]),
                                          ("old access token", ft["access_token"]),
                                          ("new refresh token", new["refresh_token"]),
                                          ("new access token", new["access_token"]),
                                          ("new id token", new.get("id_token"))])

        port = free_port()
        data, out = run.under_gdb(
            "login", ["login", "--no-browser", "--timeout", "60", "--scope", "openid",
                      "--scope", "profile", "--scope", "email",
                      "--redirect-uri", "http://127.0.0.1:%d/callback" % port],
            during=run.browser, stdin_path=run.open_stdin("login"))
        new = run.issued()[-1]
        stored = run.stored_set() or {}
        if stored.get("refresh_token") != new.get("refresh_token"):
            raise SystemExit("login under gdb did not store the new tokens:\n" + out)
        results["login"] = count(data, [("client secret", run.secret),
                                        ("new refresh token", new["refresh_token"]),
                                        ("new access token", new["access_token"]),
                                        ("new id token", new.get("id_token"))])

        # exec --server: the parent stays alive beside its child and refreshes for it. The
        # stored token is dated so that it has about 20 minutes left; the child asks for one
        # valid 25 minutes (min_valid=1500), which makes the parent refresh, then ends.
        fresh = run.issued()[-1]
        with open(run.token_file, "w") as f:
            json.dump(dict(fresh, token_type="Bearer"), f)
        dated = time.time() - 600
        os.utime(run.token_file, (dated, dated))
        subprocess.run([run.bin, "import", "--force", run.token_file], env=run.env, check=True,
                       stdout=subprocess.DEVNULL)
        served = os.path.join(work, "served.json")
        child = os.path.join(work, "token-child.py")
        with open(child, "w") as f:
            f.write(TOKEN_CHILD)
        data, out = run.under_gdb("exec-server", ["exec", "--server", "--", sys.executable,
                                                  child, served])
        with open(served) as f:
            got = json.load(f)
        os.remove(served)
        new = run.issued()[-1]
        if got["body"].get("access_token") != new.get("access_token"):
            raise SystemExit("exec --server under gdb did not serve the refreshed token:\n" + out)
        results["exec --server"] = count(data, [("client secret", run.secret),
                                                ("old refresh token", fresh["refresh_token"]),
                                                ("old access token", fresh["access_token"]),
                                                ("new refresh token", new["refresh_token"]),
                                                ("new access token", new["access_token"]),
                                                ("endpoint key", got["key"])])

        # mcp with its guard rails (--read-only, a deny pattern, --tenant): the bridge reads
        # every message, lists /connections with the token before it starts the server, and
        # hands the server the access token in its environment.
        current = run.issued()[-1]
        server = os.path.join(work, "mcp-server.py")
        with open(server, "w") as f:
            f.write(MCP_SERVER)
        calls = os.path.join(work, "mcp-calls.txt")
        client = os.path.join(work, "mcp-client.jsonl")
        with open(client, "w") as f:
            f.write("".join(json.dumps(m) + "\n" for m in MCP_CLIENT_LINES))
        data, out = run.under_gdb(
            "mcp-guarded",
            ["mcp", "--read-only", "--deny-tool", "update-invoice", "--tenant", FAKE_TENANT_ID,
             "--", sys.executable, server, calls],
            stdin_path=client)
        with open(calls) as f:
            reached = f.read().split()
        if reached != ["list-contacts"] or '"rule":"read-only"' not in out:
            raise SystemExit("mcp under gdb did not keep to its guard rails (calls %r):\n%s"
                             % (reached, out))
        results["mcp (guard rails)"] = count(data, [("client secret", run.secret),
                                                    ("refresh token", current["refresh_token"]),
                                                    ("access token", current["access_token"])])

        # `scopes` decodes the access token's claims; `tenants disconnect` sends the token to
        # DELETE /connections/ID. The last of this store's commands: it removes the fake's only
        # connection, which no later command needs.
        data, _ = run.under_gdb("scopes", ["scopes"])
        results["scopes"] = count(data, [("refresh token", new["refresh_token"]),
                                         ("access token", new["access_token"])])
        # `log` reads the audit log the commands above wrote (fingerprints, never a token).
        data, out = run.under_gdb("log", ["log", "--json"])
        if '"event":"token"' not in out:
            raise SystemExit("log under gdb showed no token line:\n" + out)
        results["log"] = count(data, [("client secret", run.secret),
                                      ("refresh token", new["refresh_token"]),
                                      ("access token", new["access_token"])])
        data, out = run.under_gdb("tenants-disconnect",
                                  ["tenants", "disconnect", DEFAULT_TENANT_ID, "--yes"])
        if "disconnected" not in out:
            raise SystemExit("tenants disconnect under gdb did not disconnect:\n" + out)
        results["tenants disconnect"] = count(data, [("refresh token", new["refresh_token"]),
                                                     ("access token", new["access_token"])])

        # The encrypted-file store: the same commands, and the passphrase, the key scrypt
        # derives from it and the store's key (an age identity, kept in the kernel between
        # commands) are secrets too. The store's key is only known once the first command made
        # it, so each core is counted at the end.
        passphrase = "memcheck-passphrase-" + os.urandom(12).hex()
        profile = run.env["XERO_AUTH_PROFILE"]
        data_dir = os.path.join(work, "data")
        store_root = os.path.join(data_dir, "secrets")
        run.env.update(XERO_AUTH_STORE="file", XERO_AUTH_PASSPHRASE=passphrase,
                       XERO_AUTH_FILE_WORK_FACTOR="12", XERO_AUTH_FILE_UNLOCK_TTL="600",
                       XERO_AUTH_DATA_DIR=data_dir,
                       XERO_AUTH_PROFILE=profile + "-file")
        file_cores = []  # (command, core, its own secrets)
        with open(secret_file, "w") as f:
            f.write(run.secret + "\n")
        data, _ = run.under_gdb("file-client-set", ["client", "set", "--client-id", CLIENT_ID,
                                                    "--secret-stdin"], stdin_path=secret_file)
        os.remove(secret_file)
        file_cores.append(("file: client set", data, [("client secret", run.secret)]))
        identity = kept_identity(store_root)
        derived = scrypt_key(os.path.join(store_root, ".store-identity.age"), passphrase)
        # The tokens login just stored for the keychain profile move to this one.
        fresh = run.issued()[-1]
        with open(run.token_file, "w") as f:
            json.dump(dict(fresh, token_type="Bearer"), f)
        data, _ = run.under_gdb("file-import", ["import", run.token_file])
        file_cores.append(("file: import", data, [("refresh token", fresh["refresh_token"]),
                                                  ("access token", fresh["access_token"])]))
        data, _ = run.under_gdb("file-token", ["token"])
        file_cores.append(("file: token", data, [("refresh token", fresh["refresh_token"]),
                                                 ("access token", fresh["access_token"])]))
        # The store unlocked once: no passphrase anywhere, the key from the kernel.
        unlocked = {k: v for k, v in run.env.items() if k != "XERO_AUTH_PASSPHRASE"}
        data, _ = run.under_gdb("file-token-unlocked", ["token"], env=unlocked)
        file_cores.append(("file: token, kept key", data,
                           [("refresh token", fresh["refresh_token"]),
                            ("access token", fresh["access_token"])]))
        # The key never kept: the passphrase unlocks it in this process (one scrypt run).
        data, _ = run.under_gdb("file-token-no-cache", ["token"],
                                env=dict(run.env, XERO_AUTH_FILE_UNLOCK_TTL="0"))
        file_cores.append(("file: token, no kept key", data,
                           [("refresh token", fresh["refresh_token"]),
                            ("access token", fresh["access_token"])]))
        data, out = run.under_gdb("file-refresh", ["refresh"])
        new = run.issued()[-1]
        printed = subprocess.run([run.bin, "token"], env=run.env, capture_output=True,
                                 text=True).stdout.strip()
        if printed != new.get("access_token"):
            raise SystemExit("refresh under gdb did not store the new tokens in the file "
                             "store:\n" + out)
        file_cores.append(("file: refresh", data, [("client secret", run.secret),
                                                   ("old refresh token", fresh["refresh_token"]),
                                                   ("new refresh token", new["refresh_token"]),
                                                   ("new access token", new["access_token"])]))
        data, _ = run.under_gdb("file-lock", ["lock"])
        file_cores.append(("file: lock", data, []))
        data, _ = run.under_gdb("file-unlock", ["unlock"])
        file_cores.append(("file: unlock", data, []))

        # `login --no-browser` with the passphrase typed on the terminal: the prompt comes
        # before the flow, and neither the typed passphrase nor the pasted-URL reader's input
        # may stay behind (the standard library's stdin buffer lives until exit).
        subprocess.run([run.bin, "lock"], env=run.env, check=True, capture_output=True)
        port = free_port()
        typed = {k: v for k, v in run.env.items() if k != "XERO_AUTH_PASSPHRASE"}
        data, out = run.under_gdb(
            "file-login", ["login", "--no-browser", "--timeout", "60", "--scope", "openid",
                           "--scope", "profile", "--scope", "email",
                           "--redirect-uri", "http://127.0.0.1:%d/callback" % port],
            during=run.typed_passphrase_then_browser(passphrase), env=typed, terminal=True,
            stdin_path=run.open_stdin("file-login"))
        new = run.issued()[-1]
        printed = subprocess.run([run.bin, "token"], env=run.env, capture_output=True,
                                 text=True).stdout.strip()
        if printed != new.get("access_token"):
            raise SystemExit("login under gdb did not store the new tokens in the file "
                             "store:\n" + out)
        file_cores.append(("file: login, typed", data,
                           [("client secret", run.secret),
                            ("new refresh token", new["refresh_token"]),
                            ("new access token", new["access_token"]),
                            ("new id token", new.get("id_token"))]))

        # A new passphrase, from a file: both passphrases are secrets of that command.
        new_passphrase = "memcheck-new-passphrase-" + os.urandom(12).hex()
        new_file = os.path.join(work, "new-passphrase")
        with open(new_file, "w") as f:
            f.write(new_passphrase + "\n")
        os.chmod(new_file, 0o600)
        data, _ = run.under_gdb("file-passphrase",
                                ["store", "passphrase", "--new-passphrase-file", new_file])
        os.remove(new_file)
        check = subprocess.run([run.bin, "token"], capture_output=True, text=True,
                               env=dict(run.env, XERO_AUTH_PASSPHRASE=new_passphrase,
                                        XERO_AUTH_FILE_UNLOCK_TTL="0"))
        if check.returncode != 0:
            raise SystemExit("the new passphrase does not open the store:\n" + check.stderr)
        file_cores.append(("file: passphrase", data, [("new passphrase", new_passphrase)]))

        # `store move`: the file-store profile's secrets read from the files and written to the
        # keychain in one process (config.toml names the file store, as a move requires).
        latest = run.issued()[-1]
        moving = {k: v for k, v in run.env.items() if k != "XERO_AUTH_STORE"}
        moving["XERO_AUTH_PASSPHRASE"] = new_passphrase
        subprocess.run([run.bin, "config", "set", "store", "file"], env=moving, check=True,
                       stderr=subprocess.DEVNULL)
        data, out = run.under_gdb("store-move", ["store", "move", "--to", "secret-service"],
                                  env=moving)
        moved = subprocess.run(
            ["secret-tool", "lookup", "service", "xero-auth", "username",
             moving["XERO_AUTH_PROFILE"] + "/token-set"], capture_output=True, text=True,
            env=moving).stdout
        if not moved or json.loads(moved).get("refresh_token") != latest.get("refresh_token"):
            raise SystemExit("store move under gdb did not move the tokens to the keychain:\n"
                             + out)
        file_cores.append(("store move", data, [("client secret", run.secret),
                                                ("refresh token", latest["refresh_token"]),
                                                ("access token", latest["access_token"]),
                                                ("new passphrase", new_passphrase)]))

        key_secrets = [("passphrase", passphrase), ("store key", identity)]
        key_bytes = [("store key", bech32_bytes(identity)), ("scrypt-derived key", derived)]
        for command, data, own in file_cores:
            results[command] = count(data, own + key_secrets) + count_bytes(data, key_bytes)

        # The vault store (a real OpenBao dev server on 127.0.0.1): the same commands, and the
        # Vault token -- and AppRole's secret id -- are secrets too.
        bao = start_openbao(work)
        if bao is not None:
            run.vault = bao
            vault_token = bao["token"]
            run.env.pop("XERO_AUTH_PASSPHRASE", None)
            run.env.update(XERO_AUTH_STORE="vault", XERO_AUTH_VAULT_ADDR=bao["addr"],
                           VAULT_TOKEN=vault_token, XERO_AUTH_PROFILE=profile + "-vault")
            with open(secret_file, "w") as f:
                f.write(run.secret + "\n")
            data, _ = run.under_gdb("vault-client-set", ["client", "set", "--client-id",
                                                         CLIENT_ID, "--secret-stdin"],
                                    stdin_path=secret_file)
            os.remove(secret_file)
            results["vault: client set"] = count(data, [("client secret", run.secret),
                                                        ("vault token", vault_token)])
            fresh = run.issued()[-1]
            with open(run.token_file, "w") as f:
                json.dump(dict(fresh, token_type="Bearer"), f)
            data, _ = run.under_gdb("vault-import", ["import", run.token_file])
            results["vault: import"] = count(data, [("refresh token", fresh["refresh_token"]),
                                                    ("access token", fresh["access_token"]),
                                                    ("vault token", vault_token)])
            data, _ = run.under_gdb("vault-token", ["token"])
            results["vault: token"] = count(data, [("refresh token", fresh["refresh_token"]),
                                                   ("access token", fresh["access_token"]),
                                                   ("vault token", vault_token)])
            data, out = run.under_gdb("vault-refresh", ["refresh"])
            new = run.issued()[-1]
            printed = subprocess.run([run.bin, "token"], env=run.env, capture_output=True,
                                     text=True).stdout.strip()
            if printed != new.get("access_token"):
                raise SystemExit("refresh under gdb did not store the new tokens in the vault "
                                 "store:\n" + out)
            results["vault: refresh"] = count(data, [("client secret", run.secret),
                                                     ("old refresh token", fresh["refresh_token"]),
                                                     ("new refresh token", new["refresh_token"]),
                                                     ("new access token", new["access_token"]),
                                                     ("vault token", vault_token)])
            # AppRole: the secret id signs in; the token it gets is the process's own.
            role_id, secret_id = bao["role_id"], bao["secret_id"]
            approle = {k: v for k, v in run.env.items() if k != "VAULT_TOKEN"}
            approle.update(XERO_AUTH_VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id)
            data, out = run.under_gdb("vault-approle-token", ["token"], env=approle)
            if "AppRole" in out or "error" in out.lower():
                raise SystemExit("token with AppRole under gdb failed:\n" + out)
            results["vault: token, AppRole"] = count(data, [("refresh token", new["refresh_token"]),
                                                            ("access token", new["access_token"]),
                                                            ("secret id", secret_id),
                                                            ("vault token", vault_token)])
    finally:
        run.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    found = 0
    print("%-18s %-24s %-24s %s" % ("command", "secret", "form", "occurrences"))
    for command, rows in results.items():
        for secret, form, n in rows:
            found += n
            print("%-18s %-24s %-24s %d%s" % (command, secret, form, n, "   <-- FOUND" if n else ""))
    total = sum(len(r) for r in results.values())
    print("memcheck: %d secret/form checks over %d commands, %d occurrences"
          % (total, len(results), found))
    if found and not opts.report_only:
        sys.exit(1)


if __name__ == "__main__":
    main()
