//! # device — where the encoders run
//!
//! `device = "auto" | "cpu" | "cuda:N" | "mps"` (`[model]` for the ensemble's embedding and
//! the transformer, `[encoder_training]` for `train-encoder`). The default build runs
//! everything on burn's flex CPU backend; the `tch` build (libtorch) can also place the
//! encoders on a CUDA GPU or Apple's Metal (MPS). `auto` takes the first CUDA device, else
//! MPS, else the CPU. Asking for a device this build or machine does not have is a
//! configuration error, raised when the settings are read, before anything runs.
//!
//! `precision = "fp32" | "bf16" | "fp16"` (next to `device`) sets the float type of the
//! encoders' matrix products. `fp32` (the default) computes everything in single precision
//! and adds nothing to a stage's key. `bf16` and `fp16` are mixed precision as
//! libtorch's autocast does it: the projections, the feed-forward products (and, on
//! libtorch, attention's two products) read and multiply 16-bit numbers, while the
//! embeddings, residual sums, layer norms, softmax, GELU and pooling stay in fp32, and in
//! training the weights the optimiser updates stay fp32 (they are cast for each product, and
//! their gradients cast back).
//!
//! On the default build `bf16` embeds and scores with this crate's own bfloat16 kernel
//! ([`crate::bf16`]) on CPUs with AVX-512 BF16 (twice fp32's multiply-adds per cycle); it
//! does not train there (burn's CPU backend has no fast 16-bit products for the graph), and
//! on a CPU without the instruction it is a configuration error, as `fp16` is. The `tch`
//! build (libtorch) runs `bf16` on CUDA GPUs, Apple's MPS and on CPUs with AVX-512 BF16 or
//! AMX (oneDNN's kernels), and `fp16` on a GPU only — libtorch has no fast fp16 products on
//! the CPU.
//!
//! The choice is made in two steps so that it can be tested on any machine: [`DeviceChoice::place`]
//! decides from what [`Accelerators`] reports (pure logic), and [`Placement::device`] turns the
//! decision into a burn device of this build's backend.
use std::str::FromStr;

use burn::tensor::{Device, FloatDType};
use serde::{Deserialize, Serialize};

/// The `device` setting as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// The best device there is: CUDA 0, else MPS, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA GPU of this index.
    Cuda(usize),
    /// Apple's Metal Performance Shaders.
    Mps,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "mps" => Ok(DeviceChoice::Mps),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    format!("`{s}` is not a device; write \"auto\", \"cpu\", \"cuda:N\" or \"mps\"")
                }),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.pad("auto"),
            DeviceChoice::Cpu => f.pad("cpu"),
            DeviceChoice::Cuda(n) => f.pad(&format!("cuda:{n}")),
            DeviceChoice::Mps => f.pad("mps"),
        }
    }
}

/// The `precision` setting: the float type of the encoders' matrix products (see the module
/// doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Precision {
    /// Everything in single precision.
    #[default]
    Fp32,
    /// Products in bfloat16 (fp32's range, 8 bits of mantissa), the rest in fp32.
    Bf16,
    /// Products in IEEE half precision, the rest in fp32.
    Fp16,
}

impl Precision {
    /// The 16-bit type of the products, `None` for fp32.
    pub fn half(self) -> Option<FloatDType> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::Fp16 => Some(FloatDType::F16),
        }
    }

    /// Whether this is the default (single precision everywhere).
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// Whether the products can run at this precision where the encoder is placed; an error
    /// says why not and what to write instead.
    pub fn check(self, placed: Placement, there: Accelerators) -> Result<(), String> {
        match self {
            Precision::Fp32 => Ok(()),
            Precision::Bf16 if !there.gpu_build && there.bf16_cpu => Ok(()),
            Precision::Bf16 if !there.gpu_build => Err(
                "`bf16` on this build runs on CPUs with AVX-512 BF16, and this one has none (it would be slower than fp32); write \"fp32\", or build with libtorch (`cargo build --release --features tch`) for a GPU".into(),
            ),
            _ if !there.gpu_build => Err(format!(
                "`{self}` needs libtorch (`cargo build --release --features tch`): this build's CPU backend has no 16-bit matrix products faster than fp32; write \"fp32\""
            )),
            Precision::Fp16 if placed == Placement::Cpu => Err(
                "`fp16` runs on a GPU: libtorch has no fast fp16 products on the CPU; write \"bf16\" (fast on CPUs with AVX-512 BF16 or AMX) or \"fp32\"".into(),
            ),
            Precision::Bf16 | Precision::Fp16 => Ok(()),
        }
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "fp16" | "f16" | "float16" | "half" => Ok(Precision::Fp16),
            other => Err(format!(
                "`{other}` is not a precision; write \"fp32\", \"bf16\" or \"fp16\""
            )),
        }
    }
}

impl TryFrom<String> for Precision {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Precision> for String {
    fn from(p: Precision) -> String {
        p.to_string()
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        })
    }
}

