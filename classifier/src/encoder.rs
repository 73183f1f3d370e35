//! Pretrained BERT-, RoBERTa- and MPNet-family sentence encoders as burn modules, built from a
//! Hugging Face-style directory:
//!
//! | file | used for |
//! |---|---|
//! | `config.json` | shapes: `hidden_size`, `num_hidden_layers`, `num_attention_heads`, `intermediate_size`, `vocab_size`, `max_position_embeddings`, `type_vocab_size`, `layer_norm_eps`, `model_type`, `pad_token_id` |
//! | `model.safetensors` | weights, loaded with burn-store's `SafetensorsStore`, the PyTorch-to-burn adapter and the key map below |
//! | `tokenizer.json` | the `tokenizers` pipeline (its fixed padding is turned off: batches are padded to their longest row) |
//! | `1_Pooling/config.json` | optional (sentence-transformers): mean or CLS pooling |
//!
//! Key map from Hugging Face names to the module (`bert.`/`roberta.` prefixes are dropped):
//!
//! | Hugging Face | burn |
//! |---|---|
//! | `encoder.layer.N.` | `encoder.layers.N.` |
//! | `attention.self.{query,key,value}` | `mha.{query,key,value}` |
//! | `attention.output.dense` | `mha.output` |
//! | `attention.output.LayerNorm` | `norm_1` |
//! | `intermediate.dense` | `pwff.linear_inner` |
//! | `output.dense` | `pwff.linear_outer` |
//! | `output.LayerNorm` | `norm_2` |
//! | `embeddings.LayerNorm` | `embeddings.layer_norm` |
//!
//! MPNet (`model_type = "mpnet"`, e.g. all-mpnet-base-v2) names its attention
//! `attention.attn.{q,k,v,o}` with `attention.LayerNorm` after it (mapped to the same module
//! fields), has no segment embeddings, numbers positions as RoBERTa does, and adds to every
//! layer's attention scores a learned bias per head and bucket of relative distance
//! (`encoder.relative_attention_bias`, [`relative_bucket`]), shared by all layers. A saved
//! encoder goes back to its own family's names.
//!
//! Linear weights are transposed and LayerNorm `weight`/`bias` become `gamma`/`beta` by the
//! adapter. The layers are post-norm transformer layers built from burn's attention, linear
//! and LayerNorm modules, with an exact-erf GELU. A tensor the module
//! needs but the file lacks, or one of another shape, fails the load with its name.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{Bool, Device, FloatDType, Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::bf16::PackedLinear;
use crate::device::Precision;
use crate::error::Error;
use crate::model::device;

/// The fields of a Hugging Face `config.json` the encoder needs (others are ignored: the file
/// belongs to another tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// `bert`, `roberta`, `xlm-roberta`, …
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Position embeddings.
    pub max_position_embeddings: usize,
    /// Token type (segment) embeddings.
    #[serde(default = "one")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id (RoBERTa's positions start after it).
    #[serde(default)]
    pub pad_token_id: usize,
    /// Activation (only GELU is supported).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Buckets of relative distance with a learned attention bias (MPNet only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_attention_num_buckets: Option<usize>,
}

/// The architecture families the encoder reads, from `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT and its distillations (MiniLM): absolute positions from 0, segment embeddings.
    Bert,
    /// RoBERTa and XLM-R: positions start after the padding id.
    Roberta,
    /// MPNet: RoBERTa's positions, no segment embeddings, a relative position bias.
    Mpnet,
}

fn default_model_type() -> String {
    "bert".into()
}
fn one() -> usize {
    1
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl EncoderConfig {
    /// The architecture family.
    pub fn family(&self) -> Family {
        if self.model_type == "mpnet" {
            Family::Mpnet
        } else if self.model_type.contains("roberta") {
            Family::Roberta
        } else {
            Family::Bert
        }
    }

    /// Whether positions follow RoBERTa's convention (offset by the padding id + 1).
    pub fn roberta_positions(&self) -> bool {
        self.family() != Family::Bert
    }

    /// The first position id of a text.
    pub fn first_position(&self) -> i64 {
        if self.roberta_positions() {
            self.pad_token_id as i64 + 1
        } else {
            0
        }
    }
}

/// Largest distance MPNet's buckets tell apart; beyond it every distance shares the last
/// bucket of its sign.
const RELATIVE_MAX_DISTANCE: f32 = 128.0;

/// MPNet's bucket of the relative distance `to - from` of a key from its query: half the
/// buckets for keys before the query, half for keys after; within each half, distances
/// below a quarter of the buckets get a bucket each and longer ones share buckets spaced
/// logarithmically up to 128. Computed in f32 as the reference implementation does, so
/// the boundaries fall where its do.
pub fn relative_bucket(relative: i64, buckets: usize) -> usize {
    let half = buckets / 2;
    let n = -relative;
    let mut ret = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs() as usize;
    let exact = half / 2;
    if n < exact {
        ret += n;
    } else {
        let scaled = (n as f32 / exact as f32).ln() / (RELATIVE_MAX_DISTANCE / exact as f32).ln()
            * (half - exact) as f32;
        ret += (exact + scaled as usize).min(half - 1);
    }
    ret
}

/// Token, position and segment embeddings followed by a LayerNorm.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// `[vocab, hidden]`.
    pub word_embeddings: Embedding,
    /// `[positions, hidden]`.
    pub position_embeddings: Embedding,
    /// `[types, hidden]`; MPNet has none.
    pub token_type_embeddings: Option<Embedding>,
    /// Normalisation of their sum.
    pub layer_norm: LayerNorm,
}

/// The position-wise feed-forward block (field names as burn's, so the key map holds).
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `[hidden, intermediate]`.
    pub linear_inner: Linear,
    /// `[intermediate, hidden]`.
    pub linear_outer: Linear,
}

/// One post-norm transformer layer: `norm_1(x + mha(x))`, then `norm_2(x + ffn(x))` — burn's
/// `TransformerEncoderLayer` in post-norm mode, with the GELU computed by [`gelu_in_place`].
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Self-attention.
    pub mha: MultiHeadAttention,
    /// Feed-forward block.
    pub pwff: FeedForward,
    /// After attention.
    pub norm_1: LayerNorm,
    /// After the feed-forward block.
    pub norm_2: LayerNorm,
}

/// The layer stack.
#[derive(Module, Debug)]
pub struct EncoderStack {
    /// Layers in order.
    pub layers: Vec<EncoderLayer>,
    /// MPNet's attention bias `[buckets, heads]` per bucket of relative distance.
    pub relative_attention_bias: Option<Embedding>,
}

/// A BERT/RoBERTa/MPNet encoder (no pooler).
#[derive(Module, Debug)]
pub struct BertModel {
    /// Input embeddings.
    pub embeddings: Embeddings,
    /// The transformer layers.
    pub encoder: EncoderStack,
}

/// Exact-erf GELU, `0.5 x (1 + erf(x / sqrt 2))`, over a buffer in parallel. The erf is
/// Abramowitz & Stegun 7.1.26 (absolute error under 1.5e-7) with a polynomial exp, all plain
/// arithmetic that the compiler vectorises; the backend's element-wise erf called the scalar
/// `libm` routine and took a sixth of the encoder's time.
pub fn gelu_in_place(v: &mut [f32]) {
    v.par_chunks_mut(8192).for_each(gelu_chunk);
}

