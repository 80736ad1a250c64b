//! Training on the GPU backend, run by the CUDA emulator (`Gpu<Emu>`): the
//! training kernels put together into whole models. Every PyTorch gradient
//! golden within docs/models.md's tolerance; dropout (the same ChaCha8 masks as
//! the CPU) and several AdamW steps agreeing with the CPU backend; and the
//! same seed giving bit-identical weights whatever the emulator's schedule.

#[path = "common/grads.rs"]
mod grads;

use grads::{batch_for, check_golden, grads_of, rel_l2, small_configs, train_steps, GOLDEN_CASES, WEIGHTS};
use quorum::backend::gpu::{Emu, Gpu, Precision, ThreadOrder};
use quorum::train::TrainNet;
use quorum::Cpu;

#[test]
fn every_gradient_golden_matches_pytorch_on_the_emulator() {
    let gpu = Gpu::new(Emu::new());
    for name in GOLDEN_CASES {
        check_golden(&gpu, name, grads::F32);
    }
}

/// use_amp: the forward's matrix products in bf16 from the f32 master weights.
#[test]
fn mixed_precision_gradients_stay_near_pytorch_on_the_emulator() {
    let gpu = Gpu::with_precision(Emu::new(), Precision::Bf16).unwrap();
    let mut worst: f64 = 0.0;
    for name in GOLDEN_CASES {
        worst = worst.max(check_golden(&gpu, name, grads::BF16));
    }
    // bf16 really is in use: the gradients move off the f32 ones by more than f32 rounding.
    assert!(worst > grads::F32.grad, "bf16 gradients as close as f32's ({worst:e}): is the bf16 path running?");
}

#[test]
fn dropout_and_adamw_steps_agree_with_the_cpu() {
    let cpu = Cpu::new();
    let gpu = Gpu::new(Emu::new());
    for config in small_configs(0.2) {
        let kind = config.kind();
        // One step's gradients: the same masks, so the same gradients up to rounding.
        let batch = batch_for(&config, 3, 7);
        let mut a = TrainNet::init(&cpu, config.clone(), 3).unwrap();
        let mut b = TrainNet::init(&gpu, config.clone(), 3).unwrap();
        a.zero_grads(&cpu).unwrap();
        b.zero_grads(&gpu).unwrap();
        let la = a.forward_backward(&cpu, &batch, WEIGHTS, 5).unwrap();
        let lb = b.forward_backward(&gpu, &batch, WEIGHTS, 5).unwrap();
        assert!((la.loss - lb.loss).abs() <= 1e-5 * (1.0 + la.loss.abs()), "{kind}: loss {} vs {}", la.loss, lb.loss);
        for ((p, ga), gb) in a.params().iter().zip(grads_of(&cpu, &a)).zip(grads_of(&gpu, &b)) {
            let e = rel_l2(&gb, &ga);
            assert!(e <= 1e-4, "{kind}: {} gradient off the CPU's by {e:e}", p.name);
        }
        // Five optimizer steps later the weights still agree.
        let wa = train_steps(&cpu, &config, 5);
        let wb = train_steps(&gpu, &config, 5);
        for ((p, va), vb) in a.params().iter().zip(&wa).zip(&wb) {
            let e = rel_l2(vb, va);
            assert!(e <= 1e-4, "{kind}: {} after 5 steps off the CPU's by {e:e}", p.name);
        }
    }
}

#[test]
fn same_seed_same_bits_whatever_the_schedule() {
    for config in small_configs(0.2) {
        let kind = config.kind();
        let runs: Vec<Vec<Vec<f32>>> = [ThreadOrder::Forward, ThreadOrder::Reverse, ThreadOrder::Alternate]
            .into_iter()
            .map(|order| train_steps(&Gpu::new(Emu::with_order(order)), &config, 3))
            .collect();
        let bits = |w: &Vec<Vec<f32>>| w.iter().flatten().map(|v| v.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(&runs[0]), bits(&runs[1]), "{kind}: forward vs reverse thread order");
        assert_eq!(bits(&runs[0]), bits(&runs[2]), "{kind}: forward vs alternating thread order");
    }
}

/// The same on a real device, with `--features gpu-tests` on a machine with a GPU.
#[cfg(feature = "gpu-tests")]
mod on_gpu {
    use super::*;
    use quorum::backend::gpu::Cuda;

    fn gpu() -> Gpu<Cuda> {
        Gpu::new(Cuda::new(0).expect("gpu-tests need a CUDA device"))
    }

    #[test]
    fn every_gradient_golden_matches_pytorch_on_the_gpu() {
        let gpu = gpu();
        for name in GOLDEN_CASES {
            check_golden(&gpu, name, grads::F32);
        }
    }

    #[test]
    fn adamw_steps_agree_with_the_cpu_and_repeat_bit_for_bit() {
        let (cpu, gpu) = (Cpu::new(), gpu());
        for config in small_configs(0.2) {
            let kind = config.kind();
            let (wa, wb) = (train_steps(&cpu, &config, 5), train_steps(&gpu, &config, 5));
            for (va, vb) in wa.iter().zip(&wb) {
                let e = rel_l2(vb, va);
                assert!(e <= 1e-4, "{kind}: after 5 steps off the CPU's by {e:e}");
            }
            assert_eq!(wb, train_steps(&gpu, &config, 5), "{kind}: a second run gives the same bits");
        }
    }
}
