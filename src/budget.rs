//! One memory estimate per command, checked before anything is allocated.
//!
//! Sizes that each pass their own check (a batch, an evaluation set, a width, a depth, a number
//! of in-context examples) can still multiply to more memory than the machine has, and then
//! libtorch panics or the allocator aborts the process. Every command that allocates in
//! proportion to its inputs adds up what it will hold at once — prompts in f64 and their f32
//! tokens, parameters with their gradients and Adam's two moments, the activations autograd
//! keeps for the backward pass, tuning and evaluation prompts, the tournament's and the curve's
//! expanded queries — in one [`Budget`], and refuses in one line, naming the largest parts by
//! their fields, when the total is over the limit.
//!
//! The estimates are upper bounds of the right order (within a small factor of what is
//! allocated), not exact counts. The limit is `ICL_LAB_MEMORY_GIB` GiB if that is set, else
//! three quarters of the machine's memory (`/proc/meminfo`), else 16 GiB.

use icl_tasks::Dims;

/// The environment variable that sets the limit, in GiB.
pub const LIMIT_VAR: &str = "ICL_LAB_MEMORY_GIB";

const GIB: f64 = (1u64 << 30) as f64;

/// The limit in bytes ([`LIMIT_VAR`], else ¾ of physical memory, else 16 GiB).
pub fn limit_bytes() -> anyhow::Result<u128> {
    if let Ok(text) = std::env::var(LIMIT_VAR) {
        let gib: f64 = text
            .trim()
            .parse()
            .ok()
            .filter(|g: &f64| g.is_finite() && *g > 0.0)
            .ok_or_else(|| anyhow::anyhow!("{LIMIT_VAR}: must be a number of GiB > 0 (got {text:?})"))?;
        return Ok((gib * GIB) as u128);
    }
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    Ok(physical.map_or(16 << 30, |b| b / 4 * 3))
}

/// What a command will hold in memory at once, part by part.
#[derive(Clone, Debug, Default)]
pub struct Budget {
    parts: Vec<(String, u128)>,
}

impl Budget {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` held for `what` (the fields it follows from, e.g.
    /// `train.batch × task.context_len`).
    pub fn add(&mut self, what: impl Into<String>, bytes: u128) -> &mut Self {
        self.parts.push((what.into(), bytes));
        self
    }

    pub fn total(&self) -> u128 {
        self.parts.iter().map(|(_, b)| b).fold(0u128, |a, b| a.saturating_add(*b))
    }

    /// Ok if the total is within [`limit_bytes`]; otherwise one line with the total, the limit
    /// and the three largest parts.
    pub fn check(&self) -> anyhow::Result<()> {
        let limit = limit_bytes()?;
        let total = self.total();
        if total <= limit {
            return Ok(());
        }
        let mut parts = self.parts.clone();
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        let largest: Vec<String> =
            parts.iter().take(3).map(|(what, bytes)| format!("{what}: {}", gib(*bytes))).collect();
        anyhow::bail!(
            "memory: needs about {}, over the limit of {} (largest: {}); make these smaller, or set {LIMIT_VAR} on a larger machine",
            gib(total),
            gib(limit),
            largest.join("; ")
        )
    }
}

/// A size for people: "12.3 GiB", or "3.1e6 GiB" when absurd.
pub fn gib(bytes: u128) -> String {
    let g = bytes as f64 / GIB;
    if g >= 1e5 {
        format!("{g:.1e} GiB")
    } else if g >= 0.1 {
        format!("{g:.1} GiB")
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Bytes of `count` prompts with `n` context pairs as f64 (`xs`, `ys`, `xq`, `yq`).
pub fn prompt_bytes(count: usize, n: usize, dims: Dims) -> u128 {
    count as u128 * (n as u128 + 1) * (dims.x_dim + dims.y_dim) as u128 * 8
}

/// Bytes of the activations of `batch` sequences of `tokens` tokens of width `width` through
/// `layers` layers of `heads` heads (f32): per layer and token, `per_token` floats per unit of
/// width (queries, keys, values, outputs, MLP hidden units) and the attention scores. With
/// `backward` autograd keeps every layer's for the backward pass (and one more layer's worth is
/// live for the gradients); without, only about one layer's is live at a time.
pub fn activation_bytes(
    batch: usize,
    tokens: usize,
    width: usize,
    layers: usize,
    heads: usize,
    per_token: usize,
    backward: bool,
) -> u128 {
    let per_layer = tokens as u128 * (per_token as u128 * width as u128 + 2 * heads as u128 * tokens as u128);
    let kept = if backward { layers as u128 + 1 } else { 2 };
    batch as u128 * per_layer * kept * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_the_largest_parts_and_the_limit() {
        let mut b = Budget::new();
        b.add("train.batch", 3 << 50).add("eval.tasks", 1 << 50).add("parameters", 10);
        let e = b.check().unwrap_err().to_string();
        assert!(e.contains("largest: train.batch: ") && e.contains("; eval.tasks: "), "{e}");
        assert!(!e.contains('\n'));
        assert!(Budget::new().add("small", 1 << 20).check().is_ok());
    }
}
