"""The measurements and the plot of scripts/bench-curves (run by it, inside its private D-Bus
session with an unlocked GNOME Keyring). Usage: curves.py BIN_DIR WORK_DIR

Every command runs against the fake Xero on 127.0.0.1; nothing reaches the network.
"""

import json
import os
import platform
import re
import resource
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN, WORK = sys.argv[1], sys.argv[2]
XA = os.path.join(BIN, "xero-auth")
ROUNDS = int(os.environ.get("CURVES_ROUNDS", "15"))
STORMS = int(os.environ.get("CURVES_STORMS", "3"))
OUT = os.environ.get("CURVES_OUT", os.path.join(ROOT, "docs"))
CLIENT_ID = "CURVES0APP0CLIENT0ID00000000001"
TENANT = "f4c6a0a3-2e1d-4b5c-9a8f-7e6d5c4b3a21"  # the fake's tenant
API_PATH = "api.xro/2.0/Organisation"

PROFILE_COUNTS = [1, 10, 50, 100, 200]
TENANT_COUNTS = [1, 10, 100, 1000]
STORM_SIZES = [1, 2, 4, 8, 16, 32, 64]
CLIENT_COUNTS = [1, 2, 4, 8, 16, 32]


def log(*a):
    print("bench-curves:", *a, file=sys.stderr, flush=True)


os.makedirs(WORK, exist_ok=True)
FAKE_SECRET = "curves-client-secret-" + secrets.token_hex(8)
fake = subprocess.Popen(
    [os.path.join(BIN, "fake-xero"), "--client-id", CLIENT_ID, "--client-secret-env", "FAKE_XERO_SECRET",
     "--write-token-file", os.path.join(WORK, "tokens.json")],
    env={**os.environ, "FAKE_XERO_SECRET": FAKE_SECRET},
    stdout=open(os.path.join(WORK, "fake.out"), "w"), stderr=open(os.path.join(WORK, "fake.err"), "w"))
children = [fake]
base = None
for _ in range(200):
    m = re.search(r"^listening on (\S+)", open(os.path.join(WORK, "fake.out")).read(), re.M)
    if m:
        base = m.group(1)
        break
    time.sleep(0.05)
if not base or not base.startswith("http://127.0.0.1:"):
    sys.exit(f"bench-curves: the fake Xero did not start on 127.0.0.1 ({base})")

ENV = {k: v for k, v in os.environ.items() if not k.startswith("XERO_AUTH_")}
ENV.update(
    XERO_AUTH_AUTHORIZE_URL=f"{base}/identity/connect/authorize", XERO_AUTH_TOKEN_URL=f"{base}/connect/token",
    XERO_AUTH_REVOCATION_URL=f"{base}/connect/revocation", XERO_AUTH_CONNECTIONS_URL=f"{base}/connections",
    XERO_AUTH_API_URL=f"{base}/", XERO_AUTH_CONFIG_DIR=os.path.join(WORK, "config"),
    XERO_AUTH_STATE_DIR=os.path.join(WORK, "state"))


