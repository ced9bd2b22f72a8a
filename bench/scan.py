"""Model-file scanning: Bastion against picklescan and modelscan on the same files, in one run.

    .venv/bin/python bench/scan.py --size-gb 2 --out /tmp/scan.json

1. Detection: the malicious corpus of ``tests/scan/malicious.py`` (every published bypass class, each
   payload in every container; ``--reduced`` for the test suite's smaller matrix). A file counts as
   detected by Bastion when it reports HIGH or above; by picklescan when it reports a dangerous global
   (what fails its CLI; "suspicious"-only globals are counted apart; a scan error alone is not a
   detection: its CLI exits 2 on those, which pipelines treat as "could not scan"); by modelscan when
   it reports at least one issue (its errors and skipped files likewise not).
2. False positives: the benign corpus of ``tests/scan/benign.py`` (files written by torch, scikit-learn,
   joblib, NumPy, safetensors, ONNX, h5py, skops). Bastion flags a file at LOW or above; the peers with
   any issue (picklescan: a dangerous global; its suspicious-only files are listed apart).
3. Speed: a ``torch.save`` checkpoint of ``--size-gb`` GB in a temp dir, scanned by each tool with the file
   in the page cache (read once first; dropping caches needs root, so this is scanning throughput, not
   disk speed), best of ``--repeats``, reported as seconds per GB (wall and CPU).

4. Per small file (``--small-files N``, run on its own): N small files, a quarter each of torch.save state
   dicts (three 4x4 tensors), plain pickles of a small dict, raw pickles calling os.system and PyTorch zips
   whose data.pkl calls os.system; each tool scans them one call per file (its Python API, in process),
   best of ``--repeats``, reported as microseconds per file with the verdict counts.

picklescan and modelscan are optional (``pip install picklescan modelscan``); a missing one is left out.
Writes everything to ``--out`` as JSON and prints one Markdown row for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.scan import benign, malicious  # noqa: E402

from bastion.scan import Severity, scan_path  # noqa: E402

GB = 1_000_000_000

#: a verdict: "detected", "clean", "error" (the tool raised or reported only a scan error) or, for
#: picklescan, "suspicious" (only globals outside its safe list; its CLI does not fail on those)
Verdict = str


def bastion_verdict(path: Path, threshold: Severity) -> Verdict:
    try:
        report = scan_path(path)
    except Exception:
        return "error"
    if any(f.severity >= threshold for f in report.findings):
        return "detected"
    return "error" if report.errors else "clean"


def picklescan_tool() -> Callable[[Path], Verdict] | None:
    try:
        from picklescan.scanner import scan_file_path
    except ImportError:
        return None

    def run(path: Path) -> Verdict:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                res = scan_file_path(str(path))
        except Exception:
            return "error"
        if res.infected_files or res.issues_count:
            return "detected"
        if getattr(res, "suspicious_count", 0):
            # globals outside its safe list but not on its denylist: shown, not failed, by its CLI
            return "suspicious"
        return "error" if res.scan_err else "clean"

    return run


def modelscan_tool() -> Callable[[Path], Verdict] | None:
    try:
        from modelscan.modelscan import ModelScan
    except ImportError:
        return None
    logging.getLogger("modelscan").setLevel(logging.CRITICAL)

    def run(path: Path) -> Verdict:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                result = ModelScan().scan(str(path))
        except Exception:
            return "error"
        if result.get("issues"):
            return "detected"
        return "error" if result.get("errors") else "clean"

    return run


def tools() -> dict[str, tuple[Callable[[Path], Verdict], Callable[[Path], Verdict]]]:
    """name -> (verdict on malicious files, verdict on benign files); peers use one rule for both."""
    out: dict[str, tuple[Callable[[Path], Verdict], Callable[[Path], Verdict]]] = {
        "bastion": (lambda p: bastion_verdict(p, Severity.HIGH), lambda p: bastion_verdict(p, Severity.LOW)),
    }
    for name, factory in (("picklescan", picklescan_tool), ("modelscan", modelscan_tool)):
        fn = factory()
        if fn is not None:
            out[name] = (fn, fn)
    return out


def version_of(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bastion-ml" if name == "bastion" else name)
    except PackageNotFoundError:
        return "?"


def detection(tool_fns: dict[str, tuple[Callable[[Path], Verdict], Callable[[Path], Verdict]]],
              files: list[tuple[malicious.Case, Path]]) -> dict[str, Any]:
    per_class: dict[str, dict[str, list[int]]] = {t: defaultdict(lambda: [0, 0]) for t in tool_fns}
    per_container: dict[str, dict[str, list[int]]] = {t: defaultdict(lambda: [0, 0]) for t in tool_fns}
    totals: dict[str, dict[str, int]] = {t: {"detected": 0, "suspicious": 0, "clean": 0, "error": 0}
                                         for t in tool_fns}
    missed: dict[str, list[str]] = {t: [] for t in tool_fns}
    seconds: dict[str, float] = {}
    for name, (fn, _) in tool_fns.items():
        t0 = time.perf_counter()
        for case, path in files:
            v = fn(path)
            totals[name][v] += 1
            hit = int(v == "detected")
            for table, key in ((per_class, case.bypass), (per_container, case.container)):
                table[name][key][0] += hit
                table[name][key][1] += 1
            if not hit:
                missed[name].append(case.name)
        seconds[name] = time.perf_counter() - t0
    n = len(files)
    classes = sorted({c.bypass for c, _ in files})
    return {
        "files": n,
        "classes": len(classes),
        "totals": totals,
        "detection_rate": {t: totals[t]["detected"] / n for t in tool_fns},
        "classes_fully_detected": {t: sum(1 for c in classes if per_class[t][c][0] == per_class[t][c][1])
                                   for t in tool_fns},
        "per_class": {t: {c: per_class[t][c] for c in classes} for t in tool_fns},
        "per_container": {t: dict(per_container[t]) for t in tool_fns},
        "missed": missed,
        "seconds": seconds,
    }


def false_positives(tool_fns: dict[str, tuple[Callable[[Path], Verdict], Callable[[Path], Verdict]]],
                    files: list[tuple[benign.BenignCase, Path]]) -> dict[str, Any]:
    out: dict[str, Any] = {"files": len(files)}
    for name, (_, fn) in tool_fns.items():
        verdicts = [(c.name, fn(p)) for c, p in files]
        flagged = [n for n, v in verdicts if v == "detected"]
        errors = [n for n, v in verdicts if v == "error"]
        suspicious = [n for n, v in verdicts if v == "suspicious"]
        out[name] = {"flagged": flagged, "suspicious": suspicious, "errors": errors,
                     "rate": len(flagged) / len(files)}
    return out


def make_checkpoint(path: Path, size_gb: float) -> int:
    """A torch.save state dict of about size_gb GB: a few large layers and many small ones."""
    import torch

    target = int(size_gb * GB)
    sd: dict[str, Any] = {}
    big = target // 8 // 4  # eight large float32 tensors hold nearly everything
    for i in range(8):
        sd[f"layers.{i}.weight"] = torch.zeros(big, dtype=torch.float32)
        for j in range(20):  # and the many small entries (biases, norms) real checkpoints have
            sd[f"layers.{i}.block.{j}.bias"] = torch.zeros(64, dtype=torch.float16)
    torch.save(sd, path)
    return path.stat().st_size


def speed(tool_fns: dict[str, tuple[Callable[[Path], Verdict], Callable[[Path], Verdict]]], path: Path,
          repeats: int) -> dict[str, Any]:
    size = path.stat().st_size
    with path.open("rb") as fh:  # warm the page cache once for every tool
        while fh.read(64 << 20):
            pass
    out: dict[str, Any] = {"bytes": size}
    for name, (_, fn) in tool_fns.items():
        runs = []
        verdict = "?"
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            verdict = fn(path)
            runs.append((time.perf_counter() - t0, time.process_time() - c0))
        wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        out[name] = {"wall_s": wall, "cpu_s": cpu, "s_per_gb": wall / (size / GB),
                     "cpu_s_per_gb": cpu / (size / GB), "verdict": verdict}
    return out


def make_small_files(directory: Path, n: int) -> list[Path]:
    """``n`` small files cycling through four kinds (benign torch zip, benign pickle, evil pickle, evil zip)."""
    import pickle

    import torch

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    evil = malicious.assemble(malicious.Call(malicious.G("os", "system"), (malicious.CMD,)), 4)
    paths = []
    for i in range(n):
        kind = i % 4
        path = directory / f"{i:06d}{'.pkl' if kind in (1, 2) else '.pt'}"
        if kind == 0:
            torch.save({f"layer{j}.weight": torch.randn(4, 4) for j in range(3)}, path)
        elif kind == 1:
            path.write_bytes(pickle.dumps({"w": [1.0, 2.0, i], "name": "m"}, protocol=4))
        elif kind == 2:
            path.write_bytes(evil)
        else:
            path.write_bytes(malicious.torch_zip(evil))
        paths.append(path)
    return paths


def small_files(tool_fns: dict[str, tuple[Callable[[Path], Verdict], Callable[[Path], Verdict]]],
                paths: list[Path], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"files": len(paths), "bytes": sum(p.stat().st_size for p in paths)}
    for name, (fn, _) in tool_fns.items():
        fn(paths[0])  # imports and one-time setup are not per-file costs
        best = float("inf")
        counts: dict[str, int] = {}
        for _ in range(repeats):
            t0 = time.perf_counter()
            verdicts = [fn(p) for p in paths]
            best = min(best, time.perf_counter() - t0)
            counts = {v: verdicts.count(v) for v in sorted(set(verdicts))}
        out[name] = {"seconds": best, "us_per_file": best / len(paths) * 1e6, "verdicts": counts}
    return out


def _run_header(tool_fns: dict[str, Any]) -> dict[str, Any]:
    """When, where, how and with which tool versions a run was made."""
    return {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": {t: version_of(t) for t in tool_fns},
    }


def main_small_files(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bastion-scan-small-", dir=args.workdir))
    try:
        tool_fns = tools()
        res = small_files(tool_fns, make_small_files(tmp, args.small_files), args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {**_run_header(tool_fns), "small_files": res}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    figures = " · ".join(f"{t} {res[t]['us_per_file']:.0f} µs/file ({res[t]['verdicts']})" for t in tool_fns)
    print(f"| {result['date']} | scan per small file: {res['files']} files, {res['bytes'] / res['files']:.0f} B "
          f"average, best of {args.repeats} | CPU ({result['machine']}) | `{result['command']}` | {figures} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=2.0, help="size of the generated checkpoint (GB)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--reduced", action="store_true", help="the test suite's smaller malicious matrix")
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write corpora (default: a temp dir)")
    ap.add_argument("--small-files", type=int, default=0, metavar="N",
                    help="only the per-file benchmark on N generated small files")
    args = ap.parse_args()
    if args.small_files:
        main_small_files(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="bastion-scan-bench-", dir=args.workdir))
    try:
        tool_fns = tools()
        mal = malicious.write_corpus(tmp / "malicious", full=not args.reduced)
        ben = benign.write_corpus(tmp / "benign")
        det = detection(tool_fns, mal)
        fp = false_positives(tool_fns, ben)
        ckpt = tmp / "big.pt"
        make_checkpoint(ckpt, args.size_gb)
        spd = speed(tool_fns, ckpt, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        **_run_header(tool_fns),
        "detection": det,
        "false_positives": fp,
        "speed": spd,
        "notes": "detected = Bastion HIGH+ / peer issue; scan errors are not detections; speed warm-cache",
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    figures = "; ".join(
        f"{t} {det['totals'][t]['detected']}/{det['files']} malicious detected "
        f"({det['classes_fully_detected'][t]}/{det['classes']} classes fully), "
        f"{len(fp[t]['flagged'])}/{fp['files']} benign flagged, {spd[t]['s_per_gb']:.2f} s/GB"
        for t in tool_fns)
    print(f"| {result['date']} | scan detection / false positives / speed | CPU ({result['machine']}) | "
          f"`{result['command']}` | {figures} (checkpoint {spd['bytes'] / GB:.2f} GB, warm cache) |")


if __name__ == "__main__":
    main()
