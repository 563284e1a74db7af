//! `fork`: a new VM, ready, in the time of a restore.
//!
//! Each round: a cold create through the API (`POST /vms?wait=ready`: boot
//! from the image until the guest agent says hello), next to a fork of a
//! running VM of the same image (`POST /vms/{id}/fork`, answered once the
//! clone has taken its own identity and is ready) and a take from a warm
//! pool of one (`POST /vms?wait=ready {"template_id"}`: a restore of a pool
//! VM; the pool refills, untimed, before the next round). The ratios are
//! over the cold create. Then host memory: the proportional set size (PSS) of the
//! VMM processes of `CLONES` clones next to that of as many VMs booted
//! cold (QEMU loads each clone's RAM from the saved state into memory of
//! its own, so clones share no pages with their parent; Firecracker maps
//! the memory file privately and shares its page cache).

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{json, Value};

use hatch::model::Image;

use crate::hatchd::Hatchd;
use crate::rows::Ctx;
use crate::stats::{millis, Comparison};
use crate::BenchError;

/// Clones (and cold VMs) whose memory is measured.
const CLONES: u32 = 4;
const MEM_MIB: u32 = 256;

pub async fn run(image: &Image, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let hatchd = Hatchd::start(ctx, &[image], |_| {}).await?;
    let result = measure(&hatchd, image, ctx).await;
    for vm in hatchd.orch.list_vms().await.unwrap_or_default() {
        hatchd.delete_vm(&vm.id).await;
    }
    hatchd.shutdown().await;
    result
}

async fn measure(hatchd: &Hatchd, image: &Image, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let body = json!({"image_id": image.id, "vcpu_count": 1, "mem_mib": MEM_MIB});
    let parent = create(hatchd, &body).await?;
    let mut ready = Comparison::new(
        Some("fork_ready_ratio"),
        format!("new VM -> ready: fork of a running VM vs cold create, {MEM_MIB} MiB"),
        "ms",
        "cold create",
    );
    let mut pooled = Comparison::new(
        Some("pool_ready_ratio"),
        format!("new VM -> ready: take from a warm pool vs cold create, {MEM_MIB} MiB"),
        "ms",
        "cold create",
    );
    let template = pool_template(hatchd, image).await?;
    for round in 1..=ctx.rounds {
        // A refill would compete with every column: the pool is full first.
        wait_pool_ready(hatchd, &template).await?;
        let started = Instant::now();
        let cold = create(hatchd, &body).await?;
        let cold_ms = millis(started.elapsed());
        hatchd.delete_vm(&cold).await;
        let started = Instant::now();
        let clones = fork(hatchd, &parent, 1).await?;
        let fork_ms = millis(started.elapsed());
        for clone in clones {
            hatchd.delete_vm(&clone).await;
        }
        let started = Instant::now();
        let taken = create(hatchd, &json!({"template_id": template})).await?;
        let take_ms = millis(started.elapsed());
        hatchd.delete_vm(&taken).await;
        eprintln!("round {round}: fork {fork_ms:.0} ms, pool take {take_ms:.0} ms, cold create {cold_ms:.0} ms");
        ready.push(fork_ms, cold_ms);
        pooled.push(take_ms, cold_ms);
    }
    let (_, _) = hatchd
        .request(Method::DELETE, &format!("/templates/{template}"), None)
        .await?;

    let mut memory = Comparison::new(
        None,
        format!("host memory (PSS) of {CLONES} forks vs {CLONES} cold VMs, {MEM_MIB} MiB each"),
        "MiB",
        "cold VMs",
    );
    let clones = fork(hatchd, &parent, CLONES).await?;
    let mut cold = Vec::new();
    for _ in 0..CLONES {
        cold.push(create(hatchd, &body).await?);
    }
    let (clones_mib, cold_mib) = (pss_mib(hatchd, &clones).await?, pss_mib(hatchd, &cold).await?);
    eprintln!("memory: {CLONES} forks {clones_mib:.0} MiB, {CLONES} cold VMs {cold_mib:.0} MiB");
    memory.push(clones_mib, cold_mib);
    for vm in clones.iter().chain(&cold) {
        hatchd.delete_vm(vm).await;
    }
    Ok(vec![ready, pooled, memory])
}

/// A template of the image with a warm pool of one; answers its id.
async fn pool_template(hatchd: &Hatchd, image: &Image) -> Result<String, BenchError> {
    let body = json!({
        "name": "bench-pool",
        "image_id": image.id,
        "vcpu_count": 1,
        "mem_mib": MEM_MIB,
        "warm_pool_size": 1,
    });
    let (status, template) = hatchd.request(Method::POST, "/templates", Some(&body)).await?;
    if !status.is_success() {
        return Err(BenchError::Http(format!(
            "POST /templates answered {status}: {template}"
        )));
    }
    Ok(template["id"].as_str().unwrap_or_default().to_string())
}

/// Waits (untimed) until the template's pool holds a VM ready to take.
async fn wait_pool_ready(hatchd: &Hatchd, template: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, shown) = hatchd
            .request(Method::GET, &format!("/templates/{template}"), None)
            .await?;
        if shown["warm_pool"]["ready"].as_u64().unwrap_or(0) >= 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout {
                what: format!("template {template}'s warm pool to fill"),
                serial_tail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create(hatchd: &Hatchd, body: &Value) -> Result<String, BenchError> {
    let (status, vm) = hatchd
        .request(Method::POST, "/vms?wait=ready&timeout=300", Some(body))
        .await?;
    if !status.is_success() {
        return Err(BenchError::Http(format!("POST /vms answered {status}: {vm}")));
    }
    Ok(vm["id"].as_str().unwrap_or_default().to_string())
}

async fn fork(hatchd: &Hatchd, parent: &str, count: u32) -> Result<Vec<String>, BenchError> {
    let (status, answer) = hatchd
        .request(
            Method::POST,
            &format!("/vms/{parent}/fork"),
            Some(&json!({"count": count})),
        )
        .await?;
    if !status.is_success() {
        return Err(BenchError::Http(format!(
            "POST /vms/{parent}/fork answered {status}: {answer}"
        )));
    }
    Ok(answer["vms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|vm| vm["id"].as_str().map(str::to_string))
        .collect())
}

/// The summed PSS of the VMs' VMM processes.
async fn pss_mib(hatchd: &Hatchd, vms: &[String]) -> Result<f64, BenchError> {
    let mut total_kib = 0u64;
    for id in vms {
        let vm = hatchd.orch.get_vm(id).await.map_err(BenchError::hatch)?;
        let pid = vm
            .pid
            .ok_or_else(|| BenchError::Hatch(format!("VM {id} has no VMM process")))?;
        let path = format!("/proc/{pid}/smaps_rollup");
        let rollup = std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))?;
        total_kib += rollup
            .lines()
            .find_map(|line| line.strip_prefix("Pss:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| BenchError::Hatch(format!("{path} has no Pss line")))?;
    }
    Ok(total_kib as f64 / 1024.0)
}
