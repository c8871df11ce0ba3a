//! Distribution metrics on feature vectors (the probe's penultimate features) and clip sets:
//! Fréchet distance, improved precision/recall (Kynkäänniemi et al., 2019), within-prompt
//! diversity, and attribute adherence. Pure Rust in f64; no tensors.

/// Mean and covariance (unbiased, `n − 1`) of a set of vectors.
pub fn mean_cov(x: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let n = x.len();
    assert!(n >= 2, "need at least two vectors for a covariance");
    let d = x[0].len();
    let mut mean = vec![0f64; d];
    for v in x {
        for (m, &a) in mean.iter_mut().zip(v) {
            *m += a as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0f64; d * d];
    for v in x {
        for i in 0..d {
            let a = v[i] as f64 - mean[i];
            for j in i..d {
                cov[i * d + j] += a * (v[j] as f64 - mean[j]);
            }
        }
    }
    for i in 0..d {
        for j in i..d {
            let c = cov[i * d + j] / (n - 1) as f64;
            cov[i * d + j] = c;
            cov[j * d + i] = c;
        }
    }
    (mean, cov)
}

/// Eigen-decomposition of a symmetric `d × d` matrix (cyclic Jacobi). Returns (eigenvalues,
/// eigenvectors as columns of a row-major `d × d` matrix).
pub fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        let scale: f64 = (0..d)
            .map(|i| a[i * d + i].powi(2))
            .sum::<f64>()
            .max(1e-300);
        if off <= 1e-22 * scale {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// Square root of a symmetric positive semi-definite matrix (negative eigenvalues from round-off
/// are clamped to 0).
pub fn sqrt_psd(a: &[f64], d: usize) -> Vec<f64> {
    let (w, v) = symmetric_eigen(a, d);
    let mut out = vec![0f64; d * d];
    for k in 0..d {
        let s = w[k].max(0.0).sqrt();
        for i in 0..d {
            let vik = v[i * d + k] * s;
            for j in 0..d {
                out[i * d + j] += vik * v[j * d + k];
            }
        }
    }
    out
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0f64; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                out[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    out
}

/// Fréchet distance between Gaussians fitted to two sets of vectors:
/// `|μa − μb|² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½)`.
pub fn frechet_distance(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let d = a[0].len();
    assert!(
        b.iter().chain(a).all(|v| v.len() == d),
        "feature widths differ"
    );
    let (ma, ca) = mean_cov(a);
    let (mb, cb) = mean_cov(b);
    let mean_term: f64 = ma.iter().zip(&mb).map(|(x, y)| (x - y).powi(2)).sum();
    let sa = sqrt_psd(&ca, d);
    let mid = matmul(&matmul(&sa, &cb, d), &sa, d);
    // Symmetrise against round-off before the square root.
    let mid: Vec<f64> = (0..d * d)
        .map(|k| 0.5 * (mid[k] + mid[(k % d) * d + k / d]))
        .collect();
    let cross = sqrt_psd(&mid, d);
    let tr = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    (mean_term + tr(&ca) + tr(&cb) - 2.0 * tr(&cross)).max(0.0)
}

fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum()
}

/// Squared distance of each vector to its `k`-th nearest neighbour in the same set.
fn knn_radii(x: &[Vec<f32>], k: usize) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, a)| {
            let mut d: Vec<f64> = x
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, b)| dist2(a, b))
                .collect();
            d.sort_by(|p, q| p.total_cmp(q));
            d[(k - 1).min(d.len() - 1)]
        })
        .collect()
}

/// Fraction of `query` vectors inside the k-NN manifold of `reference` (the union of balls
/// around each reference vector with radius its distance to its k-th nearest neighbour).
fn coverage(reference: &[Vec<f32>], query: &[Vec<f32>], k: usize) -> f64 {
    let radii = knn_radii(reference, k);
    let inside = query
        .iter()
        .filter(|q| {
            reference
                .iter()
                .zip(&radii)
                .any(|(r, &rad)| dist2(q, r) <= rad)
        })
        .count();
    inside as f64 / query.len() as f64
}

/// Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds:
/// precision = fraction of generated vectors inside the real manifold, recall = fraction of
/// real vectors inside the generated manifold. Returns `(precision, recall)`.
pub fn precision_recall(real: &[Vec<f32>], generated: &[Vec<f32>], k: usize) -> (f64, f64) {
    assert!(
        real.len() > k && generated.len() > k,
        "precision/recall need more than k = {k} vectors per set"
    );
    (coverage(real, generated, k), coverage(generated, real, k))
}

