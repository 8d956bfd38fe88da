//! What other processes can see of a running xero-auth: its command line and its environment
//! (`/proc/PID/cmdline`, `/proc/PID/environ`) hold no secret — except `XERO_ACCESS_TOKEN` in the
//! environment of `exec`'s command, which is what `exec` is for.

use crate::support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fake_xero::DEFAULT_TENANT_ID;
use support::*;

/// Reads `/proc/PID/<what>`; `None` when the process is gone or the kernel refuses (a
/// non-dumpable process's files are readable by root only, which is itself the protection).
fn proc_file(pid: u32, what: &str) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/{what}")).ok()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn finish(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When the kernel refuses to show the files, only root could read them: nothing to search.
fn can_read(pid: u32) -> bool {
    let readable = proc_file(pid, "environ").is_some();
    if !readable {
        eprintln!(
            "note: /proc/{pid}/environ is not readable by this user (the process is not dumpable)"
        );
    }
    readable
}

#[test]
fn a_running_api_call_shows_no_secret_in_cmdline_or_environ() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = imported_profile(&fake, "proc-api", Duration::from_secs(30));
    // Hold the request open so the process can be looked at while it holds the tokens.
    fake.push_fault(Target::Api, Fault::Delay(Duration::from_secs(2)));

    let child = env
        .std_cmd(&[
            "api",
            "--tenant",
            DEFAULT_TENANT_ID,
            "api.xro/2.0/Organisation",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_until("the API request", || fake.count(Counter::Api) == 1);

    let cmdline = proc_file(pid, "cmdline").expect("the process is running");
    if can_read(pid) {
        let environ = proc_file(pid, "environ").unwrap();
        for secret in [
            CLIENT_SECRET,
            &tokens.access_token,
            &tokens.refresh_token,
            &basic_credential(),
        ] {
            assert!(
                !contains(&cmdline, secret),
                "a secret is in /proc/PID/cmdline"
            );
            assert!(
                !contains(&environ, secret),
                "a secret is in /proc/PID/environ"
            );
        }
    }
    finish(child);
}

#[test]
fn exec_child_sees_the_access_token_and_nothing_else_secret() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, tokens) = ready_profile(&fake, "proc-exec", Duration::from_secs(30));

    let child = env
        .std_cmd(&["exec", "--", "sleep", "3"])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // On Unix `exec` replaces xero-auth with the command: same pid, new program.
    wait_until("the command to start", || {
        proc_file(pid, "cmdline").is_some_and(|c| c.starts_with(b"sleep\0"))
    });

    let cmdline = proc_file(pid, "cmdline").unwrap();
    let environ = proc_file(pid, "environ").expect("the command's environment is readable");
    assert!(contains(
        &environ,
        &format!("XERO_ACCESS_TOKEN={}", tokens.access_token)
    ));
    assert!(contains(
        &environ,
        &format!("XERO_TENANT_ID={DEFAULT_TENANT_ID}")
    ));
    for secret in [CLIENT_SECRET, &tokens.refresh_token, &basic_credential()] {
        assert!(
            !contains(&cmdline, secret),
            "a secret is in the command's cmdline"
        );
        assert!(
            !contains(&environ, secret),
            "a secret is in the command's environment"
        );
    }
    assert!(!contains(&cmdline, &tokens.access_token));
    finish(child);
}

/// A secret given through XERO_CLIENT_SECRET is wiped from the process's environment block
/// once it is in the keychain: a process that stays alive afterwards no longer shows it.
#[cfg(feature = "failpoints")]
#[test]
fn client_secret_from_the_environment_is_wiped_from_environ() {
    require_keychain!();
    let fake = FakeXero::start();
    let env = TestEnv::new(&fake, "proc-client-env");
    let child = env
        .std_cmd(&["client", "set", "--client-id", CLIENT_ID])
        .env("XERO_CLIENT_SECRET", CLIENT_SECRET)
        .env("FAILPOINTS", "client-secret-stored=sleep(3000)")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_until("the secret to be stored", || {
        env.secret_tool_lookup(&format!("{}/client-secret", env.profile))
            .is_some()
    });
    let cmdline = proc_file(pid, "cmdline").expect("the process is still running");
    assert!(!contains(&cmdline, CLIENT_SECRET));
    if can_read(pid) {
        let environ = proc_file(pid, "environ").unwrap();
        assert!(
            contains(&environ, "XERO_CLIENT_SECRET="),
            "the variable itself is still listed"
        );
        assert!(
            !contains(&environ, CLIENT_SECRET),
            "the secret's value was wiped in place"
        );
    }
    finish(child);
}

/// The soft and hard core-size limits in a `/proc/PID/limits` text.
fn core_limits(limits: &str) -> (libc::rlim_t, libc::rlim_t) {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core size line");
    let value = |v: &str| match v {
        "unlimited" => libc::RLIM_INFINITY,
        n => n.parse().unwrap(),
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    (value(fields[4]), value(fields[5]))
}

/// `cmd` as a caller with these core-size limits runs it.
fn with_core_limits(
    mut cmd: std::process::Command,
    soft: libc::rlim_t,
    hard: libc::rlim_t,
) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let wanted = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &wanted) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// xero-auth refuses core dumps for itself (soft limit 0) but gives `exec`'s command the
/// caller's limits back: it used to set the hard limit to 0 too, which the command inherited and
/// could never raise again.
#[test]
fn exec_gives_the_command_the_callers_core_limits_and_keeps_none_for_itself() {
    require_keychain!();
    let fake = FakeXero::start();
    let (env, _) = ready_profile(&fake, "proc-core", Duration::from_secs(30));
    let mut caller = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut caller) },
        0
    );
    if caller.rlim_max == 0 {
        eprintln!("skipped: this test's own hard core-size limit is 0; nothing to give back");
        return;
    }
    // The caller: a soft limit of its own (1 MiB), its hard limit as it is.
    let hard = caller.rlim_max;
    let soft = hard.min(1 << 20);

    let cmd = with_core_limits(
        env.std_cmd(&["exec", "--", "cat", "/proc/self/limits"]),
        soft,
        hard,
    );
    let out = assert_cmd::Command::from_std(cmd)
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(
        core_limits(&String::from_utf8_lossy(&out.stdout)),
        (soft, hard),
        "the command runs with the caller's limits"
    );

    // While xero-auth itself runs (an API call held open), its soft limit is 0.
    fake.push_fault(Target::Api, Fault::Delay(Duration::from_secs(2)));
    let mut cmd = with_core_limits(
        env.std_cmd(&["api", "api.xro/2.0/Organisation"]),
        soft,
        hard,
    );
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_until("the API request", || fake.count(Counter::Api) == 1);
    let limits = String::from_utf8(proc_file(pid, "limits").expect("readable")).unwrap();
    assert_eq!(core_limits(&limits), (0, hard), "no core dump of xero-auth");
    finish(child);
}
