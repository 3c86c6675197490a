"""Is a pruned model really faster? Inference img/s with dense kernels vs a real sparse path.

``theoretical_speedup`` counts multiply-adds. This measures: each finalized model of an
experiment (its ``model.safetensors`` artifact) at batch sizes 1 and 128, once with the dense
kernels (zeros multiplied like any other value) and once with what PyTorch offers for
unstructured sparsity on this device: CSR sparse × dense matmul (``torch.sparse.mm``) for
Linear layers. PyTorch has no sparse convolution, so conv layers stay dense in both. On CUDA,
semi-structured 2:4 kernels exist but need a 2:4 pattern; magnitude masks are unstructured, so
they don't apply (reported). The table says per model and batch size whether sparse wins.

    python benchmarks/sparse_inference.py --experiment fashion-mnist-10ep
    # without an experiment: a randomly initialised model pruned to each sparsity
    python benchmarks/sparse_inference.py --model mlp --sparsity 0.9,0.98
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from benchsuite.models import build_model
from benchsuite.pruning.masks import achieved_sparsity, project_to_sparsity

SHAPES = {
    "digits": ((1, 8, 8), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "synthetic": ((1, 28, 28), 10),
}


class CSRLinear(nn.Module):
    """y = x Wᵀ + b with W stored as CSR: the real unstructured-sparse path for Linear on CPU."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sparse.mm(self.weight, x.reshape(-1, x.shape[-1]).t()).t()
        y = y.reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


def sparsify(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy with every Linear that has zeros replaced by a CSRLinear; returns the count."""
    import copy

    model = copy.deepcopy(model)
    replaced = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and bool((child.weight == 0).any()):
                setattr(module, child_name, CSRLinear(child))
                replaced += 1
    return model, replaced


@torch.no_grad()
def img_per_s(model: nn.Module, shape: tuple[int, ...], batch: int, seconds: float) -> float:
    x = torch.randn(batch, *shape)
    model.eval()
    for _ in range(3):
        model(x)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def models_from_experiment(uri: str, experiment: str, limit: int):
    from safetensors.torch import load_file

    from benchsuite.core.record import Artifacts, Kinds, Metrics, Params
    from benchsuite.store.tracking import Reader

    reader = Reader(uri)
    try:
        runs = reader.runs(experiment, "attributes.status = 'FINISHED'")
    except KeyError:
        raise SystemExit(f"error: no experiment {experiment!r} at {uri}") from None
    seen = set()
    for run in runs:
        p = run.params
        if run.kind != Kinds.RUN:
            continue
        key = (p[Params.METHOD], p.get(Params.VARIANT, ""), p[Params.TARGET_SPARSITY])
        if key in seen or len(seen) >= limit:
            continue
        seen.add(key)
        shape, classes = SHAPES[p[Params.DATASET]]
        model = build_model(p[Params.MODEL], classes, shape)
        with tempfile.TemporaryDirectory() as tmp:
            weights = load_file(reader.download(run.run_id, Artifacts.MODEL, Path(tmp)))
        model.load_state_dict(weights)
        variant = p.get(Params.VARIANT)
        label = p[Params.METHOD] + ("" if variant in ("", "default") else f"[{variant}]")
        yield (
            f"{label}@{p[Params.TARGET_SPARSITY]}",
            model,
            shape,
            run.metrics.get(Metrics.THEORETICAL_SPEEDUP),
        )


def synthetic_models(model_name: str, sparsities: list[float]):
    shape, classes = SHAPES["fashion-mnist"]
    for s in [0.0, *sparsities]:
        torch.manual_seed(0)
        model = build_model(model_name, classes, shape)
        project_to_sparsity(model, s)
        yield f"{model_name}@{s:g}", model, shape, None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--model", default="lenet5", help="without --experiment: model to prune")
    parser.add_argument("--sparsity", default="0.9,0.98", help="without --experiment")
    parser.add_argument("--limit", type=int, default=40, help="models at most")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per figure")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
    if args.experiment:
        source = models_from_experiment(args.tracking_uri, args.experiment, args.limit)
    else:
        source = synthetic_models(args.model, [float(s) for s in args.sparsity.split(",")])
    print(
        f"# sparse_inference: torch {torch.__version__}, CPU, {args.threads} threads; "
        "sparse path = CSR torch.sparse.mm for Linear layers (convs stay dense: no sparse conv)"
    )
    print("# CUDA 2:4 semi-structured kernels: not applicable, magnitude masks are unstructured")
    print(
        f"{'model':28} {'sparsity':>8} {'theor.':>7} {'batch':>5} {'dense img/s':>12} "
        f"{'sparse img/s':>12} {'sparse÷dense':>12}  verdict"
    )
    wins = 0
    for label, model, shape, speedup in source:
        sparse, replaced = sparsify(model)
        s = achieved_sparsity(model)
        theor = f"{speedup:.2f}×" if speedup else "—"
        for batch in (1, 128):
            dense_ips = img_per_s(model, shape, batch, args.seconds)
            sparse_ips = img_per_s(sparse, shape, batch, args.seconds) if replaced else dense_ips
            ratio = sparse_ips / dense_ips
            verdict = (
                "no sparse layer"
                if not replaced
                else (
                    "sparse faster"
                    if ratio > 1.05
                    else "no gain"
                    if ratio > 0.95
                    else "sparse slower"
                )
            )
            wins += verdict == "sparse faster"
            print(
                f"{label:28} {s:8.3f} {theor:>7} {batch:5d} {dense_ips:12.0f} {sparse_ips:12.0f} "
                f"{ratio:12.2f}  {verdict}"
            )
    print(f"\nsparse beat dense in {wins} measurement(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