/// [`gelu_chunk_portable`] compiled for the widest vectors the CPU has. The binary targets
/// baseline x86-64, where the loop runs four lanes wide and `round` is a library call; with
/// AVX-512 or AVX2 it runs 16 or 8 lanes wide with `round` inline. Same operations in the
/// same order (nothing is fused into FMAs), so every width gives the same bits.
fn gelu_chunk(c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { gelu_chunk_avx512(c) };
            return;
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { gelu_chunk_avx2(c) };
            return;
        }
    }
    gelu_chunk_portable(c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_chunk_avx512(c: &mut [f32]) {
    gelu_chunk_portable(c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_chunk_avx2(c: &mut [f32]) {
    gelu_chunk_portable(c)
}

#[inline(always)]
fn gelu_chunk_portable(c: &mut [f32]) {
    for x in c.iter_mut() {
        let z = *x * std::f32::consts::FRAC_1_SQRT_2;
        let a = z.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
        let erf_abs = 1.0 - poly * exp_neg(a * a);
        let erf = if z < 0.0 { -erf_abs } else { erf_abs };
        *x = 0.5 * *x * (1.0 + erf);
    }
}

/// `exp(-y)` for `y >= 0` (relative error ~1e-7; 0 beyond 87): range reduction by powers of
/// two and a degree-6 polynomial.
#[inline(always)]
fn exp_neg(y: f32) -> f32 {
    let x = (-y).max(-87.0);
    let k = (x * std::f32::consts::LOG2_E).round();
    let r = x - k * std::f32::consts::LN_2;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// `linear(x)` with `x` and the result in the 16-bit type `half`: the weight is cast for the
/// product (a no-op when it already is 16-bit; in training the cast is in the graph, so the
/// gradient reaches the fp32 weight the optimiser updates).
fn linear_half(linear: &Linear, x: Tensor<3>, half: FloatDType) -> Tensor<3> {
    // burn's linear op, as `Linear::forward` uses: one product over all rows (and one for the
    // weight's gradient), not a product per batch entry against a broadcast weight.
    burn::tensor::module::linear(
        x,
        linear.weight.val().cast(half),
        linear.bias.as_ref().map(|b| b.val().cast(half)),
    )
}

/// `linear(x)` for fp32 `x`, the product in `half` when there is one; the result in fp32.
fn linear_at(linear: &Linear, x: Tensor<3>, half: Option<FloatDType>) -> Tensor<3> {
    match half {
        None => linear.forward(x),
        Some(t) => linear_half(linear, x.cast(t), t).cast(FloatDType::F32),
    }
}

/// Scaled dot-product attention of `q`, `k`, `v` `[texts, heads, len, dk]`, in the 16-bit
/// type `half` when there is one: the scores are taken to fp32 for the position bias
/// (`[1, heads, len, len]`, MPNet's), the mask and the softmax, the weights back to 16 bits
/// for the product with `v`.
fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    pad: Option<Tensor<2, Bool>>,
    bias: Option<Tensor<4>>,
    half: Option<FloatDType>,
) -> Tensor<4> {
    let [texts, _, _, dk] = q.dims();
    let mut scores = q.matmul(k.transpose()).div_scalar((dk as f32).sqrt());
    if half.is_some() {
        scores = scores.cast(FloatDType::F32);
    }
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    if let Some(pad) = pad {
        let [_, len] = pad.dims();
        // The value burn's attention gives padding, so every precision masks alike.
        scores = scores.mask_fill(pad.reshape([texts, 1, 1, len]), -1.0e4);
    }
    let weights = burn::tensor::activation::softmax(scores, 3);
    match half {
        Some(h) => weights.cast(h).matmul(v),
        None => weights.matmul(v),
    }
}

/// A layer's six linear products packed for the bfloat16 kernel ([`crate::bf16`]).
#[derive(Debug, Clone)]
pub struct PackedLayer {
    /// Query, key and value side by side: one product reads the input once.
    qkv: PackedLinear,
    output: PackedLinear,
    inner: PackedLinear,
    outer: PackedLinear,
}

impl PackedLayer {
    /// The layer's linear weights rounded to bfloat16 and packed.
    pub fn new(layer: &EncoderLayer) -> PackedLayer {
        let parts = |l: &Linear| {
            let [k, n] = l.weight.val().dims();
            let w = l.weight.val().into_data().convert::<f32>();
            let w = w.try_to_vec::<f32>().expect("fp32 weight");
            let b = match &l.bias {
                Some(b) => b
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec()
                    .expect("fp32 bias"),
                None => vec![0.0; n],
            };
            (w, b, k, n)
        };
        let pack = |l: &Linear| {
            let (w, b, k, n) = parts(l);
            PackedLinear::new(&w, k, n, Some(&b))
        };
        let (q, k, v) = (
            parts(&layer.mha.query),
            parts(&layer.mha.key),
            parts(&layer.mha.value),
        );
        let (rows, d) = (q.2, q.3);
        let mut w = Vec::with_capacity(rows * 3 * d);
        for r in 0..rows {
            for m in [&q, &k, &v] {
                w.extend_from_slice(&m.0[r * d..(r + 1) * d]);
            }
        }
        let b: Vec<f32> = [&q.1, &k.1, &v.1].into_iter().flatten().copied().collect();
        PackedLayer {
            qkv: PackedLinear::new(&w, rows, 3 * d, Some(&b)),
            output: pack(&layer.mha.output),
            inner: pack(&layer.pwff.linear_inner),
            outer: pack(&layer.pwff.linear_outer),
        }
    }
}

/// Query, key and value `[batch, len, d]` of `x` `[batch, len, d]` in one packed product.
fn packed_qkv(p: &PackedLinear, x: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
    let [b, len, d] = x.dims();
    let device = x.device();
    let data = x.into_data();
    let y = p.forward(data.as_slice::<f32>().expect("fp32 activations"), b * len);
    let mut parts = [
        Vec::with_capacity(b * len * d),
        Vec::with_capacity(b * len * d),
        Vec::with_capacity(b * len * d),
    ];
    for row in y.chunks_exact(3 * d) {
        for (part, v) in parts.iter_mut().zip(row.chunks_exact(d)) {
            part.extend_from_slice(v);
        }
    }
    let [q, k, v] = parts.map(|v| Tensor::from_data(TensorData::new(v, [b, len, d]), &device));
    (q, k, v)
}

/// `x` `[batch, len, k]` through a packed linear layer, in fp32 out.
fn packed_linear(p: &PackedLinear, x: Tensor<3>) -> Tensor<3> {
    let [b, len, _] = x.dims();
    let device = x.device();
    let data = x.into_data();
    let y = p.forward(data.as_slice::<f32>().expect("fp32 activations"), b * len);
    Tensor::from_data(TensorData::new(y, [b, len, p.n()]), &device)
}

/// How a layer's linear products run at inference.
#[derive(Clone, Copy)]
pub enum Products<'a> {
    /// burn's products at this precision (fp32, or 16-bit casts on libtorch).
    Burn(Precision),
    /// The bfloat16 kernel with the layer's packed weights.
    Bf16(&'a PackedLayer),
}

impl Products<'_> {
    /// The 16-bit type burn's products run in, if any.
    fn half(self) -> Option<FloatDType> {
        match self {
            Products::Burn(p) => p.half(),
            Products::Bf16(_) => None,
        }
    }

    /// `linear(x)` for fp32 `x`, fp32 out; `pick` chooses the packed twin of `linear`.
    fn linear(
        self,
        linear: &Linear,
        pick: fn(&PackedLayer) -> &PackedLinear,
        x: Tensor<3>,
    ) -> Tensor<3> {
        match self {
            Products::Bf16(p) => packed_linear(pick(p), x),
            Products::Burn(p) => linear_at(linear, x, p.half()),
        }
    }
}

impl EncoderLayer {
    /// The layer on hidden states `[batch, seq, hidden]` with padding mask (`true` = padding)
    /// and, for MPNet, the position bias of the stack ([`BertModel::position_bias`]), its
    /// products at `precision` (see [`crate::device`]). `differentiable` computes the GELU
    /// with burn's tracked op (for training) instead of the faster in-place arithmetic, which
    /// reads the values out of the graph.
    pub fn forward(
        &self,
        x: Tensor<3>,
        pad: Tensor<2, Bool>,
        bias: Option<Tensor<4>>,
        differentiable: bool,
        precision: Precision,
    ) -> Tensor<3> {
        if precision.is_fp32() && bias.is_none() {
            let att = self
                .mha
                .forward(MhaInput::self_attn(x.clone()).mask_pad(pad))
                .context;
            let x = self.norm_1.forward(x + att);
            return self.feed_forward(x, differentiable, Products::Burn(precision));
        }
        self.forward_by(x, pad, bias, differentiable, Products::Burn(precision))
    }

    /// [`EncoderLayer::forward`] at inference with the products run as `products` says.
    pub fn forward_with(
        &self,
        x: Tensor<3>,
        pad: Tensor<2, Bool>,
        bias: Option<Tensor<4>>,
        products: Products,
    ) -> Tensor<3> {
        match products {
            Products::Burn(p) => self.forward(x, pad, bias, false, p),
            Products::Bf16(_) => self.forward_by(x, pad, bias, false, products),
        }
    }

    /// The layer with its attention written out (burn's attention module runs its own
    /// products in fp32), the products as `products` says.
    fn forward_by(
        &self,
        x: Tensor<3>,
        pad: Tensor<2, Bool>,
        bias: Option<Tensor<4>>,
        differentiable: bool,
        products: Products,
    ) -> Tensor<3> {
        let [b, len, d] = x.dims();
        let heads = self.mha.n_heads;
        let half = products.half();
        let split = |m: Tensor<3>| m.reshape([b, len, heads, d / heads]).swap_dims(1, 2);
        let (q, k, v) = match (products, half) {
            (Products::Bf16(p), _) => packed_qkv(&p.qkv, x.clone()),
            (Products::Burn(_), Some(h)) => {
                let xh = x.clone().cast(h);
                (
                    linear_half(&self.mha.query, xh.clone(), h),
                    linear_half(&self.mha.key, xh.clone(), h),
                    linear_half(&self.mha.value, xh, h),
                )
            }
            (Products::Burn(_), None) => (
                self.mha.query.forward(x.clone()),
                self.mha.key.forward(x.clone()),
                self.mha.value.forward(x.clone()),
            ),
        };
        let context = attention(split(q), split(k), split(v), Some(pad), bias, half)
            .swap_dims(1, 2)
            .reshape([b, len, d]);
        // A 16-bit context is cast to its own type: a no-op.
        let att = products.linear(&self.mha.output, |p| &p.output, context);
        let x = self.norm_1.forward(x + att);
        self.feed_forward(x, differentiable, products)
    }

    /// The layer at inference on texts packed one after another into `x` `[1, tokens,
    /// hidden]`, in runs of texts of one length (`runs`: first token, texts, tokens per
    /// text). The projections, the feed-forward block and the norms run on all tokens at
    /// once — one read of the weights for every text; attention runs per run, each text on
    /// its own tokens, exactly as burn's attention computes an unpadded batch of that length.
    /// A token's result depends on its own text alone, never on the texts packed with it.
    /// `biases` holds each run's position bias (MPNet's, [`BertModel::position_bias`]), or
    /// is empty.
    ///
    /// The products run as `products` says (at a 16-bit precision as in
    /// [`EncoderLayer::forward`]).
    pub fn forward_packed(
        &self,
        x: Tensor<3>,
        runs: &[(usize, usize, usize)],
        biases: &[Option<Tensor<4>>],
        products: Products,
    ) -> Tensor<3> {
        let [_, _, d] = x.dims();
        let heads = self.mha.n_heads;
        let dk = d / heads;
        let half = products.half();
        let xh = half.map(|h| x.clone().cast(h));
        let project = |l: &Linear| match &xh {
            Some(xh) => linear_half(l, xh.clone(), half.expect("a 16-bit type")),
            None => l.forward(x.clone()),
        };
        let (q, k, v) = match products {
            Products::Bf16(p) => packed_qkv(&p.qkv, x.clone()),
            Products::Burn(_) => (
                project(&self.mha.query),
                project(&self.mha.key),
                project(&self.mha.value),
            ),
        };
        let mut parts: Vec<Tensor<3>> = runs
            .iter()
            .enumerate()
            .map(|(r, &(start, texts, len))| {
                let split = |m: &Tensor<3>| {
                    m.clone()
                        .slice([0..1, start..start + texts * len, 0..d])
                        .reshape([texts, len, heads, dk])
                        .swap_dims(1, 2)
                };
                let bias = biases.get(r).cloned().flatten();
                attention(split(&q), split(&k), split(&v), None, bias, half)
                    .swap_dims(1, 2)
                    .reshape([1, texts * len, d])
            })
            .collect();
        let context = if parts.len() == 1 {
            parts.pop().expect("one run")
        } else {
            Tensor::cat(parts, 1)
        };
        // A 16-bit context is cast to its own type: a no-op.
        let att = products.linear(&self.mha.output, |p| &p.output, context);
        let x = self.norm_1.forward(x + att);
        self.feed_forward(x, false, products)
    }

    /// `norm_2(x + ffn(x))`, the two products as `products` says, the GELU in fp32.
    fn feed_forward(&self, x: Tensor<3>, differentiable: bool, products: Products) -> Tensor<3> {
        let h = products.linear(&self.pwff.linear_inner, |p| &p.inner, x.clone());
        let h = if differentiable {
            burn::tensor::activation::gelu(h)
        } else {
            let device = h.device();
            // In the tensor's own buffer: a round trip through a `Vec` copied the activations
            // twice (out, and back in to meet the backend's alignment).
            let mut data = h.into_data();
            gelu_in_place(data.as_mut_slice::<f32>().expect("float activations"));
            Tensor::<3>::from_data(data, &device)
        };
        let y = products.linear(&self.pwff.linear_outer, |p| &p.outer, h);
        self.norm_2.forward(x + y)
    }
}

impl BertModel {
    /// A randomly initialised encoder of the given shape.
    pub fn init(cfg: &EncoderConfig, device: &Device) -> BertModel {
        let norm = || {
            LayerNormConfig::new(cfg.hidden_size)
                .with_epsilon(cfg.layer_norm_eps)
                .init(device)
        };
        BertModel {
            embeddings: Embeddings {
                word_embeddings: EmbeddingConfig::new(cfg.vocab_size, cfg.hidden_size).init(device),
                position_embeddings: EmbeddingConfig::new(
                    cfg.max_position_embeddings,
                    cfg.hidden_size,
                )
                .init(device),
                token_type_embeddings: (cfg.family() != Family::Mpnet).then(|| {
                    EmbeddingConfig::new(cfg.type_vocab_size, cfg.hidden_size).init(device)
                }),
                layer_norm: norm(),
            },
            encoder: EncoderStack {
                layers: (0..cfg.num_hidden_layers)
                    .map(|_| EncoderLayer {
                        mha: MultiHeadAttentionConfig::new(
                            cfg.hidden_size,
                            cfg.num_attention_heads,
                        )
                        .with_dropout(0.0)
                        .init(device),
                        pwff: FeedForward {
                            linear_inner: LinearConfig::new(cfg.hidden_size, cfg.intermediate_size)
                                .init(device),
                            linear_outer: LinearConfig::new(cfg.intermediate_size, cfg.hidden_size)
                                .init(device),
                        },
                        norm_1: norm(),
                        norm_2: norm(),
                    })
                    .collect(),
                relative_attention_bias: (cfg.family() == Family::Mpnet).then(|| {
                    EmbeddingConfig::new(
                        cfg.relative_attention_num_buckets.unwrap_or(32),
                        cfg.num_attention_heads,
                    )
                    .init(device)
                }),
            },
        }
    }

    /// [`BertModel::position_bias`] as a constant on `device`, for layers trained on top of
    /// this (frozen) stack: the bias stays as the base has it.
    pub fn position_bias_on(&self, len: usize, device: &Device) -> Option<Tensor<4>> {
        self.position_bias(len)
            .map(|b| Tensor::<4>::from_data(b.into_data(), device))
    }

    /// MPNet's attention bias `[1, heads, len, len]` for texts of `len` tokens (`None` for
    /// the other families): entry `(h, i, j)` is head `h`'s bias for the bucket of `j - i`.
    pub fn position_bias(&self, len: usize) -> Option<Tensor<4>> {
        let table = self.encoder.relative_attention_bias.as_ref()?;
        let [buckets, heads] = table.weight.dims();
        let ids: Vec<i64> = (0..len as i64)
            .flat_map(|i| (0..len as i64).map(move |j| relative_bucket(j - i, buckets) as i64))
            .collect();
        let device = table.weight.device();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, len * len]), &device);
        Some(
            table
                .forward(ids)
                .reshape([len, len, heads])
                .permute([2, 0, 1])
                .reshape([1, heads, len, len]),
        )
    }

    /// Hidden states `[batch, seq, hidden]` of token ids `[batch, seq]` with padding mask
    /// (`true` = padding) and positions, the products at `precision`.
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        pad: Tensor<2, Bool>,
        precision: Precision,
    ) -> Tensor<3> {
        let x = self.embed(ids, positions);
        self.layers(x, pad, 0..self.encoder.layers.len(), precision)
    }

    /// The embedding block: normalised sum of token, position and segment embeddings.
    pub fn embed(&self, ids: Tensor<2, Int>, positions: Tensor<2, Int>) -> Tensor<3> {
        let types = ids.zeros_like();
        self.embed_typed(ids, positions, types)
    }

    /// [`BertModel::embed`] with segment ids `[batch, seq]` (0 for a pair's first text, 1 for
    /// its second, as a cross-encoder reads them).
    pub fn embed_typed(
        &self,
        ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        types: Tensor<2, Int>,
    ) -> Tensor<3> {
        let e = self.embeddings.word_embeddings.forward(ids)
            + self.embeddings.position_embeddings.forward(positions);
        let e = match &self.embeddings.token_type_embeddings {
            Some(t) => e + t.forward(types),
            None => e,
        };
        self.embeddings.layer_norm.forward(e)
    }

    /// Runs the layers in `range` (inference path), the products at `precision`.
    pub fn layers(
        &self,
        mut x: Tensor<3>,
        pad: Tensor<2, Bool>,
        range: std::ops::Range<usize>,
        precision: Precision,
    ) -> Tensor<3> {
        let bias = self.position_bias(x.dims()[1]);
        for layer in &self.encoder.layers[range] {
            x = layer.forward(x, pad.clone(), bias.clone(), false, precision);
        }
        x
    }
}