def env(**extra):
    e = dict(ENV)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def xa(args, e=None, stdin=None):
    r = subprocess.run([XA, *args], env=e or ENV, capture_output=True, text=True, input=stdin)
    if r.returncode != 0:
        sys.exit(f"bench-curves: `xero-auth {' '.join(args)}` failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def fake_post(path):
    urllib.request.urlopen(urllib.request.Request(base + path, method="POST"), timeout=10).read()


def refreshes():
    return json.load(urllib.request.urlopen(base + "/_fake/counts", timeout=10))["refresh"]


def aged_tokens():
    """The fake's first token file with an mtime a day old: imported, its access token has
    expired, and its refresh token (spent or not) is honoured by the fake's 30-minute retry."""
    path = os.path.join(WORK, "expired.json")
    with open(path, "w") as f:
        f.write(open(os.path.join(WORK, "tokens.json")).read())
    day_ago = time.time() - 86_400
    os.utime(path, (day_ago, day_ago))
    return path


def setup_profile(name, e):
    xa(["--profile", name, "client", "set", "--client-id", CLIENT_ID], env(**{**e, "XERO_CLIENT_SECRET": FAKE_SECRET}))
    xa(["--profile", name, "import", "--force", os.path.join(WORK, "tokens.json")], e)


FAILED = []


def cpu_of_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_interleaved(commands):
    """Median wall time and median CPU time (user + system, s) of each command, measured in
    ROUNDS rounds that each run every command once (after one warm-up each), so that load
    changes hit all points alike. The CPU time is the process's own: what it costs, whatever
    else the machine is doing; the wall time also holds the keyring's and the fake's work."""
    times = {name: [] for name in commands}
    cpu = {name: [] for name in commands}
    for name, (argv, e) in commands.items():
        subprocess.run(argv, env=e, check=True, capture_output=True)
    for _ in range(ROUNDS):
        for name, (argv, e) in commands.items():
            for _ in range(3):
                c0, t0 = cpu_of_children(), time.perf_counter()
                r = subprocess.run(argv, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if r.returncode == 0:
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(cpu_of_children() - c0)
                    break
                # Counted and said: on a loaded machine the keyring can miss the store timeout.
                FAILED.append(f"{name}: exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
                log("a run failed (retried):", FAILED[-1])
            else:
                sys.exit(f"bench-curves: `{name}` failed three times in a row")
    return ({name: statistics.median(t) for name, t in times.items()},
            {name: statistics.median(t) for name, t in cpu.items()})


fake_post("/_fake/minute_limit?limit=1000000&retry_after=1")
results = {}

# ---------------------------------------------------------------- C1: profiles in config.toml
log("C1: token and api against the number of profiles in config.toml")
setup_profile("main", ENV)
xa(["--profile", "main", "tenants", "use", TENANT])
cfg_file = os.path.join(ENV["XERO_AUTH_CONFIG_DIR"], "config.toml")
with open(cfg_file, "a") as f:
    f.write("\n[profiles.main.limits]\nper_minute = 1000000\n")
xa(["--profile", "main", "api", API_PATH])
main_cfg = open(cfg_file).read()
commands = {}
for n in PROFILE_COUNTS:
    folder = os.path.join(WORK, f"config-{n}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    # The others are copies of `main` under other names: the same keys, as a user with many
    # organisations (or apps) would have.
    others = [main_cfg.replace("[profiles.main", f"[profiles.org-{i:03d}") for i in range(n - 1)]
    path = os.path.join(folder, "config.toml")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(others[: len(others) // 2] + [main_cfg] + others[len(others) // 2:]))
    e = env(XERO_AUTH_CONFIG_DIR=folder)
    commands[f"token {n}"] = ([XA, "--profile", "main", "token"], e)
    commands[f"api {n}"] = ([XA, "--profile", "main", "api", API_PATH], e)
xa(["--profile", "main", "api", API_PATH], commands[f"api {PROFILE_COUNTS[-1]}"][1])
med, cpu = timed_interleaved(commands)
results["profiles"] = {
    "x": PROFILE_COUNTS,
    "token_ms": [med[f"token {n}"] * 1000 for n in PROFILE_COUNTS],
    "api_ms": [med[f"api {n}"] * 1000 for n in PROFILE_COUNTS],
    "token_cpu_ms": [cpu[f"token {n}"] * 1000 for n in PROFILE_COUNTS],
    "api_cpu_ms": [cpu[f"api {n}"] * 1000 for n in PROFILE_COUNTS],
    "config_bytes": [os.path.getsize(os.path.join(WORK, f"config-{n}", "config.toml")) for n in PROFILE_COUNTS],
}

# ---------------------------------------------------------------- C2: tenants in the ledger
log("C2: token and api against the number of tenants in the rate-limit ledger")
commands = {}
ledger_sizes = []
for n in TENANT_COUNTS:
    state = os.path.join(WORK, f"state-{n}")
    e = env(XERO_AUTH_STATE_DIR=state)
    xa(["--profile", "main", "api", API_PATH], e)  # makes the folders and the ledger
    # Every other tenant as the ledger keeps it after calls in the last two days: the budgets
    # Xero's last answer reported. Written into whatever layout this build keeps.
    ledgers = []
    for folder, _, files in os.walk(os.path.join(state, "limits")):
        ledgers += [os.path.join(folder, f) for f in files if f == "ledger.json"]
    app_ledger = min(ledgers, key=len)
    now = int(time.time())
    others = {f"{i:08x}-0000-4000-8000-{i:012x}": {"sent": [], "seen": {"at": now, "minute": 59, "day": 4990, "app_minute": 9990}}
              for i in range(1, n)}
    app_dir = os.path.dirname(app_ledger)
    ledger = json.load(open(app_ledger))
    if "tenants" in ledger:  # one file for the app and all its tenants
        ledger["tenants"].update(others)
        with open(app_ledger, "w") as f:
            json.dump(ledger, f)
    else:  # one file per tenant, in the tenant's folder
        for tenant, line in others.items():
            os.makedirs(os.path.join(app_dir, tenant), mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(app_dir, tenant, "ledger.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"window_ms": ledger.get("window_ms", 60000), **line}, f)
    xa(["--profile", "main", "api", API_PATH], e)
    ledger_sizes.append(sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(app_dir) for f in fs if f == "ledger.json"))
    commands[f"token {n}"] = ([XA, "--profile", "main", "token"], e)
    commands[f"api {n}"] = ([XA, "--profile", "main", "api", API_PATH], e)
med, cpu = timed_interleaved(commands)
results["tenants"] = {
    "x": TENANT_COUNTS,
    "token_ms": [med[f"token {n}"] * 1000 for n in TENANT_COUNTS],
    "api_ms": [med[f"api {n}"] * 1000 for n in TENANT_COUNTS],
    "token_cpu_ms": [cpu[f"token {n}"] * 1000 for n in TENANT_COUNTS],
    "api_cpu_ms": [cpu[f"api {n}"] * 1000 for n in TENANT_COUNTS],
    "ledger_bytes": ledger_sizes,
}

# ---------------------------------------------------------------- C3: refresh storms
log("C3: refresh storms against the number of processes")
bao = json.loads(subprocess.run([os.path.join(ROOT, "scripts", "openbao-dev"), "--dir", os.path.join(WORK, "openbao"),
                                 "--die-with", str(os.getpid())], capture_output=True, text=True, check=True).stdout)
passphrase = "curves-passphrase-" + secrets.token_hex(8)
stores = {
    "keychain": env(),
    "file store (unlocked)": env(XERO_AUTH_STORE="file", XERO_AUTH_DATA_DIR=os.path.join(WORK, "data"),
                                 XERO_AUTH_FILE_UNLOCK_TTL=900),
    "vault store (3 machines)": env(XERO_AUTH_STORE="vault", XERO_AUTH_VAULT_ADDR=bao["addr"], VAULT_TOKEN=bao["token"]),
}
storms = {}
for store, e in stores.items():
    setup_env = dict(e, XERO_AUTH_PASSPHRASE=passphrase, XERO_AUTH_FILE_WORK_FACTOR="14")
    setup_profile("storm", setup_env)
    walls, counts = [], []
    for n in STORM_SIZES:
        best = []
        for _ in range(STORMS):
            xa(["--profile", "storm", "import", "--force", aged_tokens()], setup_env)
            before = refreshes()
            procs = []
            t0 = time.perf_counter()
            for i in range(n):
                pe = e
                if store.startswith("vault"):  # three machines: three state folders
                    pe = dict(e, XERO_AUTH_STATE_DIR=os.path.join(WORK, f"machine-{i % 3}"))
                procs.append(subprocess.Popen([XA, "--profile", "storm", "token"], env=pe,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            outs = [p.communicate() for p in procs]
            wall = time.perf_counter() - t0
            if any(p.returncode != 0 for p in procs) or len({o for o, _ in outs}) != 1:
                errs = "; ".join(err.strip() for _, err in outs if err.strip())
                sys.exit(f"bench-curves: a {store} storm of {n} failed or printed different tokens: {errs}")
            best.append(wall)
            counts.append(refreshes() - before)
        walls.append(statistics.median(best) * 1000)
    storms[store] = {"wall_ms": walls, "refreshes": sum(counts), "storms": len(counts)}
subprocess.run(["kill", str(bao["pid"])], check=False)
results["storms"] = {"x": STORM_SIZES, "stores": storms}

# ---------------------------------------------------------------- C4: exec --server
log("C4: exec --server fetches per second against concurrent clients")
client = os.path.join(WORK, "c4-client.py")
with open(client, "w") as f:
    f.write('''
import http.client, json, multiprocessing, os, sys, time, urllib.parse
SECONDS = 2.0
def worker(args):
    start, = args
    u = urllib.parse.urlsplit(os.environ["XERO_AUTH_ENDPOINT"])
    headers = {"X-Xero-Auth-Key": os.environ["XERO_AUTH_ENDPOINT_KEY"]}
    while time.time() < start: time.sleep(0.001)
    n = 0
    while time.time() < start + SECONDS:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request("GET", u.path, headers=headers)
        r = conn.getresponse(); body = r.read(); conn.close()
        assert r.status == 200 and b"access_token" in body, r.status
        n += 1
    return n
out = {}
for k in map(int, sys.argv[1:]):
    with multiprocessing.Pool(k) as pool:
        start = time.time() + 0.3
        out[k] = sum(pool.map(worker, [(start,)] * k)) / SECONDS
print(json.dumps(out))
''')
fetched = json.loads(xa(["--profile", "main", "exec", "--server", "--", sys.executable, client, *map(str, CLIENT_COUNTS)]))
results["server"] = {"x": CLIENT_COUNTS, "fetches_per_s": [fetched[str(k)] for k in CLIENT_COUNTS]}
fake.terminate()

# ---------------------------------------------------------------- the report
load = open("/proc/loadavg").read().split()[:3]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
results["machine"] = f"{os.cpu_count()} cores, Linux {platform.release()}, load average {' '.join(load)} at the end"
results["commit"] = commit
before = json.load(open(os.environ["CURVES_BEFORE"])) if os.environ.get("CURVES_BEFORE") else None


def pct(values):
    return f"{(values[-1] / values[0] - 1) * 100:+.0f}%"


def row(label, xs, values, unit, fmt="{:.1f}"):
    return f"| {label} | " + " | ".join(fmt.format(v) + unit for v in values) + f" | {pct(values)} |"


def table(title, xs, rows):
    head = f"| {title} | " + " | ".join(str(x) for x in xs) + " | last vs first |"
    return "\n".join([head, "|---|" + "---:|" * (len(xs) + 1)] + rows)


def curve_rows(r, label):
    out = []
    for cmd in ("token", "api"):
        out.append(row(f"`{cmd}`{label}: wall", r["x"], r[f"{cmd}_ms"], " ms"))
        if f"{cmd}_cpu_ms" in r:
            out.append(row(f"`{cmd}`{label}: CPU", r["x"], r[f"{cmd}_cpu_ms"], " ms", "{:.2f}"))
    return out


md = [f"Commit {commit}; {results['machine']}; medians of {ROUNDS} interleaved runs per point "
      f"(C3: median of {STORMS} storms). The machine has 2 cores shared with other work: wall "
      "times move by 10–20 % with its load; the CPU time (user + system of the xero-auth "
      "process itself) is what to read for C1 and C2.", ""]
for key, title, extra, unit in [("profiles", "profiles in config.toml", "config_bytes", "config.toml"),
                                ("tenants", "tenants in the ledger", "ledger_bytes", "ledger")]:
    r = results[key]
    rows = []
    if before:
        rows += curve_rows(before[key], " before")
    rows += curve_rows(r, " after" if before else "")
    rows.append(f"| {unit} size | " + " | ".join(f"{b / 1024:.1f} KiB" for b in r[extra]) + " | |")
    md += [table(title, r["x"], rows), ""]
s = results["storms"]
rows = []
for store, v in s["stores"].items():
    rows.append(row(f"{store}: wall", s["x"], v["wall_ms"], " ms", "{:.0f}"))
    rows.append(row(f"{store}: wall ÷ processes", s["x"], [w / n for w, n in zip(v["wall_ms"], s["x"])], " ms"))
md += [table("storm: processes at once", s["x"], rows), "",
       "Refreshes: " + "; ".join(f"{store} {v['refreshes']} in {v['storms']} storms" for store, v in s["stores"].items())
       + " (one per storm is right).", ""]
c = results["server"]
if FAILED:
    md += [f"{len(FAILED)} timed run(s) failed and were run again: " + "; ".join(FAILED), ""]
md += [table("`exec --server`: concurrent clients", c["x"], [row("fetches/s", c["x"], c["fetches_per_s"], "", "{:.0f}")])]
text = "\n".join(md)
print(text)

if OUT == "-":
    sys.exit(0)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(2, 2, figsize=(11, 8))
for a, key, xlabel in [(ax[0][0], "profiles", "profiles in config.toml"), (ax[0][1], "tenants", "tenants in the rate-limit ledger")]:
    for data, style, tag in ([(before, "--", " (before)")] if before else []) + [(results, "-", "")]:
        r = data[key]
        for cmd, color in (("token", "tab:blue"), ("api", "tab:orange")):
            if f"{cmd}_cpu_ms" in r:
                a.plot(r["x"], r[f"{cmd}_cpu_ms"], style + "o", color=color, label=f"{cmd}, CPU{tag}")
            else:
                a.plot(r["x"], r[f"{cmd}_ms"], style + "o", color=color, alpha=0.5, label=f"{cmd}, wall{tag}")
    a.set_xscale("log")
    a.set_xlabel(xlabel)
    a.set_ylabel("median CPU time of the process (ms)")
    a.set_ylim(bottom=0)
    a.legend()
    a.grid(alpha=0.3)
a = ax[1][0]
for store, v in s["stores"].items():
    a.plot(s["x"], [w / n for w, n in zip(v["wall_ms"], s["x"])], "-o", label=store)
a.set_xscale("log", base=2)
a.set_ylim(bottom=0)
a.set_xlabel("processes at once (expired access token, 1 refresh)")
a.set_ylabel("storm wall time ÷ processes (ms)")
a.legend()
a.grid(alpha=0.3)
a = ax[1][1]
a.plot(c["x"], c["fetches_per_s"], "-o", color="tab:green")
a.set_xscale("log", base=2)
a.set_xlabel("concurrent clients")
a.set_ylabel("exec --server fetches/s")
a.set_ylim(bottom=0)
a.grid(alpha=0.3)
fig.suptitle(f"xero-auth: how cost grows with the work (commit {commit}, 2 shared cores)")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "curves.png"), dpi=80)
with open(os.path.join(OUT, "curves.json"), "w") as f:
    json.dump(results, f, indent=1)
    f.write("\n")
page = os.path.join(OUT, "performance.md")
begin, end = "<!-- curves:begin (generated by scripts/bench-curves) -->", "<!-- curves:end -->"
doc = open(page).read()
if begin not in doc or end not in doc:
    doc = doc.rstrip("\n") + "\n\n" + begin + "\n" + end + "\n"
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
open(page, "w").write(head + begin + "\n" + text + "\n" + end + tail)
log(f"wrote {OUT}/curves.png, curves.json and the tables in performance.md")
