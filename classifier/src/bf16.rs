//! # bf16 — the encoders' linear products in bfloat16 on CPUs with AVX-512 BF16
//!
//! At `precision = "bf16"` on the default build, an encoder's six linear products per layer
//! (query, key, value, attention output, feed-forward in and out) run here; everything else
//! (embeddings, attention's own products, softmax, residual sums, layer norms, GELU, pooling)
//! stays in fp32 on burn. A product reads its input rounded to bfloat16 (round to nearest
//! even) and the weight rounded once when the encoder is set to `bf16`, multiplies pairs of
//! them exactly and sums in fp32 (`vdpbf16ps`), then adds the fp32 bias. That instruction does
//! twice the multiply-adds of an fp32 FMA per cycle, and the weights take half the memory.
//!
//! Written here because neither burn's CPU backend nor the matrix-product crates it builds on
//! have bfloat16 dot-product kernels (they convert 16-bit numbers to fp32 and multiply those,
//! which is slower than fp32 itself).
//!
//! Layout: the weight `[k, n]` is cut into panels of [`NR`] columns; within a panel, for each
//! pair of rows `(2q, 2q + 1)`, the 64 columns' two values sit side by side — one 64-byte load
//! per 16 columns feeds a `vdpbf16ps` with a broadcast input pair. A tile of up to [`MR`] input
//! rows × one panel keeps its 24 accumulators in registers across the whole `k`.
//!
//! On a CPU without AVX-512 BF16 the same arithmetic runs in portable code (products of
//! bfloat16 numbers are exact in fp32, so only the order of the sums can differ); asking for
//! `bf16` there is a configuration error ([`crate::device`]) because it would be slower than
//! fp32, so the portable path serves tests and the reference the kernel is checked against.

use std::mem::MaybeUninit;

/// Columns of a panel (four 16-lane registers).
pub const NR: usize = 64;
/// Input rows of a tile (6 × 4 accumulators + 4 weight registers + 1 broadcast fit the 32
/// vector registers).
pub const MR: usize = 6;

/// `x` rounded to bfloat16 (round to nearest, ties to even; NaN stays NaN).
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = ((b >> 16) & 1) + 0x7fff;
    ((b + round) >> 16) as u16
}

/// The fp32 value of a bfloat16 number.
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Whether this CPU runs the AVX-512 BF16 kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A linear layer's weight `[k, n]` in bfloat16, packed for the kernel, and its fp32 bias.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    k: usize,
    n: usize,
    /// Row pairs (`k` rounded up to even, halved).
    pairs: usize,
    panels: usize,
    data: Vec<u16>,
    bias: Vec<f32>,
}

impl PackedLinear {
    /// Packs a row-major weight `[k, n]` (`y = x · w + bias`) and its bias (`n` values, or
    /// none).
    pub fn new(weight: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> PackedLinear {
        assert_eq!(weight.len(), k * n, "weight is not k × n");
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u16; panels * pairs * NR * 2];
        for p in 0..panels {
            for q in 0..pairs {
                let at = (p * pairs + q) * NR * 2;
                for c in 0..NR.min(n - p * NR) {
                    let col = p * NR + c;
                    data[at + 2 * c] = to_bf16(weight[2 * q * n + col]);
                    if 2 * q + 1 < k {
                        data[at + 2 * c + 1] = to_bf16(weight[(2 * q + 1) * n + col]);
                    }
                }
            }
        }
        let bias = match bias {
            Some(b) => {
                assert_eq!(b.len(), n, "bias is not n long");
                b.to_vec()
            }
            None => vec![0.0; n],
        };
        PackedLinear {
            k,
            n,
            pairs,
            panels,
            data,
            bias,
        }
    }

