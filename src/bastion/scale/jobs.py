"""The sharded jobs and how their pieces are merged back into the local result objects."""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.errors import InputError
from bastion.scale.backend import Backend, ModelSpec
from bastion.scale.sharding import BLOCK, blocks, derive_seed, split

#: progress of a sharded evaluation: (what, shards done, shards in total), as bastion.assess.evaluate's
Progress = Callable[[str, int, int], None]


# --- jobs run on a worker -------------------------------------------------------------------------------
def _evaluate_block(model: Any, x: Tensor, y: Tensor, start: int, seed: int, kwargs: dict[str, Any]) -> Any:
    from bastion.assess import evaluate

    return evaluate(model, x, y, seed=derive_seed(seed, start), **kwargs)


def _certify_examples(model: Any, x: Tensor, start: int, seed: int, sigma: float, n0: int, n: int, alpha: float,
                      batch_size: int, precision: str) -> tuple[list[Any], list[str]]:
    from bastion.certify import Smoothed

    smoothed = Smoothed(model, sigma, batch_size=batch_size, precision=precision)
    out = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(x.shape[0]):
            # one noise stream per example, seeded by its index: the same draws on any worker
            smoothed.seed = derive_seed(seed, start + i)
            out.append(smoothed.certify(x[i:i + 1], n0=n0, n=n, alpha=alpha))
    return out, sorted({str(w.message) for w in caught})


def _scan_files(_model: Any, files: list[str], policy: Any) -> Any:
    from bastion.scan import scan_paths

    return scan_paths(files, policy)


JOBS: dict[str, Callable[..., Any]] = {"evaluate": _evaluate_block, "certify": _certify_examples,
                                       "scan": _scan_files}
NEEDS_MODEL = {"evaluate", "certify"}


# --- evaluation -----------------------------------------------------------------------------------------
def evaluate_sharded(backend: Backend, spec: ModelSpec, x: Tensor, y: Tensor, *, seed: int = 0,
                     checks: bool = True, keep_examples: int = 16, block: int = BLOCK,
                     progress: Progress | None = None, **kwargs: Any) -> Any:
    """:func:`bastion.evaluate` over blocks of ``block`` examples; one merged EvaluationResult.

    The masking checks run with the first block (they look at a seeded subsample of at most 48 examples,
    fewer than a block holds). Other keyword arguments go to :func:`bastion.evaluate` unchanged.
    """
    if "threat" in kwargs:
        raise InputError("threat", kwargs["threat"], "norm= and epsilons= (the sharded evaluation takes no ThreatModel)")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise InputError("x, y", "mismatched or empty data", "tensors with one label per input, at least one")
    t0 = time.perf_counter()
    parts = blocks(int(x.shape[0]), block)
    payloads = [{"x": x[a:b].contiguous(), "y": y[a:b].contiguous(), "start": a, "seed": seed,
                 "kwargs": {**kwargs, "checks": checks and k == 0, "keep_examples": keep_examples}}
                for k, (a, b) in enumerate(parts)]

    def on_shard(done: int, total: int) -> None:
        if progress is not None:
            progress(f"{done}/{total} shards on {backend.workers} {backend.name} worker(s)", done, total)

    on_shard(0, len(parts))
    results = backend.map(spec, "evaluate", payloads, on_shard)
    merged = merge_evaluations(results, [a for a, _ in parts], keep_examples)
    merged.timings["total"] = time.perf_counter() - t0
    merged.settings["seed"] = seed
    merged.settings["sharding"] = {**backend.describe(), "block": block, "shards": len(parts),
                                   "block_seeds": "sha256(seed, index of the block's first example)",
                                   "masking_checks_on": "the first block" if checks else None}
    return merged