impl Precision {
    /// Whether training can run at this precision: fp16's narrow range lets small gradients
    /// underflow to zero unless the loss is scaled, which training here does not do, so
    /// fp16 embeds but does not train (bf16 has fp32's range and needs no scaling).
    pub fn check_training(self) -> Result<(), String> {
        match self {
            Precision::Fp16 => Err(
                "precision: `fp16` embeds but does not train: its gradients underflow without loss scaling; write \"bf16\" (as fast on GPUs that have it) or \"fp32\"".into(),
            ),
            Precision::Bf16 if BF16_KERNEL => Err(
                "precision: `bf16` on this build embeds and scores but does not train (its CPU backend has no fast 16-bit products for training); write \"fp32\" here, or build with libtorch (`cargo build --release --features tch`)".into(),
            ),
            Precision::Fp32 | Precision::Bf16 => Ok(()),
        }
    }
}

/// Whether `bf16` runs on this crate's own bfloat16 kernel ([`crate::bf16`]): on the default
/// build; libtorch brings its own.
pub const BF16_KERNEL: bool = cfg!(not(feature = "tch"));

/// The burn device of `device` and the checked `precision` for it, or an error naming the
/// setting at fault.
pub fn place(device: DeviceChoice, precision: Precision) -> Result<(Device, Precision), String> {
    let there = Accelerators::detect();
    let placed = device.place(there).map_err(|e| format!("device: {e}"))?;
    precision
        .check(placed, there)
        .map_err(|e| format!("precision: {e}"))?;
    Ok((placed.device(), precision))
}

/// What this build and machine offer besides the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accelerators {
    /// Whether this build has a GPU-capable backend (the `tch` feature).
    pub gpu_build: bool,
    /// CUDA devices libtorch sees.
    pub cuda_devices: usize,
    /// Whether libtorch sees MPS.
    pub mps: bool,
    /// Whether the CPU runs the bfloat16 kernel (AVX-512 BF16).
    pub bf16_cpu: bool,
}

impl Accelerators {
    /// What this process can use.
    pub fn detect() -> Accelerators {
        #[cfg(feature = "tch")]
        {
            Accelerators {
                gpu_build: true,
                cuda_devices: tch::Cuda::device_count().max(0) as usize,
                mps: tch::utils::has_mps(),
                bf16_cpu: crate::bf16::available(),
            }
        }
        #[cfg(not(feature = "tch"))]
        {
            Accelerators {
                bf16_cpu: crate::bf16::available(),
                ..Accelerators::default()
            }
        }
    }
}

/// Where the encoder goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The CPU.
    Cpu,
    /// A CUDA GPU.
    Cuda(usize),
    /// Metal.
    Mps,
}

impl DeviceChoice {
    /// Decides where to run given what there is; an error says what is missing and what to
    /// write instead.
    pub fn place(self, there: Accelerators) -> Result<Placement, String> {
        let cpu_only = || {
            format!(
                "`{self}` needs the GPU build (`cargo build --release --features tch`, with a libtorch that has {}); this build runs on the CPU: write \"auto\" or \"cpu\"",
                if self == DeviceChoice::Mps {
                    "MPS"
                } else {
                    "CUDA"
                }
            )
        };
        match self {
            DeviceChoice::Cpu => Ok(Placement::Cpu),
            DeviceChoice::Auto if there.cuda_devices > 0 => Ok(Placement::Cuda(0)),
            DeviceChoice::Auto if there.mps => Ok(Placement::Mps),
            DeviceChoice::Auto => Ok(Placement::Cpu),
            DeviceChoice::Cuda(_) | DeviceChoice::Mps if !there.gpu_build => Err(cpu_only()),
            DeviceChoice::Cuda(n) if n < there.cuda_devices => Ok(Placement::Cuda(n)),
            DeviceChoice::Cuda(n) => Err(format!(
                "there is no CUDA device {n}: libtorch sees {} on this machine; write \"auto\", \"cpu\" or one of them",
                match there.cuda_devices {
                    0 => "none".to_string(),
                    1 => "one (cuda:0)".to_string(),
                    k => format!("{k} (cuda:0 … cuda:{})", k - 1),
                }
            )),
            DeviceChoice::Mps if there.mps => Ok(Placement::Mps),
            DeviceChoice::Mps => {
                Err("libtorch sees no MPS device on this machine; write \"auto\" or \"cpu\"".into())
            }
        }
    }

    /// The burn device for this setting on this machine.
    pub fn device(self) -> Result<Device, String> {
        Ok(self.place(Accelerators::detect())?.device())
    }
}

