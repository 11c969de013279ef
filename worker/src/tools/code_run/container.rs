//! The Docker engine as the sandbox sees it: the hardened container spec every run gets, and a
//! synchronous ping (the tool registry is built outside async code) that also reads the
//! engine's API version, so bollard speaks what the engine understands (20.10 speaks 1.41).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use agentq_shared::config::CodeRunSettings;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};

use super::limits::{LABEL, docker_seccomp_profile};
use super::{Language, program};

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The hardened container for one run of `language`: every limit of `SandboxLimits`, an empty
/// environment, no network, and the code expected on stdin (program.rs).
pub fn hardened(
    settings: &CodeRunSettings,
    language: Language,
    instance: &str,
) -> ContainerCreateBody {
    let limits = &settings.limits;
    let (image, interpreter) = match language {
        Language::Python => (&settings.python_image, "python3"),
        Language::Javascript => (&settings.node_image, "node"),
    };
    let mut cmd = vec![interpreter.to_owned()];
    cmd.extend(program::args(language, None));
    let memory = limits.memory_bytes as i64;
    let ulimit = |name: &str, value: u64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(value as i64),
        hard: Some(value as i64),
    };
    ContainerCreateBody {
        image: Some(image.clone()),
        cmd: Some(cmd),
        entrypoint: Some(Vec::new()),
        user: Some(format!("{0}:{0}", limits.uid)),
        working_dir: Some("/tmp".into()),
        env: Some(Vec::new()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(true),
        hostname: Some("sandbox".into()),
        labels: Some(HashMap::from([(LABEL.into(), instance.to_owned())])),
        host_config: Some(HostConfig {
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(i64::from(limits.cpu_percent) * 10_000_000),
            pids_limit: Some(i64::from(limits.pids)),
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".into(),
                format!("rw,nosuid,nodev,size={},mode=1777", limits.tmpfs_bytes),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec![
                "no-new-privileges".into(),
                format!("seccomp={}", docker_seccomp_profile()),
            ]),
            ulimits: Some(vec![
                ulimit("fsize", limits.file_size_bytes),
                ulimit("nofile", limits.open_files),
            ]),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The engine's socket: `DOCKER_HOST` when it is a `unix://` path, else the default.
pub fn socket_path() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}

/// `GET /_ping` over the socket, synchronously (the registry is built outside async code);
/// returns the engine's API version.
pub fn ping(socket: &str) -> Result<(usize, usize), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    let timeout = Some(Duration::from_secs(3));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    let _ = stream.take(8192).read_to_string(&mut reply);
    if !reply.starts_with("HTTP/1.0 200") && !reply.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected answer: {:?}", reply.lines().next()));
    }
    let version = reply
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("api-version:")
                .map(|v| v.trim().to_owned())
        })
        .ok_or("no API-Version header")?;
    let (major, minor) = version.split_once('.').ok_or("malformed API-Version")?;
    Ok((
        major.parse().map_err(|_| "malformed API-Version")?,
        minor.parse().map_err(|_| "malformed API-Version")?,
    ))
}
