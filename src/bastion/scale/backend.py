"""Where shards run: in this process (``local``) or on a Ray cluster (``ray``), behind one ``map``.

A :class:`Backend` runs named jobs (:mod:`bastion.scale.jobs`) over a list of payloads and returns their
results in payload order. On Ray, one actor per worker loads the model once (from a :class:`ModelSpec`:
a file path and how to load it, or an in-memory model shipped through the object store) and takes shards
as it finishes the previous ones, so a slow shard does not hold the others back. The local backend runs
the same jobs through the same worker class in order: the reference a Ray run must reproduce.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.errors import BastionError, InputError

RAY_INSTALL = "pip install 'bastion-ml[ray]'"

#: callback as shards finish: (shards done, shards in total)
ShardProgress = Callable[[int, int], None]


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


@dataclass(frozen=True)
class ModelSpec:
    """How a worker gets the model: ``load_model(path, ...)`` on a shared path, or ``obj`` shipped as is."""

    path: str | None = None
    factory: str | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    trust_pickle: bool = False
    device: str | None = None
    obj: Any = field(default=None, compare=False)
    #: names an in-memory model across processes (its id() differs in every copy)
    token: str = ""

    def __post_init__(self) -> None:
        if self.obj is not None and not self.token:
            object.__setattr__(self, "token", f"object-{os.getpid()}-{id(self.obj)}")

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> ModelSpec:
        return cls(path=str(Path(path).resolve()), **kwargs)

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.path, self.factory, self.bounds, self.trust_pickle, self.device, self.token)

    def load(self) -> Any:
        if self.obj is not None:
            from bastion.core.adapters import wrap

            obj = self.obj
            if type(obj).__name__ == "ObjectRef":  # shipped through Ray's object store (see RayBackend.ship)
                import ray

                obj = ray.get(obj)
            return wrap(obj, self.bounds)
        if self.path is None:
            raise InputError("model", "nothing", "a model path or object for the workers to load")
        from bastion.core.loading import load_model

        return load_model(self.path, factory=self.factory, bounds=self.bounds, trust_pickle=self.trust_pickle,
                          device=self.device)


class Worker:
    """Runs jobs, loading each model once and keeping it; a Ray actor wraps this class as it is."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._models: dict[tuple[Any, ...], Any] = {}

    def model(self, spec: ModelSpec) -> Any:
        if spec.key not in self._models:
            self._models.clear()  # one model at a time: a worker's memory is for the model in use
            self._models[spec.key] = spec.load()
        return self._models[spec.key]

    def run(self, job: str, index: int, spec: ModelSpec | None, payload: dict[str, Any]) -> tuple[int, Any]:
        import torch

        from bastion.scale.jobs import JOBS, NEEDS_MODEL

        before = torch.get_num_threads()
        # The same thread count on every worker and in the local reference: a reduction split over another
        # number of threads may round differently, and an attack can follow that last bit elsewhere.
        torch.set_num_threads(self.threads)
        try:
            model = self.model(spec) if job in NEEDS_MODEL and spec is not None else None
            return index, JOBS[job](model, **payload)
        finally:
            torch.set_num_threads(before)

    def ping(self) -> int:
        return os.getpid()


class Backend:
    """``map(spec, job, payloads)`` -> results in payload order."""

    name = "local"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.workers = 1
        self._worker = Worker(threads)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "workers": self.workers, "threads_per_worker": self.threads}

    def map(self, spec: ModelSpec | None, job: str, payloads: list[dict[str, Any]],
            progress: ShardProgress | None = None) -> list[Any]:
        out = []
        for i, p in enumerate(payloads):
            out.append(self._worker.run(job, i, spec, p)[1])
            if progress is not None:
                progress(i + 1, len(payloads))
        return out

    def close(self) -> None:
        self._worker = Worker(self.threads)


#: actors of a Ray session this process joined rather than started, by (workers, threads, GPUs): a caller
#: that keeps Ray up (a notebook, a test session) reuses them instead of paying their start-up again
_KEPT: dict[tuple[int, int, int], list[Any]] = {}