impl Placement {
    /// The burn device of this build's backend.
    pub fn device(self) -> Device {
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        {
            match self {
                Placement::Cpu => Device::libtorch(),
                Placement::Cuda(n) => Device::libtorch_cuda(n),
                Placement::Mps => Device::libtorch_mps(),
            }
        }
        #[cfg(not(feature = "tch"))]
        {
            // `place` never puts anything off the CPU in a CPU-only build.
            debug_assert_eq!(self, Placement::Cpu);
            Device::flex()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_and_write_back() {
        for s in ["auto", "cpu", "cuda:0", "cuda:3", "mps"] {
            let d: DeviceChoice = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("CUDA".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
        for bad in ["gpu", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("cuda:N"), "{e}");
        }
    }

    #[test]
    fn auto_takes_the_best_device_there_is() {
        let none = Accelerators::default();
        let two = Accelerators {
            gpu_build: true,
            cuda_devices: 2,
            mps: false,
            bf16_cpu: false,
        };
        let mac = Accelerators {
            gpu_build: true,
            cuda_devices: 0,
            mps: true,
            bf16_cpu: false,
        };
        assert_eq!(DeviceChoice::Auto.place(none), Ok(Placement::Cpu));
        assert_eq!(DeviceChoice::Auto.place(two), Ok(Placement::Cuda(0)));
        assert_eq!(DeviceChoice::Auto.place(mac), Ok(Placement::Mps));
        assert_eq!(DeviceChoice::Cpu.place(two), Ok(Placement::Cpu));
        assert_eq!(DeviceChoice::Cuda(1).place(two), Ok(Placement::Cuda(1)));
        assert_eq!(DeviceChoice::Mps.place(mac), Ok(Placement::Mps));
    }

    #[test]
    fn a_device_that_is_not_there_says_what_is() {
        let two = Accelerators {
            gpu_build: true,
            cuda_devices: 2,
            mps: false,
            bf16_cpu: false,
        };
        let e = DeviceChoice::Cuda(2).place(two).unwrap_err();
        assert!(
            e.contains("no CUDA device 2") && e.contains("cuda:1"),
            "{e}"
        );
        let e = DeviceChoice::Mps.place(two).unwrap_err();
        assert!(e.contains("no MPS"), "{e}");
        let e = DeviceChoice::Cuda(0)
            .place(Accelerators::default())
            .unwrap_err();
        assert!(e.contains("--features tch"), "{e}");
        // This machine: the CPU is always there.
        assert!(place(DeviceChoice::Cpu, Precision::Fp32).is_ok());
        assert!(DeviceChoice::Cpu.device().is_ok());
        assert!(DeviceChoice::Auto.device().is_ok());
    }

    #[test]
    fn precision_reads_and_writes_back() {
        for s in ["fp32", "bf16", "fp16"] {
            let p: Precision = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!("BFloat16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!(Precision::default(), Precision::Fp32);
        assert_eq!(Precision::Fp32.half(), None);
        assert_eq!(Precision::Fp16.half(), Some(FloatDType::F16));
        let e = "int8".parse::<Precision>().unwrap_err();
        assert!(e.contains("bf16"), "{e}");
        // bf16 trains on libtorch; the default build's kernel only embeds and scores.
        assert_eq!(Precision::Bf16.check_training().is_ok(), !BF16_KERNEL);
        let e = Precision::Fp16.check_training().unwrap_err();
        assert!(e.contains("loss scaling") && e.contains("bf16"), "{e}");
    }

    #[test]
    fn sixteen_bit_products_need_the_instruction_or_libtorch_and_fp16_a_gpu() {
        let cpu_build = Accelerators::default();
        let cpu_build_bf16 = Accelerators {
            bf16_cpu: true,
            ..cpu_build
        };
        let libtorch_cpu = Accelerators {
            gpu_build: true,
            cuda_devices: 0,
            mps: false,
            bf16_cpu: false,
        };
        let gpu = Accelerators {
            gpu_build: true,
            cuda_devices: 1,
            mps: false,
            bf16_cpu: false,
        };
        for there in [cpu_build, cpu_build_bf16, libtorch_cpu, gpu] {
            assert_eq!(Precision::Fp32.check(Placement::Cpu, there), Ok(()));
        }
        let e = Precision::Bf16
            .check(Placement::Cpu, cpu_build)
            .unwrap_err();
        assert!(e.contains("AVX-512 BF16") && e.contains("fp32"), "{e}");
        assert_eq!(
            Precision::Bf16.check(Placement::Cpu, cpu_build_bf16),
            Ok(())
        );
        let e = Precision::Fp16
            .check(Placement::Cpu, cpu_build_bf16)
            .unwrap_err();
        assert!(e.contains("--features tch") && e.contains("fp32"), "{e}");
        assert_eq!(Precision::Bf16.check(Placement::Cpu, libtorch_cpu), Ok(()));
        let e = Precision::Fp16
            .check(Placement::Cpu, libtorch_cpu)
            .unwrap_err();
        assert!(e.contains("GPU") && e.contains("bf16"), "{e}");
        assert_eq!(Precision::Fp16.check(Placement::Cuda(0), gpu), Ok(()));
        assert_eq!(Precision::Bf16.check(Placement::Mps, gpu), Ok(()));
        // On this build and machine: fp32 always places; bf16 on the CPU with libtorch or
        // the instruction, fp16 never on the CPU.
        let e = place(DeviceChoice::Cpu, Precision::Fp16).unwrap_err();
        assert!(e.starts_with("precision:"), "{e}");
        let there = Accelerators::detect();
        assert_eq!(
            place(DeviceChoice::Cpu, Precision::Bf16).is_ok(),
            there.gpu_build || there.bf16_cpu
        );
    }
}
