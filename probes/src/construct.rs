//! Hard-coded transformer weights that implement gradient descent exactly, and weight-product
//! analysis of trained models.
//!
//! Proposition 1 of von Oswald et al. 2023 (A.1), in the official code's row-vector form
//! (`create_weights`), for tokens e = (x, y) ∈ R^{d+o} and one linear self-attention layer
//! h ← h + Σ_i (h W_q)(e_i W_k)ᵀ (e_i W_v) W_o over context tokens i:
//!
//! ```text
//! W_q = W_k = [[I_d, 0], [0, 0]]     W_v = [[0, 0], [0, −I_o]]     W_o = diag(0_d, (η/N)·I_o)
//! ```
//!
//! The query's y-entry becomes −(η/N) Σ_i y_i x_iᵀ x_q, i.e. minus one GD step from W₀ = 0, and
//! each context y-entry becomes its residual, so K stacked (or K repeated) layers are K GD steps.

use ndarray::{s, Array2};

use crate::{NamedWeights, ProbeError};

/// Parameter name of one attention matrix (`q`, `k`, `v` or `o`) in parameter layer `layer`,
/// matching the names the model publishes.
pub fn attn_name(layer: usize, matrix: &str) -> String {
    format!("layers.{layer}.attn.{matrix}")
}

/// The construction of Proposition 1: one parameter layer per entry of `etas` (one entry for a
/// recurrent model), layer l doing a GD step with learning rate etas[l] on N = `context_len` pairs.
pub fn gd_construction(x_dim: usize, y_dim: usize, context_len: usize, etas: &[f64]) -> NamedWeights {
    let width = x_dim + y_dim;
    let mut w = NamedWeights::new();
    for (layer, &eta) in etas.iter().enumerate() {
        let mut qk = Array2::zeros((width, width));
        qk.slice_mut(s![..x_dim, ..x_dim]).assign(&Array2::eye(x_dim));
        let mut value = Array2::zeros((width, width));
        value.slice_mut(s![x_dim.., x_dim..]).assign(&(-Array2::<f64>::eye(y_dim)));
        let mut out = Array2::zeros((width, width));
        out.slice_mut(s![x_dim.., x_dim..]).assign(&(Array2::<f64>::eye(y_dim) * (eta / context_len as f64)));
        w.insert(attn_name(layer, "q"), qk.clone());
        w.insert(attn_name(layer, "k"), qk);
        w.insert(attn_name(layer, "v"), value);
        w.insert(attn_name(layer, "o"), out);
    }
    w
}

/// The GD++ construction (von Oswald et al. A.10, `create_weights(lin_diag=True)`): like
/// [`gd_construction`] but W_v = [[I_d, 0], [0, −I_o]] and W_o = diag(−γ_l I_d, (η_l/N) I_o), so each
/// layer also moves every x_j by −γ Σ_i x_i x_iᵀ x_j (see `gdpp.rs`).
pub fn gdpp_construction(x_dim: usize, y_dim: usize, context_len: usize, etas: &[f64], gammas: &[f64]) -> NamedWeights {
    assert_eq!(etas.len(), gammas.len(), "one (η, γ) per parameter layer");
    let mut w = gd_construction(x_dim, y_dim, context_len, etas);
    for (layer, &gamma) in gammas.iter().enumerate() {
        let v = w.get_mut(&attn_name(layer, "v")).expect("built above");
        v.slice_mut(s![..x_dim, ..x_dim]).assign(&Array2::eye(x_dim));
        let o = w.get_mut(&attn_name(layer, "o")).expect("built above");
        o.slice_mut(s![..x_dim, ..x_dim]).assign(&(Array2::<f64>::eye(x_dim) * -gamma));
    }
    w
}

/// The two products that determine a single-head linear attention layer (spec §1.6):
/// KQ = W_q W_kᵀ (logits are h·KQ·hᵀ) and PV = W_v W_o (each attended token contributes e·PV).
#[derive(Clone, Debug, PartialEq)]
pub struct WeightProducts {
    pub kq: Array2<f64>,
    pub pv: Array2<f64>,
}

fn get<'a>(w: &'a NamedWeights, name: &str) -> Result<&'a Array2<f64>, ProbeError> {
    w.get(name).ok_or_else(|| ProbeError::MissingWeight(name.to_string()))
}

pub fn weight_products(w: &NamedWeights, layer: usize) -> Result<WeightProducts, ProbeError> {
    let (q, k) = (get(w, &attn_name(layer, "q"))?, get(w, &attn_name(layer, "k"))?);
    let (v, o) = (get(w, &attn_name(layer, "v"))?, get(w, &attn_name(layer, "o"))?);
    if q.ncols() != k.ncols() || v.ncols() != o.nrows() {
        return Err(ProbeError::Unsupported(format!(
            "layer {layer}: weight products need a single head (q {:?}, k {:?}, v {:?}, o {:?})",
            q.dim(),
            k.dim(),
            v.dim(),
            o.dim()
        )));
    }
    Ok(WeightProducts { kq: q.dot(&k.t()), pv: v.dot(o) })
}

/// The scalar β that aligns a trained layer with the construction: the mean of the first d
/// diagonal entries of its KQ (the construction has 1 there). Trained KQ/β and PV·β compute the
/// same function as KQ and PV.
pub fn kq_scale(products: &WeightProducts, x_dim: usize) -> f64 {
    (0..x_dim).map(|i| products.kq[[i, i]]).sum::<f64>() / x_dim as f64
}

