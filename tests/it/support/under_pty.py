#!/usr/bin/env python3
"""Runs a command on a terminal of its own (a new pseudo-terminal, its controlling terminal),
waits until it prints "ready", types Ctrl-C, and copies what it printed to stdout once it ends.
Exits with the command's status (128 + N when signal N ended it).

Usage: under_pty.py CMD [ARG...]
"""

import os
import pty
import sys
import time

pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])

output = b""
typed = False
deadline = time.time() + 60
while time.time() < deadline:
    try:
        chunk = os.read(fd, 4096)
    except OSError:  # EIO: the terminal's other side is closed
        break
    if not chunk:
        break
    output += chunk
    if not typed and b"ready" in output:
        os.write(fd, b"\x03")
        typed = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(output.decode(errors="replace"))
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
