//! Statistics of experiment tables: mean ± sample standard deviation over seeds, and Kendall's
//! rank correlation.

/// (mean, sample standard deviation) of the finite values; the std is NaN (undefined) for one
/// value, and both are NaN for none.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() == 1 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Population standard deviation (divisor n) of the finite values: what the seed paper's
/// Table 4 reports over its three seeds (paper.md §7.2). NaN for none.
pub fn population_std(xs: &[f64]) -> f64 {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Kendall's τ-b between paired values (ties in either list are accounted for). Pairs where
/// either value is not finite are skipped: −∞ marks a candidate a criterion does not score
/// (removing `none`), which has no rank. NaN when fewer than two pairs remain or when one side
/// is constant.
pub fn kendall_tau(a: &[f64], b: &[f64]) -> f64 {
    let pairs: Vec<(f64, f64)> =
        a.iter().zip(b).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(x, y)| (*x, *y)).collect();
    let n = pairs.len();
    if n < 2 {
        return f64::NAN;
    }
    let (mut concordant, mut discordant, mut tie_a, mut tie_b) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let da = pairs[i].0.total_cmp(&pairs[j].0);
            let db = pairs[i].1.total_cmp(&pairs[j].1);
            use std::cmp::Ordering::Equal;
            match (da, db) {
                (Equal, Equal) => {}
                (Equal, _) => tie_a += 1,
                (_, Equal) => tie_b += 1,
                (x, y) if x == y => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    let (n1, n2) = ((concordant + discordant + tie_a) as f64, (concordant + discordant + tie_b) as f64);
    if n1 == 0.0 || n2 == 0.0 {
        return f64::NAN;
    }
    (concordant - discordant) as f64 / (n1 * n2).sqrt()
}

/// `mean ± std` as text (the mean alone for one value, `-` for none).
pub fn pm(mean: f64, std: f64) -> String {
    match (mean.is_finite(), std.is_finite()) {
        (true, true) => format!("{mean:.4} ± {std:.4}"),
        (true, false) => format!("{mean:.4}"),
        _ => "-".into(),
    }
}

/// Mean over rows of the per-row τ-b between two tables of the same shape (rows where τ is
/// undefined are skipped): how alike two criteria rank the ops of each edge.
pub fn mean_row_tau(a: &[Vec<Vec<f64>>], b: &[Vec<Vec<f64>>]) -> f64 {
    let taus: Vec<f64> =
        a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| kendall_tau(x, y)).filter(|t| t.is_finite()).collect();
    if taus.is_empty() {
        f64::NAN
    } else {
        taus.iter().sum::<f64>() / taus.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, Σ(x−5)² = 32, sample variance 32/7.
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0, f64::NAN]);
        assert_eq!(m, 5.0);
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-15);
        let (m, s) = mean_std(&[3.0]);
        assert!(m == 3.0 && s.is_nan());
        assert_eq!(pm(m, s), "3.0000");
        assert!(mean_std(&[]).0.is_nan());
        // Population: Σ(x−5)² = 32 over n = 8 → 2.
        assert_eq!(population_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), 2.0);
        assert_eq!(population_std(&[3.0]), 0.0);
    }

    #[test]
    fn kendall_tau_b_by_hand() {
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]), 1.0);
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]), -1.0);
        // (1,1) (2,3) (3,2): pairs 12 C, 13 C, 23 D → (2 − 1)/3.
        assert!((kendall_tau(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]) - 1.0 / 3.0).abs() < 1e-15);
        // Ties: a = (1,1,2), b = (1,2,3): pair 12 tied in a only; 13, 23 concordant.
        // n1 = 2 + 0 + 0... τ-b = (2 − 0)/√((2)(3)) = 0.8165.
        let t = kendall_tau(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]);
        assert!((t - 2.0 / 6f64.sqrt()).abs() < 1e-15, "{t}");
        // Non-finite pairs are skipped: with them, (−∞, 3) against the others would be
        // discordant and give τ = −1/3 instead of 1.
        let t = kendall_tau(&[f64::NEG_INFINITY, 1.0, f64::NAN, 2.0], &[3.0, 1.0, 5.0, 2.0]);
        assert_eq!(t, 1.0);
        // Rows: τ = 1 and τ = −1 → mean 0; a constant row is skipped.
        let a = vec![vec![vec![1.0, 2.0], vec![1.0, 2.0], vec![1.0, 1.0]]];
        let b = vec![vec![vec![3.0, 4.0], vec![4.0, 3.0], vec![1.0, 2.0]]];
        assert_eq!(mean_row_tau(&a, &b), 0.0);
        assert!(kendall_tau(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }
}