/// Mean pairwise root-mean-square distance between the members of each group (clips of one
/// prompt across seeds), averaged over groups with at least two members.
pub fn diversity(groups: &[Vec<Vec<f32>>]) -> f64 {
    let mut total = 0.0;
    let mut count = 0usize;
    for g in groups {
        if g.len() < 2 {
            continue;
        }
        let mut sum = 0.0;
        let mut pairs = 0usize;
        for i in 0..g.len() {
            for j in i + 1..g.len() {
                sum += (dist2(&g[i], &g[j]) / g[i].len() as f64).sqrt();
                pairs += 1;
            }
        }
        total += sum / pairs as f64;
        count += 1;
    }
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}

/// Per-head accuracy and the all-heads-correct rate of predictions against labels.
pub fn adherence(predicted: &[[usize; 5]], labels: &[[usize; 5]]) -> ([f64; 5], f64) {
    assert_eq!(predicted.len(), labels.len());
    let n = predicted.len().max(1) as f64;
    let mut per = [0f64; 5];
    let mut all = 0.0;
    for (p, l) in predicted.iter().zip(labels) {
        for h in 0..5 {
            if p[h] == l[h] {
                per[h] += 1.0;
            }
        }
        if p == l {
            all += 1.0;
        }
    }
    (per.map(|c| c / n), all / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn gaussian(n: usize, d: usize, mean: f32, scale: f32, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..d)
                    .map(|_| mean + scale * crate::flow::standard_normal(&mut rng))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn eigen_and_sqrt_reconstruct() {
        let a = vec![4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let s = sqrt_psd(&a, 3);
        let back = matmul(&s, &s, 3);
        for (x, y) in a.iter().zip(&back) {
            assert!((x - y).abs() < 1e-9, "{a:?} vs {back:?}");
        }
    }

    #[test]
    fn frechet_distance_known_values() {
        let a = gaussian(2000, 8, 0.0, 1.0, 1);
        assert!(frechet_distance(&a, &a) < 1e-6, "identical sets");
        // Shifted mean by 1 in each of 8 dims: FD ≈ 8; scaled by 2: tr(1 + 4 − 2·2) = 1 per dim.
        let shifted: Vec<Vec<f32>> = a
            .iter()
            .map(|v| v.iter().map(|x| x + 1.0).collect())
            .collect();
        let fd = frechet_distance(&a, &shifted);
        assert!((fd - 8.0).abs() < 1e-6, "{fd}");
        let b = gaussian(2000, 8, 0.0, 2.0, 2);
        let fd = frechet_distance(&a, &b);
        assert!((fd - 8.0).abs() < 0.8, "{fd}");
        let c = gaussian(2000, 8, 0.0, 1.0, 3);
        assert!(frechet_distance(&a, &c) < 0.1);
    }

    #[test]
    fn precision_recall_known_values() {
        let a = gaussian(300, 4, 0.0, 1.0, 1);
        let (p, r) = precision_recall(&a, &a, 3);
        assert_eq!((p, r), (1.0, 1.0));
        // Far away: nothing inside either manifold.
        let far = gaussian(300, 4, 50.0, 1.0, 2);
        assert_eq!(precision_recall(&a, &far, 3), (0.0, 0.0));
        // Collapsed generator at the real mean: high precision, recall ≈ 0.
        let collapsed = gaussian(300, 4, 0.0, 0.01, 3);
        let (p, r) = precision_recall(&a, &collapsed, 3);
        assert!(p > 0.95 && r < 0.05, "{p} {r}");
    }

    #[test]
    fn diversity_of_collapsed_sets_is_zero() {
        let same: Vec<Vec<Vec<f32>>> = (0..4).map(|i| vec![vec![i as f32; 10]; 5]).collect();
        assert_eq!(diversity(&same), 0.0);
        let spread: Vec<Vec<Vec<f32>>> = (0..4).map(|i| gaussian(5, 10, 0.0, 1.0, i)).collect();
        let d = diversity(&spread);
        assert!((d - 2f64.sqrt()).abs() < 0.3, "{d}");
    }

    #[test]
    fn adherence_of_shuffled_labels_is_chance() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let sizes = [4usize, 7, 2, 6, 4];
        let labels: Vec<[usize; 5]> = (0..20000)
            .map(|_| sizes.map(|n| rng.random_range(0..n)))
            .collect();
        assert_eq!(adherence(&labels, &labels), ([1.0; 5], 1.0));
        let mut shuffled = labels.clone();
        for i in (1..shuffled.len()).rev() {
            let j = rng.random_range(0..=i);
            shuffled.swap(i, j);
        }
        let (per, _) = adherence(&shuffled, &labels);
        for (acc, n) in per.iter().zip(sizes) {
            assert!(
                (acc - 1.0 / n as f64).abs() < 0.02,
                "{acc} vs chance {}",
                1.0 / n as f64
            );
        }
    }
}
