#!/usr/bin/env python3
"""A program run by `xero-auth exec --server` in the tests: it fetches tokens from the endpoint
named in its environment when the test tells it to, one command per line on stdin, and prints
one JSON line per command on stdout.

  GET [QUERY]            one fetch with the key; QUERY is appended to the URL (e.g. ?min_valid=1500)
  PAR N [QUERY]          N fetches at once (threads); prints the list of answers
  RAW METHOD PATH KEY    one request; KEY is "right", "wrong", "short" or "none"
  ASYNC [QUERY]          starts one fetch in the background and answers at once (the fetch dies
                         with the process)
  URL                    prints the endpoint's URL (not the key)
  PID                    prints this process's id
  SIGNALS                catches SIGINT/SIGTERM/SIGHUP: each ends the process with 50 + N
  EXIT CODE              ends with that status

Only the standard library, so that the tests need nothing but python3.
"""

import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

URL = os.environ["XERO_AUTH_ENDPOINT"]
KEY = os.environ["XERO_AUTH_ENDPOINT_KEY"]


def request(method, url, key):
    headers = {}
    if key is not None:
        headers["X-Xero-Auth-Key"] = key
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}


def answer(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def on_signal(number, _frame):
    answer({"signal": number})
    os._exit(50 + number)


for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    command, rest = words[0], words[1:]
    if command == "GET":
        answer(request("GET", URL + (rest[0] if rest else ""), KEY))
    elif command == "PAR":
        n, query = int(rest[0]), (rest[1] if len(rest) > 1 else "")
        results = [None] * n
        barrier = threading.Barrier(n)

        def fetch(i):
            barrier.wait()
            results[i] = request("GET", URL + query, KEY)

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answer(results)
    elif command == "ASYNC":
        query = rest[0] if rest else ""
        threading.Thread(target=request, args=("GET", URL + query, KEY), daemon=True).start()
        answer({"started": True})
    elif command == "RAW":
        method, path, which = rest
        key = {"right": KEY, "wrong": "x" * len(KEY), "short": KEY[:-1], "none": None}[which]
        answer(request(method, urllib.parse.urljoin(URL, path), key))
    elif command == "URL":
        answer({"url": URL})
    elif command == "PID":
        answer({"pid": os.getpid()})
    elif command == "SIGNALS":
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, on_signal)
        answer({"catching": True})
    elif command == "EXIT":
        sys.exit(int(rest[0]))
