"""Manifest hashing speed: Bastion's parallel sharded SHA-256 against `sha256sum`, serial and `xargs -P`.

    .venv/bin/python bench/hashing.py --size-gb 2 --out /tmp/hashing.json

Creates a model-like folder in a temp dir (one big "weights" file holding half the bytes, a few mid-size
shards, small config files), reads it once so every tool starts from the page cache, then times, best
and median over ``--repeats``, wall seconds and CPU seconds per GB (the latter hardly depends on how busy
a shared machine is, so it compares tools fairly where wall time cannot):

- ``sha256sum`` over all files in one process (serial, the usual `sha256sum * > SHA256SUMS`);
- ``xargs -P <cores> -n 1 sha256sum`` (one process per file, as many at once as there are cores);
- Bastion's :func:`bastion.sign.build_manifest` (thread pool, files above the shard size hashed in shards);
- Bastion hashing for ``bastion sign --format model-signing``: whole files (model-signing's ``files``
  layout, one thread per file) and 1 GB shards (its ``shards`` layout, ``--shard-size 1000000000``);
- OpenSSF model-signing's ``hashing.Config().hash`` in its ``files`` and ``shards`` serializations, timed
  in a child interpreter (this one by default: model-signing is in the dev extra; ``--model-signing-python
  PY`` picks another, ``--no-model-signing`` skips it) so its import time is not counted.

Dropping the page cache needs root and a quiet machine, neither of which a shared runner has, so all runs
are warm-cache: they measure hashing throughput (CPU), not the disk. Said so in the output too.
Prints one Markdown table row for bench/RESULTS.md; writes full figures as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.sign import build_manifest
from bastion.sign.hashing import hash_files, scan_folder
from bastion.sign.modelsigning import WHOLE_FILE

GB = 1_000_000_000
_MODEL_SIGNING_TIMER = """
import json, sys, time
from model_signing import hashing
folder, repeats, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
config = hashing.Config()
config.use_shard_serialization() if mode == "shards" else config.use_file_serialization()
runs = []
for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    config.hash(folder)
    runs.append((time.perf_counter() - t0, time.process_time() - c0))
print(json.dumps(runs))
"""
_BLOCK = 16 << 20


def make_folder(root: Path, size_gb: float) -> list[Path]:
    """Write ~size_gb GB: half in one big file, 40 % in four mid-size shards, the rest in small files."""
    total = int(size_gb * GB)
    block = os.urandom(_BLOCK)  # content does not change SHA-256 speed; tiling one random block is quick
    sizes = {"model-big.safetensors": total // 2}
    for i in range(4):
        sizes[f"shards/model-{i + 1:05d}-of-00004.bin"] = total * 4 // 10 // 4 + i * 4099
    rest = total - sum(sizes.values())
    for i in range(8):
        sizes[f"extra/part-{i}.bin"] = max(1, rest // 8)
    sizes["config.json"] = 731
    sizes["tokenizer.json"] = 2_000_003
    paths = []
    for name, size in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            left = size
            while left > 0:
                chunk = block[: min(left, _BLOCK)]
                fh.write(chunk)
                left -= len(chunk)
        paths.append(path)
    return paths


def warm(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while fh.read(_BLOCK):
                pass


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished children (sha256sum, xargs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def time_runs(fn: Callable[[], object], repeats: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per run. CPU seconds barely move with the load other users put on the machine."""
    out = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        fn()
        out.append((time.perf_counter() - t0, _cpu_seconds() - c0))
    return out


