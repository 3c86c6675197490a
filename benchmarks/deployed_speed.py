"""Measured speedup of each sparsity pattern's deployable form against the dense model.

A randomly initialised model is projected (the harness's projection) to each target in each
pattern, its deployable form built (``benchsuite/pruning/deploy.py``) and timed against the
dense model with the protocol every run uses (``benchsuite/training/latency.py``: interleaved
rounds, the two models back to back, best of 3, the median of the per-round ratios), here with
more rounds. Values do not change a dense kernel's time, so trained weights are not needed.
Prints theoretical and measured speedups at batch 1 and the large batch; exits 1 when a target
is missed: unstructured within 10 % of 1.0× at the large batch (dense kernels on zeros), a
channel model at >= 75 % sparsity faster than dense at the large batch. N:M is timed only on a
CUDA GPU of compute capability >= 8.0 (elsewhere it prints why not).

    python benchmarks/deployed_speed.py --model lenet5 --sparsity 0.5,0.75,0.9 --rounds 15
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from benchsuite.models import build_model
from benchsuite.pruning.deploy import deployable
from benchsuite.pruning.flops import count_layers, theoretical_speedup
from benchsuite.pruning.patterns import NM, parse_pattern, project
from benchsuite.training import latency

SHAPES = {"lenet5": (1, 28, 28), "small-cnn": (1, 8, 8), "mlp": (1, 28, 28)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="lenet5", choices=sorted(SHAPES))
    parser.add_argument("--sparsity", default="0.5,0.75,0.9")
    parser.add_argument("--patterns", default="unstructured,channel,2:4")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = SHAPES[args.model]
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(args.batch, *shape, generator=gen)
    fmt = torch.channels_last if len(shape) == 3 else torch.contiguous_format
    torch.manual_seed(0)
    dense = build_model(args.model, 10, shape).to(device).to(memory_format=fmt).eval()
    example = torch.zeros(1, *shape, device=device)
    print(
        f"# deployed_speed: {args.model}, torch {torch.__version__}, {device}, "
        f"{args.threads} threads, batch 1 and {args.batch}, {args.rounds} rounds"
    )
    print(
        f"{'pattern':13} {'target':>6} {'sparsity':>8} {'theory':>7} {'b1':>6} {'large':>6}  form"
    )
    missed = []
    for text in args.patterns.split(","):
        pattern = parse_pattern(text)
        targets = [pattern.sparsity] if pattern.kind == NM else map(float, args.sparsity.split(","))
        for target in targets:
            model = copy.deepcopy(dense)
            project(model, target, pattern, example)
            layers = count_layers(model, example)
            theory = theoretical_speedup(layers) or float("nan")
            spars = sum(la.weights - la.nonzero for la in layers) / sum(la.weights for la in layers)
            form = deployable(model, pattern, device, example)
            if form.module is None:
                print(f"{text:13} {target:6.2f} {spars:8.4f} {theory:7.2f} {'n/a':>6} {'n/a':>6}"
                      f"  {form.unavailable}")  # fmt: skip
                continue
            deployed = form.module.to(device=device, dtype=form.dtype)
            if pattern.kind != NM:
                deployed = deployed.to(memory_format=fmt)
            base = dense.to(dtype=form.dtype)
            inputs = [t.to(device, form.dtype).contiguous(memory_format=fmt) for t in (xs[:1], xs)]
            one, many = latency.interleaved_latency(base, deployed, inputs, device, args.rounds)
            print(f"{text:13} {target:6.2f} {spars:8.4f} {theory:7.2f} {one.speedup:6.2f} "
                  f"{many.speedup:6.2f}  {form.form}")  # fmt: skip
            if pattern.kind == "unstructured" and abs(many.speedup - 1.0) > 0.1:
                missed.append(f"unstructured@{target:g}: {many.speedup:.2f}× (≈ 1.0 expected)")
            if pattern.kind == "channel" and target >= 0.75 and many.speedup <= 1.0:
                missed.append(f"channel@{target:g}: {many.speedup:.2f}× (> 1.0 expected)")
            dense = dense.to(dtype=torch.float32)
    if missed:
        print("\nmissed: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