def merge_evaluations(results: Sequence[Any], starts: Sequence[int], keep_examples: int) -> Any:
    """One EvaluationResult from per-block ones (blocks in order; ``starts`` their first example)."""
    from bastion.assess.result import AttackStats, EvaluationResult

    first = results[0]
    sizes = [r.n_examples for r in results]
    n = sum(sizes)
    randomised = any(r.settings.get("randomised") for r in results)
    if randomised:  # accuracies are expectations over draws: weight each block's by its size
        clean = sum(r.clean_accuracy * s for r, s in zip(results, sizes, strict=True)) / n
        robust = [sum(r.robust_accuracy[i] * s for r, s in zip(results, sizes, strict=True)) / n
                  for i in range(len(first.epsilons))]
    else:  # counts, exactly as the unsharded evaluation divides them
        clean = sum(int(r.correct.sum()) for r in results) / n
        robust = [sum(round(r.robust_accuracy[i] * s) for r, s in zip(results, sizes, strict=True)) / n
                  for i in range(len(first.epsilons))]
    stats: dict[str, AttackStats] = {}
    for r in results:
        for a in r.attacks:
            if a.name not in stats:
                stats[a.name] = AttackStats(a.name, a.family, a.description, [0] * len(a.broken),
                                            [0] * len(a.attempted))
            st = stats[a.name]
            st.broken = [u + v for u, v in zip(st.broken, a.broken, strict=True)]
            st.attempted = [u + v for u, v in zip(st.attempted, a.attempted, strict=True)]
            st.seconds += a.seconds
            st.queries += a.queries
            st.runs += a.runs
    findings, seen = [], set()
    for r in results:  # the first block's findings (with the masking checks), then any new kind
        for f in r.findings:
            if f.check not in seen or r is first:
                findings.append(f)
            seen.add(f.check)
    kept = sorted((dataclasses.replace(e, index=e.index + s) for r, s in zip(results, starts, strict=True)
                   for e in r.examples), key=lambda e: e.index)[:keep_examples]
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    broken_by: list[str | None] = [b for r in results for b in r.broken_by]
    return EvaluationResult(
        norm=first.norm, epsilons=list(first.epsilons), epsilon_labels=list(first.epsilon_labels), n_examples=n,
        clean_accuracy=clean, robust_accuracy=robust,
        correct=torch.cat([r.correct for r in results]), broken_eps=torch.cat([r.broken_eps for r in results]),
        broken_by=broken_by, x_adv=torch.cat([r.x_adv for r in results]),
        adv_pred=torch.cat([r.adv_pred for r in results]), distance=torch.cat([r.distance for r in results]),
        attacks=list(stats.values()), findings=findings, examples=kept, settings=dict(first.settings),
        timings=timings, upper_bound=any(r.upper_bound for r in results), bounded_by=list(first.bounded_by))


# --- certification --------------------------------------------------------------------------------------
def certify_sharded(backend: Backend, spec: ModelSpec, x: Tensor, *, sigma: float, n0: int = 100,
                    n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000, precision: str = "fp32",
                    seed: int = 0, block: int = BLOCK, progress: Callable[[int, int], None] | None = None) -> Any:
    """Randomized-smoothing certification (Cohen et al.) with each example's noise seeded by its index."""
    from bastion.certify.smoothing import CertifyResult

    if not isinstance(x, Tensor) or x.shape[0] == 0:
        raise InputError("x", "no examples", "a tensor of at least one input")
    t0 = time.perf_counter()
    parts = blocks(int(x.shape[0]), block)
    payloads = [{"x": x[a:b].contiguous(), "start": a, "seed": seed, "sigma": sigma, "n0": n0, "n": n,
                 "alpha": alpha, "batch_size": batch_size, "precision": precision} for a, b in parts]
    outs = backend.map(spec, "certify", payloads,
                       None if progress is None else lambda d, _t: progress(parts[d - 1][1] if d else 0,
                                                                            int(x.shape[0])))
    per = [c for chunk, _ in outs for c in chunk]
    for msg in sorted({m for _, msgs in outs for m in msgs}):
        warnings.warn(msg, UserWarning, stacklevel=2)
    return CertifyResult(prediction=torch.cat([c.prediction for c in per]), radius=torch.cat([c.radius for c in per]),
                         p_lower=torch.cat([c.p_lower for c in per]), counts=torch.cat([c.counts for c in per]),
                         sigma=per[0].sigma, n0=n0, n=n, alpha=per[0].alpha, seconds=time.perf_counter() - t0)


# --- scanning -------------------------------------------------------------------------------------------
def scan_sharded(backend: Backend, paths: Sequence[str | os.PathLike[str]], policy: Any = None,
                 exclude: Sequence[str] = (), per_worker: int = 4) -> Any:
    """:func:`bastion.scan.scan_paths` with the files cut into contiguous runs; merged in file order."""
    from bastion.scan import Policy, ScanReport, iter_files

    pol = policy or Policy.default()
    report = ScanReport()
    files = [str(f) for f in iter_files(paths, report.errors, exclude)]
    if not files:
        return report
    sizes = np.array([_size(f) for f in files], dtype=np.float64)
    runs = _balanced_runs(files, sizes, backend.workers * per_worker)
    for part in backend.map(None, "scan", [{"files": r, "policy": pol} for r in runs]):
        report.merge(part)
    return report


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _balanced_runs(files: list[str], sizes: np.ndarray, parts: int) -> list[list[str]]:
    """Contiguous runs of files of about equal bytes (order kept, so the merged report reads as one scan)."""
    if sizes.sum() <= 0:
        return [list(map(str, r)) for r in split(list(files), parts)]
    edges = np.cumsum(sizes) / sizes.sum()
    cuts = [int(np.searchsorted(edges, k / parts, side="left")) + 1 for k in range(1, parts)]
    bounds = sorted({0, *[min(c, len(files)) for c in cuts], len(files)})
    return [files[a:b] for a, b in itertools.pairwise(bounds) if b > a]


__all__ = ["certify_sharded", "evaluate_sharded", "merge_evaluations", "scan_sharded"]
