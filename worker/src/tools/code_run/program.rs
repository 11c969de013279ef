//! How the code reaches the interpreter, and how the interpreter says it is done. Both backends
//! start the interpreter before they know the code (Docker's pool pre-creates containers), so
//! the code comes in on stdin, framed ahead of the program's own input:
//! `<code length in bytes>[ <end marker>]\n<code><stdin>`. A few lines of bootstrap read the
//! frame and run the code as the main module; whatever follows is the program's stdin.
//!
//! With an end marker (the Docker backend sends a fresh random one per run), the bootstrap
//! writes the end line `<marker><exit code>\n` on stdout and on stderr once the program is done
//! and its output flushed. Docker 20.10 closes a container's output and reports its exit only
//! after tearing the container down (≈15–20 ms of `runc delete` and unmounts); the end line lets
//! a run finish when the program does. It is a shortcut, never a requirement: a program killed
//! (timeout, OOM, signal), one that leaves through `os._exit`, closes its stdout, or dies of an
//! uncaught JavaScript exception (Node prints the error after its `exit` event) writes no end
//! line, and the run waits for the engine as before. The program can forge its own end line
//! (the marker is in its process); that only misreports its own result.

use super::limits::Capped;
use super::{Language, Request};

/// Reads the frame from the buffered stdin and runs the code as `__main__`; `sys.stdin` then
/// continues right after it. The end line is written by an `atexit` hook registered before the
/// program runs, so it comes after the program's own hooks, non-daemon threads and traceback;
/// a forked child leaving the same way writes none.
const PYTHON_BOOT: &str = r#"import sys
def _agentq_boot():
    import os, atexit
    head = sys.stdin.buffer.readline().split()
    code = compile(sys.stdin.buffer.read(int(head[0])), '<code>', 'exec')
    status = [0]
    if len(head) > 1:
        marker, pid = head[1], os.getpid()
        def end():
            if os.getpid() != pid:
                return
            for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                try:
                    f.flush()
                except Exception:
                    pass
            line = marker + str(status[0]).encode() + b'\n'
            for fd in (1, 2):
                try:
                    os.write(fd, line)
                except OSError:
                    pass
        atexit.register(end)
    try:
        exec(code, {'__name__': '__main__', '__builtins__': __builtins__})
    except SystemExit as e:
        status[0] = 0 if e.code is None else e.code & 255 if isinstance(e.code, int) else 1
        raise
    except KeyboardInterrupt:
        # Python then ends itself with SIGINT, which the engine reports as 128 + 2.
        status[0] = 130
        raise
    except BaseException:
        status[0] = 1
        raise
_agentq_boot()
"#;

/// Reads the frame with blocking reads on fd 0 (no read-ahead, so `process.stdin` continues
/// right after it) and runs the code as a CommonJS main module. The end line is written once the
/// `exit` event has gone to every listener, the program's own included (`process.emit` is
/// wrapped: listeners run in the order they were added, and the program's may still print or
/// set `process.exitCode`); stdout and stderr are synchronous pipes on Linux, so the output is
/// out by then. Not after an uncaught exception, whose error Node prints after that event.
const NODE_BOOT: &str = "(()=>{const fs=require('fs'),M=require('module');\
function rd(n){const b=Buffer.alloc(n);let o=0;while(o<n){let r;\
try{r=fs.readSync(0,b,o,n-o,null)}catch(e){if(e.code==='EAGAIN')continue;throw e}\
if(r===0)break;o+=r}return b.subarray(0,o)}\
let h='';for(;;){const c=rd(1);if(c.length===0||c[0]===10)break;h+=c.toString()}\
const [len,marker]=h.split(' ');\
if(marker){let fatal=false;process.on('uncaughtExceptionMonitor',()=>{fatal=true});\
const emit=process.emit;process.emit=function(event,...args){const r=emit.call(this,event,...args);\
if(event==='exit'&&!fatal){const l=marker+((process.exitCode??args[0])&255)+'\\n';\
for(const fd of [1,2]){try{fs.writeSync(fd,l)}catch{}}}return r}}\
const f='/tmp/main.js',m=new M(f,null);m.filename=f;m.paths=[];\
m._compile(rd(parseInt(len,10)).toString('utf8'),f)})()";

/// The interpreter's arguments after its path; `heap_mb` caps V8's heap (process backend only:
/// in Docker the cgroup's OOM kill is what reports `oom_killed`).
pub fn args(language: Language, heap_mb: Option<u64>) -> Vec<String> {
    match language {
        Language::Python => vec!["-I".into(), "-c".into(), PYTHON_BOOT.into()],
        Language::Javascript => {
            let mut args = Vec::new();
            if let Some(mb) = heap_mb {
                args.push(format!("--max-old-space-size={mb}"));
            }
            args.extend(["-e".into(), NODE_BOOT.into()]);
            args
        }
    }
}