    /// Input width.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output width.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `x · w + bias` for `x` row-major `[rows, k]`; the result is `[rows, n]`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.k, "input is not rows × k");
        #[cfg(target_arch = "x86_64")]
        if available() {
            let mut out: Vec<f32> = Vec::with_capacity(rows * self.n);
            // SAFETY: the CPU has AVX-512 F and BF16 (checked just above); the conversion and
            // the kernel read and write only inside `x`, `a`, `self.data`, `self.bias` and
            // the output's capacity, whose sizes they check. The kernel writes every one of
            // the `rows × n` results (each tile stores all its rows and columns), so the
            // output needs no zeroing first and is whole when its length is set.
            unsafe {
                let a = self.input_avx512(x, rows);
                self.run_avx512(&a, rows, &mut out.spare_capacity_mut()[..rows * self.n]);
                out.set_len(rows * self.n);
            }
            return out;
        }
        let mut out = vec![0f32; rows * self.n];
        let a = self.input(x, rows);
        self.run_portable(&a, rows, &mut out);
        self.add_bias(&mut out);
        out
    }

    /// The input rounded to bfloat16, each row padded to an even width, as the `u32` pairs
    /// the kernel broadcasts (low half: the even column).
    fn input(&self, x: &[f32], rows: usize) -> Vec<u32> {
        let mut a = vec![0u32; rows * self.pairs];
        for (r, row) in x.chunks_exact(self.k).enumerate().take(rows) {
            let out = &mut a[r * self.pairs..(r + 1) * self.pairs];
            for (q, pair) in row.chunks(2).enumerate() {
                let lo = to_bf16(pair[0]) as u32;
                let hi = pair.get(1).map_or(0, |&v| to_bf16(v) as u32);
                out[q] = lo | (hi << 16);
            }
        }
        a
    }

    /// [`PackedLinear::input`] 32 values at a time (`vcvtne2ps2bf16`, the same rounding).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BF16.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn input_avx512(&self, x: &[f32], rows: usize) -> Vec<u32> {
        use std::arch::x86_64::*;
        let mut a = vec![0u32; rows * self.pairs];
        for (r, row) in x.chunks_exact(self.k).enumerate().take(rows) {
            let out = &mut a[r * self.pairs..(r + 1) * self.pairs];
            let whole = self.k / 32;
            for (i, (src, dst)) in row
                .chunks_exact(32)
                .zip(out.chunks_exact_mut(16))
                .enumerate()
            {
                debug_assert!(i < whole);
                // SAFETY: `src` holds 32 floats and `dst` 16 pairs (64 bytes).
                unsafe {
                    let lo = _mm512_loadu_ps(src.as_ptr());
                    let hi = _mm512_loadu_ps(src.as_ptr().add(16));
                    let v = _mm512_cvtne2ps_pbh(hi, lo);
                    _mm512_storeu_si512(
                        dst.as_mut_ptr().cast(),
                        std::mem::transmute::<__m512bh, __m512i>(v),
                    );
                }
            }
            for (q, pair) in row[whole * 32..].chunks(2).enumerate() {
                let lo = to_bf16(pair[0]) as u32;
                let hi = pair.get(1).map_or(0, |&v| to_bf16(v) as u32);
                out[whole * 16 + q] = lo | (hi << 16);
            }
        }
        a
    }

    fn add_bias(&self, out: &mut [f32]) {
        for row in out.chunks_exact_mut(self.n) {
            for (y, b) in row.iter_mut().zip(&self.bias) {
                *y += b;
            }
        }
    }

    /// The same sums without the instruction: each pair's products exact in fp32, added to
    /// the running sum one after the other.
    fn run_portable(&self, a: &[u32], rows: usize, out: &mut [f32]) {
        for r in 0..rows {
            let ar = &a[r * self.pairs..(r + 1) * self.pairs];
            for p in 0..self.panels {
                let cols = NR.min(self.n - p * NR);
                let panel = &self.data[p * self.pairs * NR * 2..(p + 1) * self.pairs * NR * 2];
                let mut acc = [0f32; NR];
                for (q, &pair) in ar.iter().enumerate() {
                    let a0 = from_bf16(pair as u16);
                    let a1 = from_bf16((pair >> 16) as u16);
                    let w = &panel[q * NR * 2..(q + 1) * NR * 2];
                    for (c, s) in acc.iter_mut().enumerate() {
                        *s += a1 * from_bf16(w[2 * c + 1]) + a0 * from_bf16(w[2 * c]);
                    }
                }
                out[r * self.n + p * NR..r * self.n + p * NR + cols].copy_from_slice(&acc[..cols]);
            }
        }
    }

    /// Writes every one of the `rows × n` results into `out`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BF16; `a` is `rows × pairs`, `out` is `rows × n`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn run_avx512(&self, a: &[u32], rows: usize, out: &mut [MaybeUninit<f32>]) {
        assert!(a.len() >= rows * self.pairs && out.len() >= rows * self.n);
        for p in 0..self.panels {
            let cols = NR.min(self.n - p * NR);
            let panel = &self.data[p * self.pairs * NR * 2..(p + 1) * self.pairs * NR * 2];
            let mut r = 0;
            while r < rows {
                let m = (rows - r).min(MR);
                let tile = Tile {
                    a: &a[r * self.pairs..(r + m) * self.pairs],
                    w: panel,
                    bias: &self.bias[p * NR..p * NR + cols],
                    pairs: self.pairs,
                    out: &mut out[r * self.n + p * NR..],
                    ldc: self.n,
                    cols,
                };
                // SAFETY: the caller guarantees the CPU features; `tile` holds `m` rows of
                // input, the whole panel and the output from this tile's first element on.
                unsafe {
                    match m {
                        6 => tile.run::<6>(),
                        5 => tile.run::<5>(),
                        4 => tile.run::<4>(),
                        3 => tile.run::<3>(),
                        2 => tile.run::<2>(),
                        _ => tile.run::<1>(),
                    }
                }
                r += m;
            }
        }
    }
}

