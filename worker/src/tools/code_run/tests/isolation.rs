//! Runs don't see each other; a dropped run (cancel, deadline, lost lease) leaves nothing; the
//! Docker backend's pool and leftover clean-up.

use std::collections::HashMap;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::ListContainersOptions;
use pretty_assertions::{assert_eq, assert_ne};

use super::*;
use crate::tools::code_run::pool;

/// A writes a file and keeps a marked child running; B, at the same time, sees neither.
async fn concurrent_runs_cannot_see_each_other(backend: Backend) {
    let mark = marker();
    let a = py(&format!(
        "import subprocess, sys, time\nopen('/tmp/secret-a', 'w').write('a')\n\
         p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3) # {mark}'])\n\
         time.sleep(2)\nprint(sorted(__import__('os').listdir('/tmp')))\np.kill()"
    ));
    let b = py(&format!(
        "import os, time\ntime.sleep(1)\n\
         def cmd(p):\n    try: return open(f'/proc/{{p}}/cmdline', 'rb').read().decode()\n\
         \x20   except OSError: return ''\n\
         pids = [p for p in os.listdir('/proc') if p.isdigit()]\n\
         print(sorted(os.listdir('/tmp')), any('{mark}' in cmd(p) for p in pids), len(pids) < 6)"
    ));
    let (a, b) = tokio::join!(backend.run(&a), backend.run(&b));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.stdout, "['secret-a']\n", "{a:?}");
    assert_eq!(b.stdout, "[] False True\n", "{b:?}");
    assert_nothing_left(&backend, Some(&mark)).await;
}
both!(
    concurrent_runs,
    20_000,
    concurrent_runs_cannot_see_each_other
);

/// The worker drops the `call` future on cancel: the run and its children go right away.
async fn a_dropped_run_is_killed_and_removed(backend: Backend) {
    let mark = marker();
    let code = format!(
        "import subprocess, sys, time\n\
         subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60) # {mark}'])\n\
         time.sleep(60)"
    );
    let request = py(&code);
    let dropped = tokio::time::timeout(Duration::from_millis(1500), backend.run(&request)).await;
    assert!(dropped.is_err(), "the run should still be going");
    assert_nothing_left(&backend, Some(&mark)).await;
}
both!(dropped_run, 20_000, a_dropped_run_is_killed_and_removed);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_serves_each_container_once_and_refills() {
    let mut settings = settings(Duration::from_secs(20));
    settings.pool_size = 1;
    let Some(backend) = docker_backend(&settings) else {
        return;
    };
    let Backend::Docker(docker) = &backend else {
        unreachable!()
    };
    // One pooled Python container and nothing else (the run's own container is gone).
    let wait_for_pool = || async {
        for _ in 0..200 {
            if docker.pool.ready(Language::Python) == 1 && containers_of(&backend).await.len() == 1
            {
                return containers_of(&backend).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the pool did not fill: {:?}", containers_of(&backend).await);
    };
    // The first run finds the pool empty and starts filling it.
    let first = backend.run(&py("print(1)")).await.unwrap();
    assert_eq!(first.stdout, "1\n");
    let pooled = wait_for_pool().await;
    let out = backend
        .run(&py("open('/tmp/mine', 'w'); print(2)"))
        .await
        .unwrap();
    assert_eq!(out.stdout, "2\n");
    // The pooled container served that run, is gone, and a fresh one took its place.
    let refilled = wait_for_pool().await;
    assert_ne!(pooled, refilled);
    let out = backend
        .run(&py("import os; print(os.listdir('/tmp'))"))
        .await
        .unwrap();
    assert_eq!(out.stdout, "[]\n", "no file of an earlier run");
    // Dropping the backend removes what the pool holds.
    wait_for_pool().await;
    let instance = docker.instance.clone();
    let engine = docker.docker.clone();
    drop(backend);
    let left = engine
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some([("label".to_owned(), vec![format!("{LABEL}={instance}")])].into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(left.len(), 0, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_containers_are_removed_at_start() {
    let settings = settings(Duration::from_secs(20));
    let Some(backend) = docker_backend(&settings) else {
        return;
    };
    let Backend::Docker(docker) = &backend else {
        unreachable!()
    };
    // What a worker killed mid-run leaves: a labelled container.
    let body = ContainerCreateBody {
        image: Some(PYTHON_IMAGE.into()),
        cmd: Some(vec![
            "python3".into(),
            "-c".into(),
            "import time; time.sleep(60)".into(),
        ]),
        labels: Some(HashMap::from([(LABEL.into(), docker.instance.clone())])),
        network_disabled: Some(true),
        ..Default::default()
    };
    let id = docker.docker.create_container(None, body).await.unwrap().id;
    docker
        .docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .unwrap();
    // Only this test's containers: the other tests' runs are going on beside it.
    let label = format!("{LABEL}={}", docker.instance);
    // Younger than the grace period: kept (it may be a live worker's run).
    pool::remove_leftovers(&docker.docker, &label, Duration::from_secs(3600)).await;
    assert_eq!(containers_of(&backend).await, vec![id.clone()]);
    pool::remove_leftovers(&docker.docker, &label, Duration::ZERO).await;
    assert_nothing_left(&backend, None).await;
}