/// The model inputs of one batch of token rows (see [`Encoder::batch`]).
pub struct Batch {
    /// Token ids `[batch, seq]`.
    pub ids: Tensor<2, Int>,
    /// Position ids `[batch, seq]`.
    pub positions: Tensor<2, Int>,
    /// `true` at padding `[batch, seq]`.
    pub pad: Tensor<2, Bool>,
    /// 1 at real tokens, 0 at padding `[batch, seq]`.
    pub keep: Tensor<2>,
}

/// A text pair's tokens (see [`Encoder::tokenize_pairs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairTokens {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment id of each token.
    pub types: Vec<u32>,
}

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean of the non-padding token states (sentence-transformers' default).
    Mean,
    /// The first token's state.
    Cls,
}

/// The files of an encoder directory.
pub const ENCODER_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// A loaded encoder: tokenizer + network.
pub struct Encoder {
    /// Shapes.
    pub config: EncoderConfig,
    /// Pooling.
    pub pooling: Pooling,
    /// Longest token sequence (longer texts are truncated).
    pub max_seq_length: usize,
    /// The directory it came from.
    pub dir: PathBuf,
    tokenizer: Tokenizer,
    model: BertModel,
    device: Device,
    precision: Precision,
    /// At a 16-bit precision, the network with its linear weights already cast, so that
    /// embedding does not cast them for every pass. Training uses `model` and casts the fp32
    /// weights it updates at each product instead.
    half: Option<BertModel>,
    /// At `bf16` on the CPU backend, each layer's linear weights packed for the bfloat16
    /// kernel (which then runs the products for embedding and scoring).
    packed: Option<Vec<PackedLayer>>,
}

