//! A small owned host tensor: a shape and row-major f32 data.
//!
//! This is the currency between the engine and its callers (CLI, server,
//! trainer); device memory lives in the backend's own buffer type.

use crate::error::{Error, Result};

/// An empty vector with room for `len` f32, or an error (naming `what`)
/// instead of aborting the process when the memory is not there: for
/// buffers whose size comes from a request (a training job's parameters,
/// activations and batches), so a job too large for the machine fails as a
/// job instead of taking the server down.
pub fn try_vec(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|e| {
        Error::input(what, format!("cannot allocate {len} floats ({} MiB): {e}", (len as u64).saturating_mul(4) >> 20))
    })?;
    Ok(v)
}

/// `len` zeros, allocated as [`try_vec`] does.
pub fn try_zeros(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = try_vec(len, what)?;
    v.resize(len, 0.0);
    Ok(v)
}

/// A copy of `data`, allocated as [`try_vec`] does.
pub fn try_copy(data: &[f32], what: &str) -> Result<Vec<f32>> {
    let mut v = try_vec(data.len(), what)?;
    v.extend_from_slice(data);
    Ok(v)
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::input(
                "tensor",
                format!("shape {shape:?} holds {n} values but {} were given", data.len()),
            ));
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor { shape, data: vec![0.0; n] }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Checks that this tensor, named `name`, has exactly `expected` shape.
    pub fn expect_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(Error::input(name, format!("expected shape {expected:?}, got {:?}", self.shape)));
        }
        Ok(())
    }

    /// Checks that every value is finite, naming the first offender.
    pub fn expect_finite(&self, name: &str) -> Result<()> {
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::input(name, format!("value {} at flat index {i} is not finite", self.data[i])));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_too_large_is_an_error_not_an_abort() {
        for len in [usize::MAX, usize::MAX / 4, 1 << 61] {
            let err = try_zeros(len, "lstm.weight_hh_l0").unwrap_err().to_string();
            assert!(err.contains("lstm.weight_hh_l0") && err.contains("cannot allocate"), "{err}");
        }
        assert_eq!(try_zeros(3, "x").unwrap(), vec![0.0; 3]);
        assert_eq!(try_copy(&[1.0, 2.0], "x").unwrap(), vec![1.0, 2.0]);
    }
}
