//! Choosing where tensors live. CPU by default; CUDA on request.
//!
//! The linker drops `libtorch_cuda.so` from binaries built against libtorch (nothing references
//! it directly), so libtorch would report no GPU even on a CUDA machine. Instead of a separate
//! CUDA build, we load that library at run time when CUDA is asked for: the same binary then runs
//! on a CPU-only machine (no CUDA libraries needed) and on a GPU machine.

use anyhow::{bail, Context};
use tch::Device;

/// `cpu`, `cuda` or `cuda:N`, without touching libtorch.
pub fn parse_device(name: &str) -> anyhow::Result<DeviceName> {
    match name {
        "cpu" => Ok(DeviceName::Cpu),
        "cuda" => Ok(DeviceName::Cuda(0)),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(i) => Ok(DeviceName::Cuda(i)),
            None => bail!("must be `cpu`, `cuda` or `cuda:N` (got `{name}`)"),
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceName {
    Cpu,
    Cuda(usize),
}

/// Resolves a device name to a libtorch device, loading the CUDA backend if needed.
pub fn open(name: &str) -> anyhow::Result<Device> {
    match parse_device(name)? {
        DeviceName::Cpu => Ok(Device::Cpu),
        DeviceName::Cuda(i) => {
            load_cuda_backend()?;
            if !tch::Cuda::is_available() {
                bail!("device `{name}`: libtorch's CUDA backend loaded but sees no GPU");
            }
            let count = tch::Cuda::device_count() as usize;
            if i >= count {
                bail!("device `{name}`: only {count} CUDA device(s) present");
            }
            Ok(Device::Cuda(i))
        }
    }
}

/// The device a run was trained on if it can be opened here, else the CPU: analyses of a run
/// trained on a GPU use the GPU where there is one and still run on a CPU-only machine.
pub fn open_or_cpu(name: &str) -> Device {
    open(name).unwrap_or(Device::Cpu)
}

fn load_cuda_backend() -> anyhow::Result<()> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            // Found through the binary's rpath or LD_LIBRARY_PATH, like libtorch_cpu.so.
            // SAFETY: loading libtorch_cuda runs its static initialisers, which register the CUDA
            // hooks with the already-loaded libtorch_cpu; the library is never unloaded.
            unsafe { libloading::Library::new("libtorch_cuda.so") }
                .map(std::mem::forget)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(anyhow::Error::msg)
        .context(
            "cannot load libtorch_cuda.so: point LD_LIBRARY_PATH at the torch/lib folder of a CUDA build of PyTorch 2.11",
        )
}

/// Keeps freed memory in the process instead of returning it to the kernel after every large
/// tensor is dropped (glibc only; elsewhere nothing). By default glibc serves allocations above a
/// moving threshold by `mmap` and trims the heap's top on free, so a training step whose
/// activations are tens of megabytes (Garg's standard model: 21 MB per MLP activation) page-faults
/// and zeroes fresh pages for each of them every step: 8% of the step's time there, measured by
/// `perf` (the kernel's `clear_page_erms`). With a fixed mmap threshold at glibc's maximum (32 MiB)
/// and no trimming, the step reuses its memory. Results are unchanged (only where bytes live).
/// Called once at start-up by the CLI.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