/// `model` with the weights of its linear layers cast to `half` (norms, embeddings and
/// biases stay fp32).
fn cast_linears(model: &BertModel, half: FloatDType) -> BertModel {
    let cast = |l: &mut Linear| {
        l.weight = l.weight.clone().map(|w| w.cast(half));
    };
    let mut m = model.clone();
    for layer in &mut m.encoder.layers {
        cast(&mut layer.mha.query);
        cast(&mut layer.mha.key);
        cast(&mut layer.mha.value);
        cast(&mut layer.mha.output);
        cast(&mut layer.pwff.linear_inner);
        cast(&mut layer.pwff.linear_outer);
    }
    m
}

fn file_err(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The key remapping from Hugging Face tensor names to [`BertModel`]'s (see the module doc).
pub const KEY_MAP: [(&str, &str); 14] = [
    (r"^(bert|roberta|mpnet|model)\.", ""),
    (r"^encoder\.layer\.", "encoder.layers."),
    (r"\.attention\.self\.(query|key|value)\.", ".mha.$1."),
    (r"\.attention\.output\.dense\.", ".mha.output."),
    (r"\.attention\.output\.LayerNorm\.", ".norm_1."),
    (r"\.attention\.attn\.q\.", ".mha.query."),
    (r"\.attention\.attn\.k\.", ".mha.key."),
    (r"\.attention\.attn\.v\.", ".mha.value."),
    (r"\.attention\.attn\.o\.", ".mha.output."),
    (r"\.attention\.LayerNorm\.", ".norm_1."),
    (r"\.intermediate\.dense\.", ".pwff.linear_inner."),
    (r"(layers\.\d+)\.output\.dense\.", "$1.pwff.linear_outer."),
    (r"(layers\.\d+)\.output\.LayerNorm\.", "$1.norm_2."),
    (r"^embeddings\.LayerNorm\.", "embeddings.layer_norm."),
];

/// MPNet's names for what [`SAVE_KEY_MAP`] names as BERT's: attention and its norm.
const MPNET_SAVE_KEY_MAP: [(&str, &str); 3] = [
    (
        r"^encoder\.layers\.(\d+)\.mha\.(q|k|v)[a-z]*\.",
        "encoder.layer.$1.attention.attn.$2.",
    ),
    (
        r"^encoder\.layers\.(\d+)\.mha\.output\.",
        "encoder.layer.$1.attention.attn.o.",
    ),
    (
        r"^encoder\.layers\.(\d+)\.norm_1\.",
        "encoder.layer.$1.attention.LayerNorm.",
    ),
];

/// The names a saved encoder of `family` takes: the inverse of [`KEY_MAP`].
fn save_key_map(family: Family) -> Vec<(&'static str, &'static str)> {
    match family {
        Family::Mpnet => MPNET_SAVE_KEY_MAP
            .into_iter()
            .chain(SAVE_KEY_MAP[3..].iter().copied())
            .collect(),
        Family::Bert | Family::Roberta => SAVE_KEY_MAP.to_vec(),
    }
}

/// The inverse of [`KEY_MAP`]: burn's names back to Hugging Face BERT names, so a saved
/// encoder loads in sentence-transformers (and Hugging Face `transformers`) too.
pub const SAVE_KEY_MAP: [(&str, &str); 7] = [
    (
        r"^encoder\.layers\.(\d+)\.mha\.(query|key|value)\.",
        "encoder.layer.$1.attention.self.$2.",
    ),
    (
        r"^encoder\.layers\.(\d+)\.mha\.output\.",
        "encoder.layer.$1.attention.output.dense.",
    ),
    (
        r"^encoder\.layers\.(\d+)\.norm_1\.",
        "encoder.layer.$1.attention.output.LayerNorm.",
    ),
    (
        r"^encoder\.layers\.(\d+)\.pwff\.linear_inner\.",
        "encoder.layer.$1.intermediate.dense.",
    ),
    (
        r"^encoder\.layers\.(\d+)\.pwff\.linear_outer\.",
        "encoder.layer.$1.output.dense.",
    ),
    (
        r"^encoder\.layers\.(\d+)\.norm_2\.",
        "encoder.layer.$1.output.LayerNorm.",
    ),
    (r"^embeddings\.layer_norm\.", "embeddings.LayerNorm."),
];

/// Files of a sentence-transformers directory besides [`ENCODER_FILES`], copied when saving.
const SENTENCE_TRANSFORMERS_FILES: [&str; 4] = [
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "modules.json",
    "config_sentence_transformers.json",
];

impl Encoder {
    /// Loads an encoder directory (see the module doc). `max_seq_length` 0 takes the
    /// sentence-transformers setting if present, else 128. The encoder runs on the CPU.
    pub fn load(dir: &Path, max_seq_length: usize) -> Result<Encoder, Error> {
        Self::load_on(dir, max_seq_length, &device())
    }

    /// [`Encoder::load`] onto a chosen device (see [`crate::device`]).
    pub fn load_on(dir: &Path, max_seq_length: usize, device: &Device) -> Result<Encoder, Error> {
        if !dir.is_dir() {
            return Err(file_err(
                dir,
                "is not a directory; give an encoder directory with config.json, model.safetensors and tokenizer.json (run `isco-dag models fetch minilm`, or point to a Hugging Face model directory)",
            ));
        }
        for f in ENCODER_FILES {
            if !dir.join(f).is_file() {
                return Err(file_err(
                    &dir.join(f),
                    "is missing; an encoder directory needs config.json, model.safetensors and tokenizer.json (run `isco-dag models fetch minilm`, or point to a Hugging Face model directory)",
                ));
            }
        }
        let cfg_path = dir.join("config.json");
        let config: EncoderConfig = serde_json::from_slice(
            &std::fs::read(&cfg_path).map_err(|e| file_err(&cfg_path, e.to_string()))?,
        )
        .map_err(|e| {
            file_err(
                &cfg_path,
                format!("is not a BERT/RoBERTa/MPNet config: {e}"),
            )
        })?;
        if !config.hidden_act.starts_with("gelu") {
            return Err(file_err(
                &cfg_path,
                format!(
                    "uses activation `{}`; only GELU encoders (BERT, RoBERTa, MiniLM, MPNet) are supported",
                    config.hidden_act
                ),
            ));
        }
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads.max(1))
        {
            return Err(file_err(
                &cfg_path,
                "has a hidden_size that is not a multiple of num_attention_heads",
            ));
        }
        let pooling = read_pooling(dir)?;
        let max_seq_length = if max_seq_length > 0 {
            max_seq_length
        } else {
            read_st_max_len(dir).unwrap_or(128)
        }
        .min(
            config.max_position_embeddings
                - if config.roberta_positions() {
                    config.pad_token_id + 1
                } else {
                    0
                },
        );
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| file_err(&tok_path, format!("is not a tokenizers file: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| file_err(&tok_path, format!("rejects truncation: {e}")))?;
        let device = device.clone();
        let mut model = BertModel::init(&config, &device);
        let st = dir.join("model.safetensors");
        let mut store = SafetensorsStore::from_file(&st).with_from_adapter(PyTorchToBurnAdapter);
        for (from, to) in KEY_MAP {
            store = store.with_key_remapping(from, to);
        }
        // Tensors the encoder does not use (pooler, position_ids) are fine; missing or
        // mis-shaped ones are not.
        let mut store = store.allow_partial(true);
        let result = model
            .load_from(&mut store)
            .map_err(|e| file_err(&st, format!("could not be loaded: {e}")))?;
        if let Some(e) = result.errors.first() {
            return Err(file_err(
                &st,
                format!("does not fit config.json: {e}; is the config from the same model?"),
            ));
        }
        if let Some((path, _)) = result.missing.first() {
            return Err(file_err(
                &st,
                format!(
                    "has no tensor for `{path}` ({} missing in all); is it a BERT, RoBERTa or MPNet checkpoint?",
                    result.missing.len()
                ),
            ));
        }
        tracing::debug!(
            applied = result.applied.len(),
            unused = ?result.unused,
            "encoder weights loaded"
        );
        Ok(Encoder {
            config,
            pooling,
            max_seq_length,
            dir: dir.to_path_buf(),
            tokenizer,
            model,
            device,
            precision: Precision::Fp32,
            half: None,
            packed: None,
        })
    }

    /// Output width.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// Token ids of texts (with special tokens, truncated).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, Error> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Model(format!("the tokenizer failed: {e}")))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Token ids and segment ids of text pairs, encoded together (`[CLS] a [SEP] b [SEP]`,
    /// segments 0 then 1) and truncated to `max_seq_length` by taking tokens from the longer
    /// text first, as Hugging Face tokenizers do for a cross-encoder.
    pub fn tokenize_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<PairTokens>, Error> {
        let inputs: Vec<tokenizers::EncodeInput<'_>> =
            pairs.iter().map(|&(a, b)| (a, b).into()).collect();
        let enc = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| Error::Model(format!("the tokenizer failed on a text pair: {e}")))?;
        Ok(enc
            .into_iter()
            .map(|e| PairTokens {
                ids: e.get_ids().to_vec(),
                types: e.get_type_ids().to_vec(),
            })
            .collect())
    }

    /// Sentence vectors `[texts, dim]` (row-major), L2-normalised when `normalise`; the output
    /// is in input order. Up to `batch_size` texts, in order of token length, are packed one
    /// after another into one pass ([`EncoderLayer::forward_packed`]): no padding, and one read
    /// of the weights for all of them — at a few tokens a text, reading the weights is most of
    /// a pass, so a job's title and duty clauses cost one pass rather than one each.
    ///
    /// A text's vector depends on the text alone, never on the texts embedded with it, so
    /// coding a file in shards, or one job in the service, gives exactly the vectors of coding
    /// everything at once: a packed text gets the bits of an unpadded batch of its length,
    /// and the number of rows in a batch does not change a row's result. (A padded row's
    /// sums would run over more terms, which moves its vector in the last bits.)
    pub fn embed(
        &self,
        texts: &[&str],
        batch_size: usize,
        normalise: bool,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<f32>, Error> {
        let ids = self.tokenize(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let d = self.dim();
        let mut out = vec![0f32; texts.len() * d];
        let mut done = 0;
        // Full batches of one length make a pass each (one attention product per layer); the
        // rest — the few texts of most lengths, or a job's title and clauses — are packed
        // together. A few texts make one pass even with a core idle: split over both, each
        // pass would read all the weights again, and under load that costs more than it saves.
        let size = batch_size.max(1);
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut rest: Vec<usize> = Vec::new();
        for run in order.chunk_by(|&a, &b| ids[a].len() == ids[b].len()) {
            let full = run.len() / size * size;
            batches.extend(run[..full].chunks(size).map(<[usize]>::to_vec));
            rest.extend_from_slice(&run[full..]);
        }
        batches.extend(rest.chunks(size).map(<[usize]>::to_vec));
        let width = rayon::current_num_threads().max(1);
        // Batches run side by side, one per core: a forward pass over short sequences keeps
        // one core busy at most, so a second batch at once nearly doubles the throughput.
        for group in batches.chunks(width) {
            use rayon::prelude::*;
            let vectors: Vec<Vec<f32>> = group
                .par_iter()
                .map(|chunk| {
                    let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                    self.embed_packed(&rows, normalise)
                })
                .collect();
            for (chunk, v) in group.iter().zip(vectors) {
                for (k, &i) in chunk.iter().enumerate() {
                    out[i * d..(i + 1) * d].copy_from_slice(&v[k * d..(k + 1) * d]);
                }
                done += chunk.len();
            }
            progress(done);
        }
        Ok(out)
    }

    /// Sentence vectors of already tokenised rows, packed into one pass (see
    /// [`Encoder::embed`]). Each text's vector is bit for bit the one an unpadded batch of
    /// texts of its length gives.
    pub fn embed_packed(&self, rows: &[&[u32]], normalise: bool) -> Vec<f32> {
        let offset = self.config.first_position();
        let pad = [self.config.pad_token_id as u32];
        // A tokenised text always has its special tokens; an empty row still gets a slot (the
        // pad token) so every text has a vector.
        let rows: Vec<&[u32]> = rows
            .iter()
            .map(|r| if r.is_empty() { &pad[..] } else { *r })
            .collect();
        let mut runs = Vec::new();
        let mut start = 0;
        for run in rows.chunk_by(|a, b| a.len() == b.len()) {
            runs.push((start, run.len(), run[0].len()));
            start += run.len() * run[0].len();
        }
        let ids: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.iter().map(|&t| t as i64))
            .collect();
        let pos: Vec<i64> = rows
            .iter()
            .flat_map(|r| (0..r.len() as i64).map(|t| offset + t))
            .collect();
        let t = ids.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &self.device);
        let pos = Tensor::<2, Int>::from_data(TensorData::new(pos, [1, t]), &self.device);
        let model = self.half.as_ref().unwrap_or(&self.model);
        let mut x = model.embed(ids, pos);
        let biases: Vec<Option<Tensor<4>>> = runs
            .iter()
            .map(|&(_, _, len)| model.position_bias(len))
            .collect();
        for (i, layer) in model.encoder.layers.iter().enumerate() {
            x = layer.forward_packed(x, &runs, &biases, self.products(i));
        }
        let d = self.dim();
        let mut v = Vec::with_capacity(rows.len() * d);
        for &(start, texts, len) in &runs {
            let h = x
                .clone()
                .slice([0..1, start..start + texts * len, 0..d])
                .reshape([texts, len, d]);
            let keep = Tensor::<2>::ones([texts, len], &self.device);
            v.extend(
                self.pool(h, keep)
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("float embeddings"),
            );
        }
        if normalise {
            for row in v.chunks_mut(d) {
                let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|x| *x /= n);
            }
        }
        v
    }

    /// Sentence vectors of already tokenised rows (one padded batch, burn's tensor ops).
    pub fn embed_ids(&self, rows: &[&[u32]], normalise: bool) -> Vec<f32> {
        let batch = self.batch(rows, &self.device);
        let x = self
            .half
            .as_ref()
            .unwrap_or(&self.model)
            .embed(batch.ids, batch.positions);
        let h = self.layers(x, batch.pad);
        let d = self.dim();
        let mut v = self
            .pool(h, batch.keep)
            .into_data()
            .try_to_vec::<f32>()
            .expect("float embeddings");
        if normalise {
            for row in v.chunks_mut(d) {
                let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|x| *x /= n);
            }
        }
        v
    }

    /// The model inputs of token rows, padded to the longest, on `device`.
    pub fn batch(&self, rows: &[&[u32]], device: &Device) -> Batch {
        let b = rows.len();
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let pad_id = self.config.pad_token_id as i64;
        let offset = self.config.first_position();
        let mut ids = Vec::with_capacity(b * len);
        let mut pos = Vec::with_capacity(b * len);
        let mut pad = Vec::with_capacity(b * len);
        for r in rows {
            for t in 0..len {
                let real = t < r.len();
                ids.push(if real { r[t] as i64 } else { pad_id });
                pos.push(if real {
                    offset + t as i64
                } else {
                    pad_id.min(offset)
                });
                pad.push(!real);
            }
        }
        let keep: Vec<f32> = pad.iter().map(|&p| if p { 0.0 } else { 1.0 }).collect();
        Batch {
            ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, len]), device),
            positions: Tensor::<2, Int>::from_data(TensorData::new(pos, [b, len]), device),
            pad: Tensor::<2, Bool>::from_data(TensorData::new(pad, [b, len]), device),
            keep: Tensor::<2>::from_data(TensorData::new(keep, [b, len]), device),
        }
    }

    /// Segment ids `[batch, seq]` of token rows padded as [`Encoder::batch`] pads them
    /// (padding takes segment 0).
    pub fn segments(&self, types: &[&[u32]], device: &Device) -> Tensor<2, Int> {
        let b = types.len();
        let len = types.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut out = Vec::with_capacity(b * len);
        for r in types {
            out.extend(r.iter().map(|&t| t as i64));
            out.extend(std::iter::repeat_n(0i64, len - r.len()));
        }
        Tensor::<2, Int>::from_data(TensorData::new(out, [b, len]), device)
    }

    /// Pools hidden states `[batch, seq, hidden]` into sentence vectors `[batch, hidden]`
    /// (mean over the non-padding tokens, or the first token).
    pub fn pool(&self, h: Tensor<3>, keep: Tensor<2>) -> Tensor<2> {
        let [b, len, d] = h.dims();
        match self.pooling {
            Pooling::Cls => h.slice([0..b, 0..1, 0..d]).reshape([b, d]),
            Pooling::Mean => {
                let counts = keep.clone().sum_dim(1).clamp_min(1.0); // [b, 1]
                let summed = (h * keep.reshape([b, len, 1])).sum_dim(1).reshape([b, d]);
                summed / counts
            }
        }
    }

    /// The float type of the products (fp32 unless [`Encoder::set_precision`] set another).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Sets the float type of the products for embedding and training (see
    /// [`crate::device`]); the weights themselves stay as loaded, in fp32.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        self.half = None;
        self.packed = None;
        if precision == Precision::Bf16 && crate::device::BF16_KERNEL {
            self.packed = Some(
                self.model
                    .encoder
                    .layers
                    .iter()
                    .map(PackedLayer::new)
                    .collect(),
            );
        } else {
            self.half = precision.half().map(|t| cast_linears(&self.model, t));
        }
    }

    /// How layer `i`'s products run at inference.
    pub fn products(&self, i: usize) -> Products<'_> {
        match &self.packed {
            Some(p) => Products::Bf16(&p[i]),
            None => Products::Burn(self.precision),
        }
    }

    /// All layers at inference on hidden states `[batch, seq, hidden]` with padding mask
    /// (`true` = padding), the products as [`Encoder::set_precision`] set them.
    pub fn layers(&self, mut x: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<3> {
        let model = self.half.as_ref().unwrap_or(&self.model);
        let bias = model.position_bias(x.dims()[1]);
        for (i, layer) in model.encoder.layers.iter().enumerate() {
            x = layer.forward_with(x, pad.clone(), bias.clone(), self.products(i));
        }
        x
    }

    /// The network.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// Replaces the network (e.g. by a fine-tuned copy of the same shape).
    pub fn set_model(&mut self, model: BertModel) {
        self.model = model;
        self.set_precision(self.precision);
    }

    /// The device the network lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Writes the encoder as a directory in the standard layout, which [`load`](Self::load)
    /// and sentence-transformers read: the weights as `model.safetensors` (PyTorch layout,
    /// Hugging Face names), the configuration, tokenizer and sentence-transformers files
    /// copied from the directory it came from.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        self.save_transformer(dir)?;
        std::fs::create_dir_all(dir.join("1_Pooling")).map_err(|e| file_err(dir, e.to_string()))?;
        for f in &SENTENCE_TRANSFORMERS_FILES {
            let from = self.dir.join(f);
            if from.is_file() {
                let to = dir.join(f);
                std::fs::copy(&from, &to).map_err(|e| file_err(&to, e.to_string()))?;
            }
        }
        // A `Normalize` module listed in modules.json needs its (empty) directory.
        let normalize = self.dir.join("2_Normalize").is_dir();
        if normalize {
            std::fs::create_dir_all(dir.join("2_Normalize"))
                .map_err(|e| file_err(dir, e.to_string()))?;
        }
        // Without modules.json sentence-transformers guesses the modules (mean pooling); with
        // it, it reads the pooling this encoder was saved with.
        let modules = dir.join("modules.json");
        if !modules.is_file() {
            let mut list = vec![
                serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
                serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
            ];
            if normalize {
                list.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
            }
            let text = serde_json::to_vec_pretty(&list).expect("a JSON list serialises");
            std::fs::write(&modules, text).map_err(|e| file_err(&modules, e.to_string()))?;
        }
        let pooling = dir.join("1_Pooling").join("config.json");
        if !pooling.is_file() {
            let text = serde_json::to_vec_pretty(&serde_json::json!({
                "word_embedding_dimension": self.dim(),
                "pooling_mode_cls_token": self.pooling == Pooling::Cls,
                "pooling_mode_mean_tokens": self.pooling == Pooling::Mean,
            }))
            .expect("a JSON object serialises");
            std::fs::write(&pooling, text).map_err(|e| file_err(&pooling, e.to_string()))?;
        }
        Ok(())
    }

    /// The Hugging Face part of [`Encoder::save`]: `config.json`, `tokenizer.json` (and
    /// `vocab.txt`) copied, the weights written as `model.safetensors` with every tensor of
    /// the base file the module does not hold carried over.
    pub fn save_transformer(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e.to_string()))?;
        for f in ["config.json", "tokenizer.json", "vocab.txt"] {
            let from = self.dir.join(f);
            if from.is_file() {
                let to = dir.join(f);
                std::fs::copy(&from, &to).map_err(|e| file_err(&to, e.to_string()))?;
            }
        }
        let st = dir.join("model.safetensors");
        let mut store = SafetensorsStore::from_file(&st).with_to_adapter(BurnToPyTorchAdapter);
        for (from, to) in save_key_map(self.config.family()) {
            store = store.with_key_remapping(from, to);
        }
        self.model
            .save_into(&mut store)
            .map_err(|e| file_err(&st, format!("could not be written: {e}")))?;
        carry_unused_tensors(&self.dir.join("model.safetensors"), &st)
    }

    /// A fingerprint of the encoder's files (config, weights, tokenizer) and settings, so
    /// cached embeddings are reused only for the same encoder.
    pub fn fingerprint(&self) -> Result<String, Error> {
        let mut h = blake3::Hasher::new();
        for f in ENCODER_FILES {
            let p = self.dir.join(f);
            let mut file = std::fs::File::open(&p).map_err(|e| file_err(&p, e.to_string()))?;
            std::io::copy(&mut file, &mut h).map_err(|e| file_err(&p, e.to_string()))?;
        }
        // "unpadded": vectors from unpadded batches (or packed passes, which give the same
        // bits), whose last bits differ from those of vectors that older versions cached
        // from padded ones.
        h.update(format!("{:?}/{}/unpadded", self.pooling, self.max_seq_length).as_bytes());
        // 16-bit products give other vectors; fp32 adds nothing, so its vectors keep being
        // found under the plain fingerprint.
        if !self.precision.is_fp32() {
            h.update(format!("/{}", self.precision).as_bytes());
        }
        // The bfloat16 kernel rounds the inputs of its products, libtorch's keep other
        // operands in 16 bits: both are `bf16`, with other vectors.
        if self.packed.is_some() {
            h.update(b"/kernel");
        }
        Ok(h.finalize().to_hex()[..16].to_string())
    }
}

