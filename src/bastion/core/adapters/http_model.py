"""A model behind an HTTP endpoint: JSON in, scores or labels out."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import httpx
import numpy as np
import torch
from torch import Tensor

from bastion.core.adapters.base import Capability, Model
from bastion.core.validation import check_bounds
from bastion.errors import BastionError, InputError


class EndpointError(BastionError):
    """The remote model did not answer, or answered something we cannot read."""


class HTTPModel(Model):
    """POST ``{input_key: [[...], ...]}`` to ``url``; read scores (``scores_key``) or labels (``labels_key``).

    Requests go in batches of ``batch_size``; transient failures (connection errors, 5xx, 429) are
    retried ``retries`` times with exponential back-off. ``queries`` counts examples sent.
    """

    def __init__(self, url: str, bounds: Sequence[float] = (0.0, 1.0), *, output: str = "scores",
                 input_key: str = "inputs", scores_key: str = "scores", labels_key: str = "labels",
                 timeout: float = 10.0, retries: int = 3, batch_size: int = 256,
                 headers: Mapping[str, str] | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        if not url.startswith(("http://", "https://")):
            raise InputError("url", url, "an http:// or https:// address")
        if output not in ("scores", "labels"):
            raise InputError("output", output, "'scores' or 'labels'")
        if retries < 0 or timeout <= 0 or batch_size < 1:
            raise InputError("retries/timeout/batch_size", (retries, timeout, batch_size), "retries >= 0, timeout > 0, batch_size >= 1")
        self.url = url
        self.bounds = check_bounds(bounds)
        self.output = output
        self.input_key, self.scores_key, self.labels_key = input_key, scores_key, labels_key
        self.retries, self.batch_size = retries, batch_size
        self.client = httpx.Client(timeout=timeout, headers=dict(headers or {}))
        self.capabilities = Capability.LABELS | (Capability.SCORES if output == "scores" else Capability(0))
        self.num_classes = num_classes

    def _post(self, rows: list[list[float]]) -> dict[str, object]:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                r = self.client.post(self.url, json={self.input_key: rows})
                if r.status_code in (429,) or r.status_code >= 500:
                    last = EndpointError(f"{self.url} answered HTTP {r.status_code}")
                else:
                    if r.status_code >= 400:
                        raise EndpointError(f"{self.url} refused the request: HTTP {r.status_code}: {r.text[:200]}")
                    body = r.json()
                    if not isinstance(body, dict):
                        raise EndpointError(f"{self.url} answered {type(body).__name__}, expected a JSON object")
                    return body
            except (httpx.TransportError, ValueError) as exc:
                last = exc
            if attempt < self.retries:
                time.sleep(min(0.1 * 2**attempt, 2.0))
        reason = f"{type(last).__name__}: {last}" if last is not None else "no answer"
        raise EndpointError(f"{self.url} failed after {self.retries + 1} attempt(s) ({reason}); "
                            "check that the server is up, the address is right and timeout= is long enough")

    def _query(self, x: Tensor, key: str) -> np.ndarray:
        flat = x.detach().reshape(x.shape[0], -1).cpu().numpy().astype(np.float64)
        parts = []
        for i in range(0, flat.shape[0], self.batch_size):
            chunk = flat[i:i + self.batch_size]
            body = self._post(chunk.tolist())
            self.queries += chunk.shape[0]
            if key not in body:
                raise EndpointError(f"{self.url} answered keys {sorted(body)}, expected '{key}'")
            try:
                arr = np.asarray(body[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise EndpointError(f"{self.url} answered non-numeric '{key}'") from None
            expected_dim = 2 if key == self.scores_key else 1
            if expected_dim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]  # labels as a column
            if arr.ndim != expected_dim or arr.shape[0] != chunk.shape[0]:
                raise EndpointError(f"{self.url} answered '{key}' of shape {arr.shape} for {chunk.shape[0]} inputs, "
                                    f"expected {'(N, classes)' if expected_dim == 2 else '(N,)'}")
            if key == self.scores_key and self.num_classes is None:
                self.num_classes = int(arr.shape[1])
            parts.append(arr)
        return np.concatenate(parts, axis=0)

    def scores(self, x: Tensor) -> Tensor:
        self.require(Capability.SCORES, "scores()")
        return torch.from_numpy(self._query(x, self.scores_key).astype(np.float32)).to(x.device)

    def predict(self, x: Tensor) -> Tensor:
        if self.output == "scores":
            return self.scores(x).argmax(dim=1)
        return torch.from_numpy(self._query(x, self.labels_key).astype(np.int64).reshape(-1)).to(x.device)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HTTPModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
