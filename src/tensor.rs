//! A small owned host tensor: a shape and row-major f32 data.
//!
//! This is the currency between the engine and its callers (CLI, server,
//! trainer); device memory lives in the backend's own buffer type.

use crate::error::{Error, Result};

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