/// Adds to the saved weights `to` the tensors of the source weights `from` that the burn
/// model does not hold (BERT's pooler, the position-id buffer), unchanged, so a saved encoder
/// has every tensor its base had and loads in Hugging Face `transformers` without freshly
/// initialised parts. The burn store writes only the module's own parameters, hence the
/// second pass with the `safetensors` crate.
fn carry_unused_tensors(from: &Path, to: &Path) -> Result<(), Error> {
    let Ok(base) = std::fs::read(from) else {
        return Ok(());
    };
    let base = safetensors::SafeTensors::deserialize(&base)
        .map_err(|e| file_err(from, format!("is not a safetensors file: {e}")))?;
    let saved = std::fs::read(to).map_err(|e| file_err(to, e.to_string()))?;
    let saved_st = safetensors::SafeTensors::deserialize(&saved)
        .map_err(|e| file_err(to, format!("could not be read back: {e}")))?;
    let have: std::collections::HashSet<String> =
        saved_st.names().into_iter().map(str::to_string).collect();
    let missing: Vec<(String, safetensors::tensor::TensorView<'_>)> = base
        .tensors()
        .into_iter()
        .filter(|(name, _)| !have.contains(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        saved_st.tensors().into_iter().chain(missing).collect();
    safetensors::tensor::serialize_to_file(all, None, to)
        .map_err(|e| file_err(to, format!("could not be written: {e}")))
}

fn read_pooling(dir: &Path) -> Result<Pooling, Error> {
    let p = dir.join("1_Pooling").join("config.json");
    let Ok(bytes) = std::fs::read(&p) else {
        return Ok(Pooling::Mean);
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| file_err(&p, e.to_string()))?;
    if v["pooling_mode_cls_token"].as_bool() == Some(true) {
        Ok(Pooling::Cls)
    } else {
        Ok(Pooling::Mean)
    }
}

fn read_st_max_len(dir: &Path) -> Option<usize> {
    let bytes = std::fs::read(dir.join("sentence_bert_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["max_seq_length"].as_u64().map(|x| x as usize)
}

/// Writes a randomly initialised BERT encoder directory (config.json, model.safetensors with
/// Hugging Face tensor names, a WordPiece tokenizer.json over `words`) — the fixture the tests
/// and the demo use so no download is needed. The vectors are meaningless but deterministic.
pub fn write_random_encoder(
    dir: &Path,
    words: &[&str],
    hidden: usize,
    layers: usize,
    seed: u64,
) -> Result<(), Error> {
    write_random_family(dir, words, hidden, layers, seed, Family::Bert)
}

/// [`write_random_encoder`] for an architecture family: MPNet's fixture has its tensor names,
/// no segment embeddings and a relative position bias.
pub fn write_random_family(
    dir: &Path,
    words: &[&str],
    hidden: usize,
    layers: usize,
    seed: u64,
    family: Family,
) -> Result<(), Error> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;

    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e.to_string()))?;
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in 'a'..='z' {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    for w in words {
        let w = w.to_lowercase();
        if !vocab.contains(&w) {
            vocab.push(w);
        }
    }
    let heads = (hidden / 16).max(1);
    let mpnet = family == Family::Mpnet;
    let config = EncoderConfig {
        model_type: match family {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::Mpnet => "mpnet",
        }
        .into(),
        vocab_size: vocab.len(),
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: hidden * 4,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        hidden_act: "gelu".into(),
        relative_attention_num_buckets: mpnet.then_some(32),
    };
    let cfg_path = dir.join("config.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_vec_pretty(&config).expect("config serialises"),
    )
    .map_err(|e| file_err(&cfg_path, e.to_string()))?;

    let mut rng = crate::rng::Rng::new(seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut rand = |name: String, shape: Vec<usize>, scale: f64| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| ((rng.unit() * 2.0 - 1.0) * scale) as f32)
            .collect();
        (name, shape, v)
    };
    let (h, f) = (hidden, hidden * 4);
    tensors.push(rand(
        "embeddings.word_embeddings.weight".into(),
        vec![config.vocab_size, h],
        1.0,
    ));
    tensors.push(rand(
        "embeddings.position_embeddings.weight".into(),
        vec![64, h],
        0.1,
    ));
    if mpnet {
        tensors.push(rand(
            "encoder.relative_attention_bias.weight".into(),
            vec![32, heads],
            1.0,
        ));
    } else {
        tensors.push(rand(
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, h],
            0.1,
        ));
    }
    let attention: [&str; 5] = if mpnet {
        [
            "attention.attn.q",
            "attention.attn.k",
            "attention.attn.v",
            "attention.attn.o",
            "attention.LayerNorm",
        ]
    } else {
        [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
        ]
    };
    let mut norms = vec!["embeddings.LayerNorm".to_string()];
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for (name, o, i) in [
            (attention[0], h, h),
            (attention[1], h, h),
            (attention[2], h, h),
            (attention[3], h, h),
            ("intermediate.dense", f, h),
            ("output.dense", h, f),
        ] {
            let s = 1.0 / (i as f64).sqrt();
            tensors.push(rand(format!("{p}.{name}.weight"), vec![o, i], s));
            tensors.push(rand(format!("{p}.{name}.bias"), vec![o], 0.02));
        }
        norms.push(format!("{p}.{}", attention[4]));
        norms.push(format!("{p}.output.LayerNorm"));
    }
    for n in norms {
        tensors.push((format!("{n}.weight"), vec![h], vec![1.0; h]));
        tensors.push((format!("{n}.bias"), vec![h], vec![0.0; h]));
    }
    // Unused by the encoder, present in real checkpoints.
    tensors.push(rand("pooler.dense.weight".into(), vec![h, h], 0.1));
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .expect("consistent tensor"),
            )
        })
        .collect();
    let st = dir.join("model.safetensors");
    safetensors::tensor::serialize_to_file(views, None, &st)
        .map_err(|e| file_err(&st, e.to_string()))?;

    let vp = dir.join("vocab.txt");
    std::fs::write(&vp, vocab.join("\n") + "\n").map_err(|e| file_err(&vp, e.to_string()))?;
    let wp = WordPiece::from_file(&vp.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| Error::Model(format!("could not build the fixture tokenizer: {e}")))?;
    let mut tok = Tokenizer::new(wp);
    let _ = tok.with_normalizer(Some(BertNormalizer::default()));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    let tp = dir.join("tokenizer.json");
    tok.save(&tp, false)
        .map_err(|e| file_err(&tp, e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(dir: &Path) {
        write_random_encoder(dir, &["software", "engineer", "bus", "driver"], 32, 2, 7).unwrap();
    }

    #[test]
    fn loads_a_fixture_and_embeds_in_input_order() {
        let d = tempfile::tempdir().unwrap();
        fixture(d.path());
        let enc = Encoder::load(d.path(), 0).unwrap();
        assert_eq!(enc.dim(), 32);
        assert_eq!(enc.max_seq_length, 64);
        let texts = [
            "software engineer",
            "bus driver",
            "a much longer text about software",
        ];
        let v = enc.embed(&texts, 2, true, &|_| {}).unwrap();
        assert_eq!(v.len(), 3 * 32);
        for row in v.chunks(32) {
            let n: f32 = row.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4, "rows are normalised, got {n}");
        }
        // A sentence's vector does not depend on the texts embedded with it, to the bit.
        for (i, t) in texts.iter().enumerate() {
            let alone = enc.embed(&[t], 1, true, &|_| {}).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&alone), bits(&v[i * 32..(i + 1) * 32]), "{t}");
        }
        assert_ne!(v[..32], v[32..64]);
    }

    /// Every text of a pack has the bits it has alone (its own batch, no padding, through
    /// burn's attention); a padded batch differs in the last bits only; the order of the
    /// texts in a pack changes nothing — at fp32, and at bf16 on the kernel where this build
    /// has it.
    fn packs_as_alone(enc: &mut Encoder, texts: &[&str]) {
        let ids = enc.tokenize(texts).unwrap();
        let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let (d, n) = (enc.dim(), rows.len());
        let mut precisions = vec![Precision::Fp32];
        if crate::device::BF16_KERNEL {
            precisions.push(Precision::Bf16);
        }
        for precision in precisions {
            enc.set_precision(precision);
            let packed = enc.embed_packed(&rows, true);
            for (i, r) in rows.iter().enumerate() {
                assert_eq!(
                    enc.embed_ids(&[r], true),
                    &packed[i * d..(i + 1) * d],
                    "{precision}"
                );
            }
            let padded = enc.embed_ids(&rows, true);
            let worst = crate::max_abs_diff(&padded, &packed);
            assert!(
                worst < 1e-5,
                "{precision}: packed and padded differ by {worst}"
            );
            let reversed: Vec<&[u32]> = rows.iter().rev().copied().collect();
            let back = enc.embed_packed(&reversed, true);
            for (i, row) in packed.chunks(d).enumerate() {
                assert_eq!(row, &back[(n - 1 - i) * d..(n - i) * d], "{precision}");
            }
        }
        enc.set_precision(Precision::Fp32);
    }

    /// The fixture encoder, loaded (with the directory that holds it).
    fn loaded() -> (tempfile::TempDir, Encoder) {
        let d = tempfile::tempdir().unwrap();
        fixture(d.path());
        let enc = Encoder::load(d.path(), 0).unwrap();
        (d, enc)
    }

    #[test]
    fn packed_texts_embed_as_unpadded_batches_do() {
        let (_d, mut enc) = loaded();
        let texts = [
            "bus driver",
            "software engineer software engineer bus",
            "driver",
            "engineer bus",
            "a much longer text about software and a bus driver",
        ];
        packs_as_alone(&mut enc, &texts);
    }

    #[test]
    fn relative_buckets_follow_mpnet() {
        // Keys before the query take the lower half, keys after it the upper half; exact up
        // to 7 apart, logarithmic up to 128, then the last bucket of the half.
        let cases = [
            (0, 0),
            (-1, 1),
            (1, 17),
            (-7, 7),
            (-8, 8),
            (-16, 10),
            (16, 26),
            (-127, 15),
            (-128, 15),
            (-500, 15),
            (500, 31),
        ];
        for (relative, bucket) in cases {
            assert_eq!(relative_bucket(relative, 32), bucket, "{relative}");
        }
    }

    #[test]
    fn an_mpnet_encoder_loads_packs_and_saves_back() {
        let d = tempfile::tempdir().unwrap();
        let words = ["software", "engineer", "bus", "driver"];
        write_random_family(d.path(), &words, 32, 2, 11, Family::Mpnet).unwrap();
        let mut enc = Encoder::load(d.path(), 0).unwrap();
        assert_eq!(enc.config.family(), Family::Mpnet);
        assert!(enc.model.embeddings.token_type_embeddings.is_none());
        // The bias of head h between tokens i and j is the table's entry for j - i.
        let table = enc.model.encoder.relative_attention_bias.clone().unwrap();
        let table = table.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let heads = enc.config.num_attention_heads;
        let bias = enc.model.position_bias(5).unwrap();
        assert_eq!(bias.dims(), [1, heads, 5, 5]);
        let bias = bias.into_data().try_to_vec::<f32>().unwrap();
        for h in 0..heads {
            for i in 0..5 {
                for j in 0..5 {
                    let b = relative_bucket(j as i64 - i as i64, 32);
                    assert_eq!(bias[(h * 5 + i) * 5 + j], table[b * heads + h]);
                }
            }
        }
        let texts = ["bus driver", "software engineer bus", "driver", "engineer"];
        packs_as_alone(&mut enc, &texts);
        let before = enc.embed(&texts, 4, true, &|_| {}).unwrap();
        // Without the bias the vectors move: it is applied.
        let mut flat = enc.model.clone();
        flat.encoder.relative_attention_bias =
            flat.encoder.relative_attention_bias.map(|e| Embedding {
                weight: e.weight.map(|w| w.zeros_like()),
            });
        let mut unbiased = Encoder::load(d.path(), 0).unwrap();
        unbiased.set_model(flat);
        let without = unbiased.embed(&texts, 4, true, &|_| {}).unwrap();
        assert!(crate::max_abs_diff(&before, &without) > 1e-3);
        // Saved under MPNet's own names, and back with the same vectors.
        let out = tempfile::tempdir().unwrap();
        enc.save(out.path()).unwrap();
        let saved = std::fs::read(out.path().join("model.safetensors")).unwrap();
        let saved = safetensors::SafeTensors::deserialize(&saved).unwrap();
        let names: Vec<String> = saved.names().into_iter().map(str::to_string).collect();
        for name in [
            "encoder.layer.1.attention.attn.q.weight",
            "encoder.layer.1.attention.attn.o.bias",
            "encoder.layer.1.attention.LayerNorm.weight",
            "encoder.relative_attention_bias.weight",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("token_type") || n.contains(".self."))
        );
        let back = Encoder::load(out.path(), 0).unwrap();
        assert_eq!(back.embed(&texts, 4, true, &|_| {}).unwrap(), before);
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    }

    #[test]
    fn mixed_precision_embeds_close_to_fp32_under_its_own_fingerprint() {
        let (_d, mut enc) = loaded();
        let texts = [
            "bus driver",
            "software engineer software engineer bus",
            "a much longer text about software and a bus driver",
        ];
        let ids = enc.tokenize(&texts).unwrap();
        let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let full = enc.embed_packed(&rows, true);
        let fp32 = enc.fingerprint().unwrap();
        for precision in [Precision::Bf16, Precision::Fp16] {
            enc.set_precision(precision);
            assert_ne!(enc.fingerprint().unwrap(), fp32, "{precision}");
            let packed = enc.embed_packed(&rows, true);
            let padded = enc.embed_ids(&rows, true);
            // The products really ran in 16 bits: the vectors moved, but only a little.
            assert!(crate::max_abs_diff(&full, &packed) > 0.0, "{precision}");
            for (i, (a, b)) in full.chunks(32).zip(packed.chunks(32)).enumerate() {
                let c = cosine(a, b);
                assert!(c > 0.995, "{precision}: text {i} at cosine {c} from fp32");
            }
            // Weights cast once for embedding give the bits of casting the fp32 ones at each
            // product, as training does; the bfloat16 kernel rounds the products' inputs
            // alike, and keeps more bits elsewhere.
            let batch = enc.batch(&rows, enc.device());
            let h = enc
                .model()
                .forward(batch.ids, batch.positions, batch.pad, precision);
            let each_product = enc
                .pool(h, batch.keep)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let once = enc.embed_ids(&rows, false);
            if precision == Precision::Bf16 && crate::device::BF16_KERNEL {
                for (a, b) in each_product.chunks(32).zip(once.chunks(32)) {
                    assert!(cosine(a, b) > 0.999, "{precision}");
                }
            } else {
                assert_eq!(each_product, once, "{precision}");
            }
            // The padded path (with its mask) and the packed one agree at this precision.
            for (a, b) in padded.chunks(32).zip(packed.chunks(32)) {
                assert!(cosine(a, b) > 0.999, "{precision}");
            }
        }
        enc.set_precision(Precision::Fp32);
        assert_eq!(enc.fingerprint().unwrap(), fp32);
        assert_eq!(enc.embed_packed(&rows, true), full);
    }

    #[test]
    fn mixed_precision_training_updates_fp32_weights() {
        let d = tempfile::tempdir().unwrap();
        fixture(d.path());
        let enc = Encoder::load(d.path(), 0).unwrap();
        let ad = enc.device().clone().autodiff();
        let layer = enc.model().encoder.layers[0].clone().fork(&ad).train();
        let x = Tensor::<3>::random(
            [2, 5, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &ad,
        );
        let pad = Tensor::<2, Bool>::from_data(
            TensorData::new(
                vec![false; 7]
                    .into_iter()
                    .chain([true; 3])
                    .collect::<Vec<_>>(),
                [2, 5],
            ),
            &ad,
        );
        let grad = |precision: Precision| {
            let y = layer.forward(x.clone(), pad.clone(), None, true, precision);
            let loss = (y * x.clone()).sum();
            let grads = loss.backward();
            let w = &layer.pwff.linear_inner.weight;
            let g = w.val().grad(&grads).expect("the weight gets a gradient");
            assert_eq!(g.dtype(), burn::tensor::DType::F32, "{precision}");
            g.into_data().try_into_vec::<f32>().unwrap()
        };
        let full = grad(Precision::Fp32);
        let half = grad(Precision::Bf16);
        assert!(half.iter().all(|g| g.is_finite()));
        let c = cosine(&full, &half);
        assert!(
            c > 0.99,
            "the bf16 gradient is at cosine {c} from the fp32 one"
        );
        assert!(crate::max_abs_diff(&full, &half) > 0.0);
    }

    #[test]
    fn a_wrong_shape_names_the_tensor() {
        let d = tempfile::tempdir().unwrap();
        fixture(d.path());
        // Claim a wider feed-forward layer than the weights have.
        let p = d.path().join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        cfg["intermediate_size"] = 64.into();
        std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let err = Encoder::load(d.path(), 0).err().unwrap().to_string();
        assert!(err.contains("linear_inner"), "{err}");
        assert!(err.contains("model.safetensors"), "{err}");
    }

    #[test]
    fn a_missing_file_says_how_to_get_one() {
        let d = tempfile::tempdir().unwrap();
        let err = Encoder::load(d.path(), 0).err().unwrap().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(err.contains("models fetch minilm"), "{err}");
        // A directory that is not there is named, not its first file.
        let gone = d.path().join("all-MiniLM-L6-v2");
        let err = Encoder::load(&gone, 0).err().unwrap().to_string();
        assert!(
            err.contains("all-MiniLM-L6-v2") && err.contains("is not a directory"),
            "{err}"
        );
        assert!(err.contains("models fetch minilm"), "{err}");
    }
}

