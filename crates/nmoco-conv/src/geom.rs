//! Shape and hyper-parameters of one 2-D convolution, shared by the CPU kernels
//! (`cpu_conv`) and the cuDNN plans (`cudnn`, `cuda_config`).

/// Shape and hyper-parameters of one 2-D convolution (no dilation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of the im2col matrix of one group (`cg · KH · KW`).
    pub fn kdim(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Whether the convolution is a plain matrix product (1×1, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.oh * self.ow
    }
    pub fn w_len(&self) -> usize {
        self.c_out * self.kdim()
    }
}
