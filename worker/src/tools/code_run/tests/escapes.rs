//! Running code, and each escape an attacker would try, on both backends.

use pretty_assertions::assert_eq;

use super::*;

async fn python_runs_with_stdin_stderr_and_exit_code(backend: Backend) {
    let mut req = py("import sys\nprint(sys.version_info[:2], input())\n\
                      print('oops', file=sys.stderr)\nsys.exit(3)");
    req.stdin = "hello\n".into();
    let out = run(&backend, req).await;
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.exit_code),
        ("(3, 11) hello\n", "oops\n", Some(3))
    );
    assert!(
        !out.timed_out && !out.oom_killed && !out.truncated,
        "{out:?}"
    );
}
both!(
    python_runs,
    20_000,
    python_runs_with_stdin_stderr_and_exit_code
);

async fn node_runs_with_stdin_stderr_and_exit_code(backend: Backend) {
    let mut req = request(
        Language::Javascript,
        "const input = require('fs').readFileSync(0, 'utf8');\n\
         console.log(process.version.split('.')[0], input.trim());\n\
         console.error('oops'); process.exitCode = 4;",
    );
    req.stdin = "hello".into();
    let out = run(&backend, req).await;
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.exit_code),
        ("v20 hello\n", "oops\n", Some(4))
    );
    let thrown = run(
        &backend,
        request(Language::Javascript, "throw new Error('boom')"),
    )
    .await;
    assert_eq!(thrown.exit_code, Some(1));
    assert!(thrown.stderr.contains("Error: boom"), "{thrown:?}");
}
both!(node_runs, 20_000, node_runs_with_stdin_stderr_and_exit_code);

/// The host listens on loopback; the sandbox can reach neither it nor any resolver, and has no
/// interface but its own loopback.
async fn network_is_unreachable(backend: Backend) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\n\
         def attempt(f):\n    try:\n        f(); return 'open'\n    except OSError as e: return 'refused'\n\
         print(attempt(lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2)))\n\
         print(attempt(lambda: socket.getaddrinfo('example.com', 80)))\n\
         print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))"
    );
    let out = run(&backend, py(&code)).await;
    assert_eq!(out.stdout, "refused\nrefused\n['lo']\n", "{out:?}");
}
both!(network, 20_000, network_is_unreachable);

async fn a_512_mb_allocation_is_reported_oom_killed(backend: Backend) {
    let out = run(
        &backend,
        py("b = bytearray(512 * 1024 * 1024)\nprint('survived')"),
    )
    .await;
    assert!(out.oom_killed, "{out:?}");
    assert_eq!(out.stdout, "");
    assert_ne!(out.exit_code, Some(0));
    let node = "const kept = []; for (;;) kept.push(Buffer.alloc(1 << 20, 1));";
    let out = run(&backend, request(Language::Javascript, node)).await;
    assert!(out.oom_killed && !out.timed_out, "{out:?}");
}
both!(oom, 20_000, a_512_mb_allocation_is_reported_oom_killed);

/// Forks until the kernel says no: the count stops under the pids limit, and every child is gone
/// with the run.
async fn a_fork_bomb_is_contained(backend: Backend) {
    let mark = marker();
    let code = format!(
        "import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n\
         \x20           try:\n                os.execv('/bin/sh', ['sh', '-c', 'sleep 60; : {mark}'])\n\
         \x20           finally:\n                os._exit(1)\n\
         \x20       n += 1\nexcept OSError:\n    print('stopped at', n)"
    );
    let out = backend.run(&py(&code)).await.unwrap();
    let n: u32 = out
        .stdout
        .trim()
        .strip_prefix("stopped at ")
        .unwrap_or_else(|| panic!("{out:?}"))
        .parse()
        .unwrap();
    assert!(n < 64, "{n} children");
    assert_nothing_left(&backend, Some(&mark)).await;
}
both!(fork_bomb, 20_000, a_fork_bomb_is_contained);

