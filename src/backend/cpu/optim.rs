//! The optimizer's ops on the CPU: AdamW, the squared norm for global-norm
//! clipping, and filling (zeroing gradients). Plain loops: they are memory
//! bound and run once per optimizer step, not per micro-batch.

use rayon::prelude::*;

use super::{check_len, Cpu};
use crate::backend::{AdamWStep, Train};
use crate::error::Result;

/// One rayon task's slices of param, grad, m and v, as the zipped iterators yield them.
type Chunks<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a mut [f32]);

/// Elements per rayon task; below one chunk the loop stays on this thread.
const CHUNK: usize = 1 << 14;

impl Train for Cpu {
    fn adamw(
        &self,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        len: usize,
        s: AdamWStep,
    ) -> Result<()> {
        for (what, have) in [("param", param.len()), ("grad", grad.len()), ("m", m.len()), ("v", v.len())] {
            check_len("adamw", what, have, len)?;
        }
        let step = s.step.max(1) as i32;
        let c1 = 1.0 / (1.0 - s.beta1.powi(step));
        let c2 = 1.0 / (1.0 - s.beta2.powi(step));
        let update = |(((p, g), m), v): Chunks<'_>| {
            for i in 0..p.len() {
                let g = s.grad_scale * g[i];
                m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * g;
                v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * g * g;
                let step = (m[i] * c1) / ((v[i] * c2).sqrt() + s.eps);
                p[i] -= s.lr * (s.weight_decay * p[i] + step);
            }
        };
        param[..len]
            .par_chunks_mut(CHUNK)
            .zip(grad[..len].par_chunks(CHUNK))
            .zip(m[..len].par_chunks_mut(CHUNK))
            .zip(v[..len].par_chunks_mut(CHUNK))
            .for_each(update);
        Ok(())
    }

    fn sum_squares(&self, x: &Vec<f32>, len: usize) -> Result<f64> {
        check_len("sum_squares", "x", x.len(), len)?;
        // Chunk sums in a fixed order, so the result does not depend on scheduling.
        let partial: Vec<f64> =
            x[..len].par_chunks(CHUNK).map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum()).collect();
        Ok(partial.iter().sum())
    }

    fn fill(&self, x: &mut Vec<f32>, len: usize, value: f32) -> Result<()> {
        check_len("fill", "x", x.len(), len)?;
        x[..len].fill(value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AdamW written out in f64 for one element over several steps.
    fn reference(p0: f64, grads: &[f64], s: AdamWStep) -> f64 {
        let (b1, b2) = (f64::from(s.beta1), f64::from(s.beta2));
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (t, &g) in grads.iter().enumerate() {
            let g = f64::from(s.grad_scale) * g;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let t = t as i32 + 1;
            let (mh, vh) = (m / (1.0 - b1.powi(t)), v / (1.0 - b2.powi(t)));
            p -= f64::from(s.lr) * (f64::from(s.weight_decay) * p + mh / (vh.sqrt() + f64::from(s.eps)));
        }
        p
    }

    #[test]
    fn adamw_matches_the_formula_over_steps() {
        let n = 40_000; // more than two chunks
        let s0 =
            AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, step: 0, grad_scale: 0.5 };
        let p0: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) / 10.0).collect();
        let grad_at = |t: usize, i: usize| ((i * 7 + t * 13) % 31) as f32 / 7.0 - 2.0;
        let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
        for t in 0..3 {
            let g: Vec<f32> = (0..n).map(|i| grad_at(t, i)).collect();
            Cpu.adamw(&mut p, &g, &mut m, &mut v, n, AdamWStep { step: t as u32 + 1, ..s0 }).unwrap();
        }
        for i in [0, 1, 17, 16_384, n - 1] {
            let grads: Vec<f64> = (0..3).map(|t| f64::from(grad_at(t, i))).collect();
            let want = reference(f64::from(p0[i]), &grads, s0);
            assert!((f64::from(p[i]) - want).abs() < 1e-5, "element {i}: {} vs {want}", p[i]);
        }
    }

    #[test]
    fn sum_squares_and_fill() {
        let mut x: Vec<f32> = (0..50_000).map(|i| (i % 10) as f32).collect();
        let want: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
        assert_eq!(Cpu.sum_squares(&x, x.len()).unwrap(), want);
        Cpu.fill(&mut x, 10, 3.0).unwrap();
        assert_eq!(&x[..11], &[3.0; 10].iter().copied().chain([0.0]).collect::<Vec<_>>()[..]);
        assert!(Cpu.sum_squares(&x, 60_000).is_err(), "a short buffer is an error, not a panic");
    }
}