/// The bytes written to the interpreter's stdin; with `end`, the program writes the end line
/// when it is done.
pub fn frame(request: &Request, end: Option<&EndMarker>) -> Vec<u8> {
    let mut bytes = match end {
        Some(end) => format!("{} {}\n", request.code.len(), end.0),
        None => format!("{}\n", request.code.len()),
    }
    .into_bytes();
    bytes.extend_from_slice(request.code.as_bytes());
    bytes.extend_from_slice(request.stdin.as_bytes());
    bytes
}

/// A run's end marker: random, so no program output contains it by chance.
#[derive(Debug, Clone)]
pub struct EndMarker(String);

impl EndMarker {
    pub fn random() -> Self {
        Self(format!("agentq-end-{}:", uuid::Uuid::new_v4().simple()))
    }
}

/// The read side of the end line on one output stream: passes the program's output on to
/// `out` and keeps the exit code the end line carries. Bytes that could be the start of the
/// marker are held until the next chunk shows what they are.
#[derive(Debug)]
pub struct EndWatch {
    marker: Vec<u8>,
    held: Vec<u8>,
    exit_code: Option<i64>,
}

/// The longest exit code an end line carries ("255"), with room to spare.
const MAX_CODE_LEN: usize = 8;

impl EndWatch {
    pub fn new(marker: &EndMarker) -> Self {
        Self {
            marker: marker.0.as_bytes().to_vec(),
            held: Vec::new(),
            exit_code: None,
        }
    }

    /// Feeds one chunk of the stream. Once the end line has been read, later bytes (from
    /// processes the program left behind) are dropped.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Capped) {
        if self.ended() {
            return;
        }
        self.held.extend_from_slice(chunk);
        let marker_len = self.marker.len();
        if let Some(at) = self
            .held
            .windows(marker_len)
            .position(|w| w == self.marker.as_slice())
        {
            out.push(&self.held[..at]);
            self.held.drain(..at);
            let rest = &self.held[marker_len..];
            match rest.iter().position(|b| *b == b'\n') {
                Some(newline) => {
                    let code = std::str::from_utf8(&rest[..newline])
                        .ok()
                        .and_then(|c| c.parse().ok());
                    if code.is_some() {
                        self.exit_code = code;
                        self.held.clear();
                        return;
                    }
                }
                // The rest of the line is still to come.
                None if rest.len() <= MAX_CODE_LEN => return,
                None => {}
            }
            // Not an end line after all (the program wrote the marker itself): plain output.
            out.push(&self.held);
            self.held.clear();
            return;
        }
        let keep = self.held.len().min(marker_len - 1);
        out.push(&self.held[..self.held.len() - keep]);
        self.held.drain(..self.held.len() - keep);
    }

    /// The stream ended without an end line: what was held is output.
    pub fn finish(&mut self, out: &mut Capped) {
        out.push(&self.held);
        self.held.clear();
    }

    /// Whether the end line has been read.
    pub fn ended(&self) -> bool {
        self.exit_code.is_some()
    }

    /// The exit code the end line reported.
    pub fn exit_code(&self) -> Option<i64> {
        self.exit_code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_puts_the_code_length_first() {
        let request = Request {
            language: Language::Python,
            code: "print('é')".into(),
            stdin: "input".into(),
        };
        assert_eq!(frame(&request, None), "11\nprint('é')input".as_bytes());
        let end = EndMarker("m:".into());
        assert_eq!(
            frame(&request, Some(&end)),
            "11 m:\nprint('é')input".as_bytes()
        );
    }

    fn watch(chunks: &[&[u8]]) -> (String, Option<i64>, bool) {
        let end = EndMarker("agentq-end-0123:".into());
        let mut watch = EndWatch::new(&end);
        let mut out = Capped::new(1 << 10);
        for chunk in chunks {
            watch.feed(chunk, &mut out);
        }
        let ended = watch.ended();
        if !ended {
            watch.finish(&mut out);
        }
        (out.text(), watch.exit_code(), ended)
    }

    #[test]
    fn the_end_line_is_found_across_chunks_and_not_passed_on() {
        let whole = watch(&[b"1\nagentq-end-0123:0\n"]);
        assert_eq!(whole, ("1\n".into(), Some(0), true));
        let split = watch(&[b"partial agentq-e", b"nd-01", b"23:4", b"2\nafter"]);
        assert_eq!(split, ("partial ".into(), Some(42), true));
    }

    #[test]
    fn output_without_an_end_line_is_passed_on_whole() {
        assert_eq!(
            watch(&[b"agentq-end-01", b"x agentq"]),
            ("agentq-end-01x agentq".into(), None, false)
        );
        let not_a_code = watch(&[b"agentq-end-0123:oops\nmore"]);
        assert_eq!(
            not_a_code,
            ("agentq-end-0123:oops\nmore".into(), None, false)
        );
        let unfinished = watch(&[b"a agentq-end-0123:1"]);
        assert_eq!(unfinished, ("a agentq-end-0123:1".into(), None, false));
    }
}