async fn an_infinite_loop_is_killed_at_the_timeout(backend: Backend) {
    let started = Instant::now();
    let code = "print('started', flush=True)\nwhile True:\n    pass";
    let out = run(&backend, py(code)).await;
    assert!(out.timed_out, "{out:?}");
    // Output from before the timeout is kept.
    assert_eq!(out.stdout, "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}
both!(
    infinite_loop,
    1_500,
    an_infinite_loop_is_killed_at_the_timeout
);

/// A child in its own session that ignores SIGTERM is still gone after the timeout.
async fn a_child_ignoring_sigterm_is_gone(backend: Backend) {
    let mark = marker();
    let code = format!(
        "import subprocess, sys, time\n\
         subprocess.Popen([sys.executable, '-c', 'import os, signal, time; os.setsid(); \
         signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60) # {mark}'], \
         start_new_session=True)\ntime.sleep(60)"
    );
    let out = backend.run(&py(&code)).await.unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_nothing_left(&backend, Some(&mark)).await;
}
both!(sigterm_child, 1_500, a_child_ignoring_sigterm_is_gone);

async fn an_output_flood_is_truncated(backend: Backend) {
    let cap = 64 * 1024;
    let out = run(
        &backend,
        py("import sys\nprint('x' * 200_000)\nprint('e' * 100, file=sys.stderr)"),
    )
    .await;
    assert!(
        out.truncated && out.exit_code == Some(0),
        "{:?}",
        (out.truncated, out.exit_code)
    );
    assert_eq!((out.stdout.len(), out.stderr.len()), (cap, 101));
    // An endless flood is stopped long before the timeout.
    let started = Instant::now();
    let endless = run(&backend, py("while True:\n    print('y' * 4096)")).await;
    assert!(
        endless.truncated && !endless.timed_out,
        "{:?}",
        endless.exit_code
    );
    assert_eq!(endless.stdout.len(), cap);
    assert!(started.elapsed() < Duration::from_secs(10));
}
both!(output_flood, 20_000, an_output_flood_is_truncated);

async fn only_tmp_is_writable(backend: Backend) {
    let code = "import os\n\
                def attempt(path):\n    try:\n        open(path, 'w').write('x'); return 'written'\n\
                \x20   except OSError: return 'refused'\n\
                print([attempt(p) for p in ['/etc/x', '/usr/x', '/x', '/proc/x']])\n\
                print(attempt('/tmp/x'))";
    let out = run(&backend, py(code)).await;
    assert_eq!(
        out.stdout,
        "['refused', 'refused', 'refused', 'refused']\nwritten\n"
    );
}
both!(read_only_root, 20_000, only_tmp_is_writable);

/// Nothing of the worker's environment (ANTHROPIC_API_KEY, DATABASE_URL, ...) is visible: the
/// sandbox sees only the few variables it is given.
async fn the_environment_is_empty(backend: Backend) {
    let out = run(&backend, py("import os\nprint(sorted(os.environ))")).await;
    let names: Vec<String> = serde_json::from_str(&out.stdout.replace('\'', "\"")).unwrap();
    for name in &names {
        assert!(
            ["PATH", "HOME", "LANG", "HOSTNAME", "PWD"].contains(&name.as_str()),
            "{names:?}"
        );
    }
    let node = run(&backend, request(Language::Javascript, "console.log(Object.keys(process.env).filter(k => !['PATH','HOME','LANG','HOSTNAME','PWD'].includes(k)).length)")).await;
    assert_eq!(node.stdout, "0\n");
}
both!(environment, 20_000, the_environment_is_empty);

/// io_uring_setup and unshare(CLONE_NEWUSER) both fail inside the sandbox.
async fn io_uring_and_user_namespaces_are_refused(backend: Backend) {
    let code = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
                params = ctypes.create_string_buffer(120)\n\
                print(libc.syscall(425, 4, params), libc.unshare(0x10000000))";
    let out = run(&backend, py(code)).await;
    assert_eq!(out.stdout, "-1 -1\n", "{out:?}");
}
both!(
    io_uring_userns,
    20_000,
    io_uring_and_user_namespaces_are_refused
);

/// Besides the size-limited `/tmp`, no filesystem takes writes: `/dev` is read-only and
/// `/dev/shm` is read-only (process) or a 64 MB tmpfs counted in the run's memory (Docker). Each
/// file stays under the 8 MB file-size limit, so only the filesystem can stop the writes.
async fn dev_and_shm_take_no_unbounded_writes(backend: Backend) {
    let code = "import os\n\
        def fill(d):\n\
        \x20   mb = 0\n\
        \x20   try:\n\
        \x20       for i in range(25):\n\
        \x20           with open(f'{d}/f{i}', 'wb') as f:\n\
        \x20               for _ in range(4):\n\
        \x20                   f.write(b'x' * (1 << 20)); f.flush(); mb += 1\n\
        \x20   except OSError:\n\
        \x20       pass\n\
        \x20   return mb\n\
        print(fill('/dev'), fill('/dev/shm'))";
    let out = run(&backend, py(code)).await;
    let written: Vec<u64> = out
        .stdout
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(written.len(), 2, "{out:?}");
    assert_eq!(written[0], 0, "/dev took writes: {out:?}");
    assert!(written[1] <= 64, "/dev/shm took {} MB: {out:?}", written[1]);
}
both!(
    dev_is_read_only,
    30_000,
    dev_and_shm_take_no_unbounded_writes
);

/// Nothing of the host shows through the program's environment or pid 1's command line: not
/// the worker's working directory, not the sandbox's own arguments.
async fn nothing_of_the_host_shows(backend: Backend) {
    let code = "import os, json\n\
        print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(),\n\
        \x20   'pid1': open('/proc/1/cmdline', 'rb').read().decode(errors='replace'),\n\
        \x20   'pid1_env': open('/proc/1/environ', 'rb').read().decode(errors='replace')}))";
    let out = run(&backend, py(code)).await;
    let seen: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let here = std::env::current_dir().unwrap();
    let text = seen.to_string();
    assert!(!text.contains(here.to_str().unwrap()), "{seen:#}");
    let pid1 = seen["pid1"].as_str().unwrap();
    for leak in ["--ro-bind", "--seccomp", "--uid", "prlimit"] {
        assert!(!pid1.contains(leak), "{pid1:?}");
    }
    let keys: Vec<&str> = seen["env"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in &keys {
        assert!(
            ["PATH", "HOME", "LANG", "LC_CTYPE", "PWD", "HOSTNAME"].contains(key),
            "{key} in {keys:?}"
        );
    }
}
both!(host_hidden, 20_000, nothing_of_the_host_shows);
