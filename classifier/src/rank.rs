//! Ranking helpers shared by inference and search.

/// Indices of the `k` largest values, largest first (ties: lower index first), by one linear
/// scan (k is small).
pub fn top_k(s: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(s.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = Vec::with_capacity(k + 1);
    for (j, &v) in s.iter().enumerate() {
        if idx.len() < k || v > s[idx[k - 1]] {
            let pos = idx.partition_point(|&i| s[i] >= v);
            idx.insert(pos, j);
            idx.truncate(k);
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_ordered_and_stable_on_ties() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, 0.9, 0.0], 3), vec![3, 1, 2]);
        assert_eq!(top_k(&[0.3], 5), vec![0]);
        assert!(top_k(&[], 2).is_empty());
    }
}
