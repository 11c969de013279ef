//! Every way a program can end reports all its output and its own exit code, whether the run
//! finishes at the program's end line or waits for the engine (program.rs).

use pretty_assertions::assert_eq;

use super::*;

/// Runs `code`, then checks stdout whole, that stderr contains `stderr`, and the exit code.
async fn ends(backend: &Backend, language: Language, code: &str, want: (&str, &str, i64)) {
    let out = run(backend, request(language, code)).await;
    let (stdout, stderr, exit_code) = want;
    assert_eq!(
        (out.stdout.as_str(), out.exit_code),
        (stdout, Some(exit_code)),
        "{code}\n{out:?}"
    );
    assert!(out.stderr.contains(stderr), "{code}\n{out:?}");
    assert!(
        !out.timed_out && !out.oom_killed && !out.truncated,
        "{out:?}"
    );
}

async fn python_programs_end_with_their_output_and_exit_code(backend: Backend) {
    let python = Language::Python;
    let cases: &[(&str, (&str, &str, i64))] = &[
        ("print('x', end='')", ("x", "", 0)),
        (
            "import sys\nprint('out')\nsys.exit('bad input')",
            ("out\n", "bad input", 1),
        ),
        (
            "print('before')\n1 / 0",
            ("before\n", "ZeroDivisionError", 1),
        ),
        ("import sys\nsys.exit(-1)", ("", "", 255)),
        ("raise KeyboardInterrupt", ("", "KeyboardInterrupt", 130)),
        // No atexit hooks: the engine reports the exit.
        (
            "import os\nprint('flushed', flush=True)\nos._exit(5)",
            ("flushed\n", "", 5),
        ),
        // The program's own exit hooks and non-daemon threads come before the end.
        (
            "import atexit\natexit.register(lambda: print('hook'))\nprint('main')",
            ("main\nhook\n", "", 0),
        ),
        (
            "import threading, time\n\
             def late():\n    time.sleep(0.3)\n    print('thread')\n\
             threading.Thread(target=late).start()\nprint('main')",
            ("main\nthread\n", "", 0),
        ),
        // A forked child that leaves through sys.exit does not end the run.
        (
            "import os, sys, time\n\
             if os.fork() == 0:\n    print('child', flush=True)\n    sys.exit(0)\n\
             os.wait()\ntime.sleep(0.2)\nprint('parent')",
            ("child\nparent\n", "", 0),
        ),
        // Text that looks like an end line is output.
        ("print('agentq-end-0:0')", ("agentq-end-0:0\n", "", 0)),
    ];
    for (code, want) in cases {
        ends(&backend, python, code, *want).await;
    }
}
both!(
    python_endings,
    20_000,
    python_programs_end_with_their_output_and_exit_code
);

async fn node_programs_end_with_their_output_and_exit_code(backend: Backend) {
    let node = Language::Javascript;
    let cases: &[(&str, (&str, &str, i64))] = &[
        ("process.stdout.write('x')", ("x", "", 0)),
        ("console.error('e'); process.exit(3)", ("", "e\n", 3)),
        (
            "setTimeout(() => console.log('late'), 200)",
            ("late\n", "", 0),
        ),
        // The program's own exit listeners come before the end.
        (
            "process.on('exit', () => { console.log('bye'); process.exitCode = 7 })",
            ("bye\n", "", 7),
        ),
        // Node prints an uncaught error after its `exit` event: the engine reports the exit.
        (
            "console.log('before'); setTimeout(() => { throw new Error('boom') }, 10)",
            ("before\n", "Error: boom", 1),
        ),
        (
            "Promise.reject(new Error('rejected'))",
            ("", "Error: rejected", 1),
        ),
    ];
    for (code, want) in cases {
        ends(&backend, node, code, *want).await;
    }
}
both!(
    node_endings,
    20_000,
    node_programs_end_with_their_output_and_exit_code
);
