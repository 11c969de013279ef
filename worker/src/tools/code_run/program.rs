//! How the code reaches the interpreter. Both backends start the interpreter before they know the
//! code (Docker's pool pre-creates containers), so the code comes in on stdin, framed ahead of
//! the program's own input: `<code length in bytes>\n<code><stdin>`. A few lines of bootstrap
//! read the frame and run the code as the main module; whatever follows is the program's stdin.

use super::{Language, Request};

/// Reads the frame from the buffered stdin and runs the code as `__main__`; `sys.stdin` then
/// continues right after it.
const PYTHON_BOOT: &str = "import sys\n\
n=int(sys.stdin.buffer.readline())\n\
c=compile(sys.stdin.buffer.read(n),'<code>','exec')\n\
del n\n\
exec(c,{'__name__':'__main__','__builtins__':__builtins__})\n";

/// Reads the frame with blocking reads on fd 0 (no read-ahead, so `process.stdin` continues
/// right after it) and runs the code as a CommonJS main module.
const NODE_BOOT: &str = "const fs=require('fs'),M=require('module');\
function rd(n){const b=Buffer.alloc(n);let o=0;while(o<n){let r;\
try{r=fs.readSync(0,b,o,n-o,null)}catch(e){if(e.code==='EAGAIN')continue;throw e}\
if(r===0)break;o+=r}return b.subarray(0,o)}\
let h='';for(;;){const c=rd(1);if(c.length===0||c[0]===10)break;h+=c.toString()}\
const f='/tmp/main.js',m=new M(f,null);m.filename=f;m.paths=[];\
m._compile(rd(parseInt(h,10)).toString('utf8'),f);";

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

/// The bytes written to the interpreter's stdin.
pub fn frame(request: &Request) -> Vec<u8> {
    let mut bytes = format!("{}\n", request.code.len()).into_bytes();
    bytes.extend_from_slice(request.code.as_bytes());
    bytes.extend_from_slice(request.stdin.as_bytes());
    bytes
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
        assert_eq!(frame(&request), "11\nprint('é')input".as_bytes());
    }
}