class RayBackend(Backend):
    """Shards on a Ray cluster: ``address`` None starts (or joins, with RAY_ADDRESS) a local one."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int = 1,
                 num_cpus: int | None = None) -> None:
        super().__init__(threads)
        if not ray_available():
            raise InputError("--backend", "ray, but Ray is not installed", f"Ray: {RAY_INSTALL} (or --backend local)")
        import ray

        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            _KEPT.clear()  # actors of an earlier session died with it
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING",
                                      "log_to_driver": False}
            if num_cpus is not None and address is None:
                kwargs["num_cpus"] = num_cpus
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise InputError("--address", repr(address or "local"), f"a reachable Ray cluster: auto, "
                                 f"ray://HOST:PORT or none to start one here ({exc})") from None
            self._started = True
        res = ray.cluster_resources()
        self.gpus = int(res.get("GPU", 0))
        cpus = max(1, int(res.get("CPU", 1)) // max(1, threads))
        self.workers = workers if workers is not None else (self.gpus or cpus)
        if self.workers < 1:
            raise InputError("--workers", self.workers, "a positive number of Ray workers")
        self._actors: list[Any] = []
        self._shipped: dict[tuple[Any, ...], ModelSpec] = {}
        self._remote = ray.remote(Worker)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gpus_per_worker": 1 if self.gpus else 0}

    def actors(self) -> list[Any]:
        """One actor per worker, started once for the backend's life (each loads a model once per spec)."""
        if not self._actors:
            key = (self.workers, self.threads, self.gpus)
            if not self._started and key in _KEPT:
                self._actors = _KEPT[key]
                return self._actors
            # one group at a time: another group's actors hold the CPUs (or GPUs) these need to be placed
            for other in _KEPT.values():
                for a in other:
                    self._ray.kill(a)
            _KEPT.clear()
            opts: dict[str, Any] = {"num_cpus": self.threads}
            if self.gpus:
                opts["num_gpus"] = 1
            self._actors = [self._remote.options(**opts).remote(self.threads) for _ in range(self.workers)]
            if not self._started:
                _KEPT[key] = self._actors
        return self._actors

    def ship(self, spec: ModelSpec | None) -> ModelSpec | None:
        if spec is not None and spec.obj is None and self.gpus and spec.device is None:
            # each actor holds one GPU (Ray sets CUDA_VISIBLE_DEVICES): "cuda" is that one
            return dataclasses.replace(spec, device="cuda")
        if spec is None or spec.obj is None:
            return spec
        if spec.key not in self._shipped:
            # put once: every actor fetches the same object instead of one pickled copy per shard
            self._shipped[spec.key] = dataclasses.replace(spec, obj=self._ray.put(spec.obj))
        return self._shipped[spec.key]

    def map(self, spec: ModelSpec | None, job: str, payloads: list[dict[str, Any]],
            progress: ShardProgress | None = None) -> list[Any]:
        ray = self._ray
        actors = self.actors()
        spec = self.ship(spec)
        todo = list(enumerate(payloads))[::-1]
        busy: dict[Any, Any] = {}  # future -> actor
        out: list[Any] = [None] * len(payloads)
        done = 0
        # two shards in flight per actor: the next one is already there when one finishes
        for actor in actors * 2:
            if todo:
                i, p = todo.pop()
                busy[actor.run.remote(job, i, spec, p)] = actor
        while busy:
            ready, _ = ray.wait(list(busy), num_returns=1)
            ref = ready[0]
            actor = busy.pop(ref)
            try:
                i, result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BastionError):
                    raise cause from None
                raise
            out[i] = result
            done += 1
            if progress is not None:
                progress(done, len(payloads))
            if todo:
                j, p = todo.pop()
                busy[actor.run.remote(job, j, spec, p)] = actor
        return out

    def ping(self, n: int) -> None:
        """``n`` empty round trips spread over the actors (the per-task overhead, for bench/scale.py)."""
        actors = self.actors()
        self._ray.get([actors[i % len(actors)].ping.remote() for i in range(n)])

    def close(self) -> None:
        self._shipped.clear()
        if self._started:  # our own cluster: everything goes with it
            self._actors = []
            self._ray.shutdown()


@contextmanager
def open_backend(name: str = "local", address: str | None = None, workers: int | None = None,
                 threads: int = 1, num_cpus: int | None = None) -> Iterator[Backend]:
    """A backend for the duration of a ``with`` block (a Ray cluster this call started is shut down)."""
    if name not in ("local", "ray"):
        raise InputError("--backend", repr(name), "local or ray")
    if name == "local" and address is not None:
        raise InputError("--address", address, "no --address with --backend local (it is for --backend ray)")
    backend = RayBackend(address, workers, threads, num_cpus) if name == "ray" else Backend(threads)
    try:
        yield backend
    finally:
        backend.close()


#: --help text shared by the commands that take --backend (assess, evaluate, certify, scan)
BACKEND_HELP = ("local (this process) | ray: shard the examples (or files) over a Ray cluster, one model per "
                f"worker; needs {RAY_INSTALL}.")
ADDRESS_HELP = ("With --backend ray: auto (a running cluster), ray://HOST:PORT, or none to start one on this "
                "machine (RAY_ADDRESS is honoured).")
WORKERS_HELP = "With --backend ray: workers (default: one per CPU of the cluster, or per GPU where it has GPUs)."


def check_backend_args(name: str, address: str | None, workers: int | None) -> None:
    """Refuse bad --backend/--address/--workers before any work (and say how to install Ray)."""
    if name not in ("local", "ray"):
        raise InputError("--backend", repr(name), "local or ray")
    if name == "local" and (address is not None or workers is not None):
        raise InputError("--address" if address is not None else "--workers", address or workers,
                         "nothing with --backend local (they are for --backend ray)")
    if workers is not None and workers < 1:
        raise InputError("--workers", workers, "a positive number of Ray workers")
    if name == "ray" and not ray_available():
        raise InputError("--backend", "ray, but Ray is not installed", f"Ray: {RAY_INSTALL} (or --backend local)")