#[cfg(test)]
mod gelu_tests {
    #[test]
    fn gelu_matches_the_exact_formula() {
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 / 100.0).collect();
        let mut v = xs.clone();
        super::gelu_in_place(&mut v);
        for (x, g) in xs.iter().zip(&v) {
            let x64 = *x as f64;
            // erf through its series/continued fraction is not in std; use the identity with
            // the complementary error function computed by numerical integration.
            let erf = erf_reference(x64 / std::f64::consts::SQRT_2);
            let want = 0.5 * x64 * (1.0 + erf);
            assert!(
                (want - *g as f64).abs() < 2e-6,
                "gelu({x}) = {g}, want {want}"
            );
        }
    }

    #[test]
    fn every_vector_width_gives_the_same_bits() {
        // Every f32 step across the range where GELU is neither 0 nor x, plus the far tails.
        let mut xs: Vec<f32> = (-1_000_000..=1_000_000).map(|i| i as f32 * 1e-5).collect();
        xs.extend([
            -1e30, -100.0, -87.5, -13.0, 13.0, 87.5, 100.0, 1e30, 0.0, -0.0,
        ]);
        let mut want = xs.clone();
        super::gelu_chunk_portable(&mut want);
        let mut got = xs.clone();
        super::gelu_in_place(&mut got);
        for ((x, w), g) in xs.iter().zip(&want).zip(&got) {
            assert_eq!(w.to_bits(), g.to_bits(), "gelu({x}): {g} against {w}");
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let mut avx2 = xs.clone();
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { super::gelu_chunk_avx2(&mut avx2) };
            assert!(
                avx2.iter()
                    .zip(&want)
                    .all(|(a, w)| a.to_bits() == w.to_bits())
            );
        }
    }

    /// erf by Simpson integration of 2/sqrt(pi) exp(-t^2) (tests only).
    fn erf_reference(z: f64) -> f64 {
        let n = 4000;
        let h = z / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(z);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }
}
