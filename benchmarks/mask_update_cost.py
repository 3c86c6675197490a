"""SET's and RigL's step time ÷ dense on LeNet-5, their mask updates amortised at a real rate.

`step_overhead.py` runs a method's whole plan in a miniature of 80 steps, where SET and RigL
scale their update interval down to ~3 steps; in a real Fashion-MNIST run they update 31 times
in 4210 steps. So this script measures, interleaved in one process, the step without updates
(update_interval huge) and with an update every step, and spreads one update's measured cost
over the real rate. random and snip (masks fixed before step 0) and gmp are printed beside them.

    python benchmarks/mask_update_cost.py --threads 1 --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

import torch

from benchsuite.core.budget import Budget
from benchsuite.presets import load_preset
from benchsuite.training.loop import RunConfig
from benchsuite.training.throughput import interleaved_step_times

REAL_UPDATES, REAL_STEPS = 31, 4210  # fashion-mnist at 0.9: ΔT = 100 until T_end = 0.75·T
PLAN_STEPS, PLAN_UPDATES = 80, 59
DYNAMIC = ("set", "rigl")  # 10 epochs × 8 steps; with ΔT = 1, updates at steps 1..59


@dataclass
class Shape:
    num_classes: int
    input_shape: tuple[int, ...]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = load_preset("fashion-mnist").replace(epochs=10, batch_size=128)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(128, 1, 28, 28, generator=gen), torch.randint(0, 10, (128,), generator=gen))
        for _ in range(4)
    ]
    never, always = (("update_interval", "1000000"),), (("update_interval", "1"),)
    configs = {
        "dense": RunConfig(preset, "dense", 0.0, 0),
        "gmp": RunConfig(preset, "gmp", 0.9, 0),
        "random": RunConfig(preset, "random", 0.9, 0),
        "snip": RunConfig(preset, "snip", 0.9, 0),
        **{f"{m}/no-update": RunConfig(preset, m, 0.9, 0, hparams=never) for m in DYNAMIC},
        **{f"{m}/every-step": RunConfig(preset, m, 0.9, 0, hparams=always) for m in DYNAMIC},
    }
    times = dict(
        zip(
            configs,
            interleaved_step_times(
                list(configs.values()),
                Shape(10, (1, 28, 28)),
                Budget(10, 8),
                batches,
                421,
                rounds=args.rounds,
            ),
        )
    )
    dense = times["dense"]
    print(f"dense step {1000 * statistics.median(dense):.2f} ms (median of {args.rounds} rounds)")
    for name in ("gmp", "random", "snip"):
        print(f"{name:6} {statistics.median(t / d for t, d in zip(times[name], dense)):.3f}")
    for m in DYNAMIC:
        plain, every = times[f"{m}/no-update"], times[f"{m}/every-step"]
        update = [(e - n) * PLAN_STEPS / PLAN_UPDATES for e, n in zip(every, plain)]
        ratio = [(n + u * REAL_UPDATES / REAL_STEPS) / d for n, u, d in zip(plain, update, dense)]
        print(
            f"{m:6} {statistics.median(ratio):.3f}  (one mask update "
            f"{1000 * statistics.median(update):.2f} ms, amortised over {REAL_STEPS} steps)"
        )


if __name__ == "__main__":
    main()
