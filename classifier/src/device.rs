//! # device — where the encoders run
//!
//! `device = "auto" | "cpu" | "cuda:N" | "mps"` (`[model]` for the ensemble's embedding and
//! the transformer, `[encoder_training]` for `train-encoder`). The default build runs
//! everything on burn's flex CPU backend; the `tch` build (libtorch) can also place the
//! encoders on a CUDA GPU or Apple's Metal (MPS). `auto` takes the first CUDA device, else
//! MPS, else the CPU. Asking for a device this build or machine does not have is a
//! configuration error, raised when the settings are read, before anything runs.
//!
//! The choice is made in two steps so that it can be tested on any machine: [`DeviceChoice::place`]
//! decides from what [`Accelerators`] reports (pure logic), and [`Placement::device`] turns the
//! decision into a burn device of this build's backend.
use std::str::FromStr;

use burn::tensor::Device;
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
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Mps => f.write_str("mps"),
        }
    }
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
            }
        }
        #[cfg(not(feature = "tch"))]
        {
            Accelerators::default()
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
        };
        let mac = Accelerators {
            gpu_build: true,
            cuda_devices: 0,
            mps: true,
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
        assert!(DeviceChoice::Cpu.device().is_ok());
        assert!(DeviceChoice::Auto.device().is_ok());
    }
}