/// A trained layer's products after the scalar correction, and their distance to a construction.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaledComparison {
    pub beta: f64,
    /// KQ/β
    pub kq: Array2<f64>,
    /// PV·β
    pub pv: Array2<f64>,
    /// ‖KQ/β − KQ_c‖_F and ‖PV·β − PV_c‖_F
    pub kq_residual: f64,
    pub pv_residual: f64,
}

/// Rescales `trained` by its β (see [`kq_scale`]) and measures it against `construction`.
pub fn compare_with_construction(
    trained: &WeightProducts,
    construction: &WeightProducts,
    x_dim: usize,
) -> Result<ScaledComparison, ProbeError> {
    if trained.kq.dim() != construction.kq.dim() || trained.pv.dim() != construction.pv.dim() {
        return Err(ProbeError::Unsupported("comparing products needs equal shapes (key_size = token width)".into()));
    }
    let beta = kq_scale(trained, x_dim);
    let (kq, pv) = (&trained.kq / beta, &trained.pv * beta);
    let (kq_residual, pv_residual) = (frobenius(&(&kq - &construction.kq)), frobenius(&(&pv - &construction.pv)));
    Ok(ScaledComparison { beta, kq, pv, kq_residual, pv_residual })
}

pub fn frobenius(a: &Array2<f64>) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// The interpolated model of von Oswald et al. A.3: for every parameter layer, rescale the trained
/// products by β, average them with the construction's, and express the result as weights with
/// W_k = W_v = I (so W_q = KQ and W_o = PV). Needs one head, attention only, square weights.
pub fn interpolate(
    trained: &NamedWeights,
    construction: &NamedWeights,
    x_dim: usize,
    layers: usize,
) -> Result<NamedWeights, ProbeError> {
    let mut out = NamedWeights::new();
    for layer in 0..layers {
        let t = weight_products(trained, layer)?;
        let c = weight_products(construction, layer)?;
        if t.kq.dim() != c.kq.dim() || t.pv.dim() != c.pv.dim() {
            return Err(ProbeError::Unsupported(
                "interpolation needs key_size = token width (square attention weights)".into(),
            ));
        }
        let beta = kq_scale(&t, x_dim);
        let kq = (&t.kq / beta + &c.kq) * 0.5;
        let pv = (&t.pv * beta + &c.pv) * 0.5;
        let eye = Array2::eye(kq.nrows());
        out.insert(attn_name(layer, "q"), kq);
        out.insert(attn_name(layer, "k"), eye.clone());
        out.insert(attn_name(layer, "v"), eye);
        out.insert(attn_name(layer, "o"), pv);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_products_are_the_paper_matrices() {
        let w = gd_construction(3, 1, 10, &[6.0]);
        let p = weight_products(&w, 0).unwrap();
        let mut kq = Array2::<f64>::zeros((4, 4));
        kq.slice_mut(s![..3, ..3]).assign(&Array2::eye(3));
        assert_eq!(p.kq, kq);
        let mut pv = Array2::<f64>::zeros((4, 4));
        pv[[3, 3]] = -0.6;
        assert_eq!(p.pv, pv);
        assert_eq!(kq_scale(&p, 3), 1.0);
    }

    #[test]
    fn interpolating_a_rescaled_construction_returns_it() {
        // (β·KQ, PV/β) computes the same function as (KQ, PV): such a trained layer interpolates
        // back to the construction exactly.
        let c = gd_construction(3, 1, 10, &[6.0]);
        let mut t = c.clone();
        t.get_mut("layers.0.attn.q").unwrap().mapv_inplace(|x| x * 2.5);
        t.get_mut("layers.0.attn.o").unwrap().mapv_inplace(|x| x / 2.5);
        let i = interpolate(&t, &c, 3, 1).unwrap();
        let (pi, pc) = (weight_products(&i, 0).unwrap(), weight_products(&c, 0).unwrap());
        assert!((&pi.kq - &pc.kq).iter().all(|e| e.abs() < 1e-15));
        assert!((&pi.pv - &pc.pv).iter().all(|e| e.abs() < 1e-15));
    }
}

#[cfg(test)]
mod snapshots {
    use super::*;

    fn rounded(a: &Array2<f64>) -> Vec<Vec<f64>> {
        a.outer_iter().map(|r| r.iter().map(|v| (v * 1e6).round() / 1e6 + 0.0).collect()).collect()
    }

    #[test]
    fn weight_products_of_the_constructions() {
        // d = 3, o = 1, N = 10: GD (η = 6) and GD++ (η = 13, γ = 0.17), and the interpolation of a
        // rescaled GD++ layer (β = 2) with the GD construction.
        let gd = gd_construction(3, 1, 10, &[6.0]);
        let pp = gdpp_construction(3, 1, 10, &[13.0], &[0.17]);
        let mut scaled = pp.clone();
        scaled.get_mut("layers.0.attn.q").unwrap().mapv_inplace(|x| 2.0 * x);
        let (g, p) = (weight_products(&gd, 0).unwrap(), weight_products(&pp, 0).unwrap());
        let mixed = weight_products(&interpolate(&scaled, &gd, 3, 1).unwrap(), 0).unwrap();
        insta::assert_yaml_snapshot!(serde_json::json!({
            "gd": {"kq": rounded(&g.kq), "pv": rounded(&g.pv), "beta": kq_scale(&g, 3)},
            "gdpp": {"kq": rounded(&p.kq), "pv": rounded(&p.pv), "beta": kq_scale(&p, 3)},
            "interpolated_gdpp_beta2_with_gd": {"kq": rounded(&mixed.kq), "pv": rounded(&mixed.pv)},
        }));
    }
}