/// One tile's operands: `m` input rows, one weight panel, where its results go.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    a: &'a [u32],
    w: &'a [u16],
    /// The panel's `cols` biases, added as the results are stored.
    bias: &'a [f32],
    pairs: usize,
    out: &'a mut [MaybeUninit<f32>],
    ldc: usize,
    cols: usize,
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    /// # Safety
    /// The CPU must have AVX-512 F and BF16; `a` holds `M` rows of `pairs`, `w` a whole
    /// panel, `out` row `M - 1`'s `cols` results at `(M - 1) · ldc`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn run<const M: usize>(self) {
        use std::arch::x86_64::*;
        assert!(self.a.len() >= M * self.pairs && self.w.len() >= self.pairs * NR * 2);
        assert!(self.out.len() >= (M - 1) * self.ldc + self.cols && self.cols <= NR);
        assert!(self.bias.len() >= self.cols);
        let mut acc = [[_mm512_setzero_ps(); 4]; M];
        let a = self.a.as_ptr();
        let mut w = self.w.as_ptr();
        for q in 0..self.pairs {
            // SAFETY: `w` walks the panel 128 values per pair (asserted long enough), `a`
            // reads pair `q` of rows below `M` (asserted).
            unsafe {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.cast()));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(32).cast()));
                let b2: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(64).cast()));
                let b3: __m512bh = std::mem::transmute(_mm512_loadu_si512(w.add(96).cast()));
                w = w.add(128);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(r * self.pairs + q) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], x, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], x, b1);
                    acc[2] = _mm512_dpbf16_ps(acc[2], x, b2);
                    acc[3] = _mm512_dpbf16_ps(acc[3], x, b3);
                }
            }
        }
        let out: *mut f32 = self.out.as_mut_ptr().cast();
        for j in 0..4 {
            let from = j * 16;
            if from >= self.cols {
                break;
            }
            let left = self.cols - from;
            let mask = if left >= 16 {
                0xffff
            } else {
                ((1u32 << left) - 1) as __mmask16
            };
            // SAFETY: the bias has `cols` values (asserted); the mask stops at the last.
            let b = unsafe { _mm512_maskz_loadu_ps(mask, self.bias.as_ptr().add(from)) };
            for (r, acc) in acc.iter().enumerate() {
                // SAFETY: row `r < M` starts at `r · ldc` and has `cols` slots (asserted).
                unsafe {
                    let at = out.add(r * self.ldc + from);
                    _mm512_mask_storeu_ps(at, mask, _mm512_add_ps(acc[j], b));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::Rng::new(seed);
        (0..n).map(|_| rng.unit() as f32 - 0.5).collect()
    }

    /// The product of the bfloat16-rounded operands in f64.
    fn reference(x: &[f32], w: &[f32], b: &[f32], rows: usize, k: usize, n: usize) -> Vec<f64> {
        let r = |v: f32| from_bf16(to_bf16(v)) as f64;
        let mut out = vec![0f64; rows * n];
        for i in 0..rows {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|t| r(x[i * k + t]) * r(w[t * n + j]))
                    .sum::<f64>()
                    + b[j] as f64;
            }
        }
        out
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and the next bfloat16: ties go to the even one.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn products_match_the_rounded_operands_at_every_edge() {
        // Odd widths, a partial panel and partial tiles of every height.
        for &(rows, k, n) in &[(1, 3, 5), (7, 33, 70), (13, 64, 64), (6, 384, 130)] {
            let x = numbers(rows * k, 1);
            let w = numbers(k * n, 2);
            let b = numbers(n, 3);
            let p = PackedLinear::new(&w, k, n, Some(&b));
            let want = reference(&x, &w, &b, rows, k, n);
            let got = p.forward(&x, rows);
            let mut portable = vec![0f32; rows * n];
            p.run_portable(&p.input(&x, rows), rows, &mut portable);
            p.add_bias(&mut portable);
            for ((g, q), w) in got.iter().zip(&portable).zip(&want) {
                let tol = 1e-5 * (1.0 + w.abs()) * (k as f64).sqrt();
                assert!((*g as f64 - w).abs() < tol, "{rows}×{k}×{n}: {g} vs {w}");
                assert!((*q as f64 - w).abs() < tol, "{rows}×{k}×{n}: {q} vs {w}");
            }
        }
    }

    #[test]
    fn a_row_does_not_depend_on_the_rows_beside_it() {
        let (k, n) = (40, 96);
        let w = numbers(k * n, 4);
        let p = PackedLinear::new(&w, k, n, None);
        let x = numbers(11 * k, 5);
        let all = p.forward(&x, 11);
        for r in [0, 5, 6, 10] {
            let one = p.forward(&x[r * k..(r + 1) * k], 1);
            assert_eq!(one, &all[r * n..(r + 1) * n]);
        }
    }
}
