//! A long-lived command driven line by line, for `exec --server` and `mcp`: the test writes its
//! stdin, reads its stdout one JSON line at a time, and gets its stderr at the end.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::processes::{kill_and_fail, wait_or_fail};

pub struct Driven {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    err_lines: mpsc::Receiver<String>,
}

impl Driven {
    /// Spawns `cmd` with stdin, stdout and stderr piped.
    pub fn spawn(mut cmd: Command) -> Driven {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // Stderr is collected whole for the end, and line by line for `wait_for_stderr`.
        let stderr = child.stderr.take().unwrap();
        let (err_tx, err_lines) = mpsc::channel();
        let stderr = Some(std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                let _ = err_tx.send(String::from_utf8_lossy(&line).into_owned());
                bytes.append(&mut line);
            }
            bytes
        }));
        Driven {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            err_lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line (a newline is added).
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("the command reads its stdin");
    }

    /// Writes a JSON value as one line.
    pub fn send_json(&mut self, value: &Value) {
        self.send(&serde_json::to_string(value).unwrap());
    }

    /// The next stdout line as JSON, if one comes within `within`.
    pub fn try_recv(&mut self, within: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(within).ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
    }

    /// The next stdout line as JSON; fails the test (with stderr) when none comes in time.
    pub fn recv(&mut self, within: Duration) -> Value {
        match self.try_recv(within) {
            Some(v) => v,
            None => kill_and_fail(
                &mut self.child,
                &mut self.stderr,
                &format!("no line on stdout within {within:?}"),
            ),
        }
    }

    /// Waits until the command prints a line holding `needle` on stderr; fails the test after
    /// `within`.
    pub fn wait_for_stderr(&mut self, needle: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.err_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => kill_and_fail(
                    &mut self.child,
                    &mut self.stderr,
                    &format!("no '{needle}' on stderr within {within:?}"),
                ),
            }
        }
    }

    /// Closes the command's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the command to end (killing it and failing after `within`); returns its
    /// status, what was left on stdout, and its stderr.
    pub fn finish(mut self, within: Duration) -> (ExitStatus, Vec<String>, String) {
        self.stdin.take();
        let status = wait_or_fail(&mut self.child, within, &mut self.stderr);
        let stderr = self.stderr.take().unwrap().join().unwrap_or_default();
        let rest = self.lines.try_iter().collect();
        (status, rest, String::from_utf8_lossy(&stderr).into_owned())
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The process ids whose parent is `pid` (Linux: /proc/*/stat).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces and parentheses, so read after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// `/proc/PID/environ` of a process, if readable.
pub fn environ_of(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// Whether `haystack` holds `needle`.
pub fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