def sha256sum_digests(output: str) -> dict[str, str]:
    digests = {}
    for line in output.splitlines():
        digest, name = line.split(maxsplit=1)
        digests[name.lstrip("*")] = digest
    return digests


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=4.0, help="folder size to create (default 4)")
    ap.add_argument(
        "--dir", type=Path, default=None, help="hash this existing folder instead of creating one"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per tool (default 3)")
    ap.add_argument("--workers", type=int, default=None, help="Bastion hashing threads (default cores + 4)")
    ap.add_argument(
        "--shard-size", type=int, default=1 << 30, help="Bastion shard size in bytes (default 1 GiB)"
    )
    ap.add_argument(
        "--model-signing-python",
        type=Path,
        default=None,
        help="python interpreter that has model-signing installed (default: this one, if it has it)",
    )
    ap.add_argument("--no-model-signing", action="store_true", help="do not time model-signing")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.model_signing_python is None and not args.no_model_signing:
        import importlib.util

        if importlib.util.find_spec("model_signing") is not None:
            args.model_signing_python = Path(sys.executable)
    if args.no_model_signing:
        args.model_signing_python = None

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bastion-hash-bench-") as tmp:
        if args.dir is not None:
            folder = args.dir
            paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
        else:
            folder = Path(tmp) / "model"
            t0 = time.perf_counter()
            paths = make_folder(folder, args.size_gb)
            print(f"created {len(paths)} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        total = sum(p.stat().st_size for p in paths)
        rel = [str(p.relative_to(folder)) for p in paths]
        warm(paths)

        results: dict[str, dict[str, Any]] = {}

        def record(name: str, runs: list[tuple[float, float]]) -> None:
            walls = [w for w, _ in runs]
            best = min(walls)
            cpu = statistics.median(c for _, c in runs)
            results[name] = {
                "seconds_best": round(best, 3),
                "seconds_median": round(statistics.median(walls), 3),
                "gb_per_s_best": round(total / best / GB, 3),
                "cpu_seconds_per_gb": round(cpu / (total / GB), 3),
                "runs": [round(w, 3) for w in walls],
            }
            print(
                f"{name:>28}: best {best:7.2f} s  {total / best / GB:6.2f} GB/s  "
                f"{results[name]['cpu_seconds_per_gb']:6.2f} CPU-s/GB  (runs {results[name]['runs']})",
                file=sys.stderr,
            )

        manifest = build_manifest(
            folder, shard_size=args.shard_size, workers=args.workers, default_ignore=False
        )
        record(
            "bastion",
            time_runs(
                lambda: build_manifest(
                    folder, shard_size=args.shard_size, workers=args.workers, default_ignore=False
                ),
                args.repeats,
            ),
        )
        files = scan_folder(folder, (), False).files
        for label, shard in (("whole files", WHOLE_FILE), ("1 GB shards", 1_000_000_000)):

            def ms_layout(shard: int = shard) -> object:
                return hash_files(files, shard, args.workers)

            record(f"bastion, model-signing fmt ({label})", time_runs(ms_layout, args.repeats))
        if args.model_signing_python is not None:
            for mode in ("files", "shards"):
                proc = subprocess.run(
                    [
                        str(args.model_signing_python),
                        "-c",
                        _MODEL_SIGNING_TIMER,
                        str(folder),
                        str(args.repeats),
                        mode,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                timed = json.loads(proc.stdout.strip().splitlines()[-1])
                record(f"model-signing ({mode})", [(w, c) for w, c in timed])
        check: dict[str, Any] = {}
        if shutil.which("sha256sum") is not None:
            xargs_cmd = ["xargs", "-0", "-P", str(cores), "-n", "1", "sha256sum"]

            def serial() -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    ["sha256sum", *rel], cwd=folder, check=True, capture_output=True, text=True
                )

            def parallel() -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    xargs_cmd, input="\0".join(rel), cwd=folder, check=True, capture_output=True, text=True
                )

            record("sha256sum (serial)", time_runs(serial, args.repeats))
            record(f"xargs -P {cores} sha256sum", time_runs(parallel, args.repeats))
            # the digests must agree wherever a file fits in one shard (the sharded ones are combined digests)
            theirs = sha256sum_digests(serial().stdout)
            ours = {r.name: r.digest for r in manifest.resources if not r.shards}
            check = {"files_compared": len(ours), "all_equal": all(theirs[n] == d for n, d in ours.items())}
            if not check["all_equal"]:
                raise SystemExit("digest mismatch between Bastion and sha256sum")

    report = {
        "benchmark": "manifest hashing",
        "date": dt.date.today().isoformat(),
        "machine": {"cores": cores, "python": platform.python_version(), "platform": platform.platform()},
        "cache": "warm (page cache not dropped: needs root; runs measure hashing throughput, not the disk)",
        "files": len(paths),
        "total_bytes": total,
        "shard_size": args.shard_size,
        "workers": args.workers,
        "results": results,
        "check_against_sha256sum": check,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    figures = "; ".join(
        f"{name} {r['seconds_best']:.2f} s ({r['gb_per_s_best']:.2f} GB/s, {r['cpu_seconds_per_gb']:.2f} CPU-s/GB)"
        for name, r in results.items()
    )
    size_arg = f"--dir {args.dir}" if args.dir is not None else f"--size-gb {args.size_gb:g}"
    if args.model_signing_python is not None and args.model_signing_python != Path(sys.executable):
        size_arg += " --model-signing-python PY"
    print(
        f"| {report['date']} | manifest hashing, {total / GB:.2f} GB in {len(paths)} files, warm cache, best of "
        f"{args.repeats} | CPU, {cores} cores | `python bench/hashing.py {size_arg}` | {figures} |"
    )
    return report


if __name__ == "__main__":
    main()
