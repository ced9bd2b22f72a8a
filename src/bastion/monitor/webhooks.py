"""Webhook delivery that never blocks the caller: a background worker with retries and backoff.

``send`` queues and returns at once; the worker posts, retries 5xx, 429 and network errors with
exponential backoff (honouring ``Retry-After``), gives up on other 4xx, and records every attempt in
``deliveries`` (and through ``on_delivery``, e.g. into an audit log).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from bastion.errors import InputError
from bastion.monitor.alerts import SIGNATURE_HEADER, Incident, generic_body, sign_body, xsoar_body

Format = Literal["generic", "xsoar"]


@dataclass
class Delivery:
    incident_id: str
    url: str
    ok: bool
    attempts: int
    status: int | None
    error: str = ""
    seconds: float = 0.0
    history: list[str] = field(default_factory=list)


class WebhookSender:
    def __init__(self, url: str, *, fmt: Format = "generic", secret: bytes | None = None, retries: int = 5,
                 backoff: float = 0.5, timeout: float = 5.0, headers: dict[str, str] | None = None,
                 on_delivery: Callable[[Delivery], None] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise InputError("webhook url", url, "an http:// or https:// URL")
        if fmt not in ("generic", "xsoar"):
            raise InputError("webhook format", fmt, "'generic' or 'xsoar'")
        self.url, self.fmt, self.secret = url, fmt, secret
        self.retries, self.backoff, self.timeout = int(retries), float(backoff), float(timeout)
        self.headers = dict(headers or {})
        self.on_delivery = on_delivery
        self.deliveries: list[Delivery] = []
        self._queue: queue.Queue[Incident | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="bastion-webhooks", daemon=True)
        self._thread.start()

    def send(self, incident: Incident) -> None:
        self._queue.put(incident)

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then stop the worker."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while (incident := self._queue.get()) is not None:
                self._deliver(client, incident)

    def _deliver(self, client: httpx.Client, incident: Incident) -> None:
        body = xsoar_body(incident) if self.fmt == "xsoar" else generic_body(incident)
        headers = {"Content-Type": "application/json", **self.headers}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign_body(body, self.secret)
        t0, status, error, history = time.monotonic(), None, "", []
        attempt = 0
        for attempt in range(1, self.retries + 2):
            wait = self.backoff * 2 ** (attempt - 1)
            try:
                resp = client.post(self.url, content=body, headers=headers)
                status = resp.status_code
                history.append(str(status))
                if status < 300:
                    error = ""
                    break
                error = f"HTTP {status}"
                if status < 500 and status != 429:
                    break  # the receiver refused the body: retrying will not help
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = max(wait, float(retry_after))
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
                history.append(type(exc).__name__)
            if attempt <= self.retries:
                time.sleep(min(wait, 60.0))
        d = Delivery(incident.id, self.url, not error, attempt, status, error, time.monotonic() - t0, history)
        self.deliveries.append(d)
        if self.on_delivery is not None:
            # A recorder's failure must not kill the delivery worker.
            with contextlib.suppress(Exception):
                self.on_delivery(d)


def deliver_now(url: str, incidents: list[Incident], **kw: Any) -> list[Delivery]:
    """Send and wait: for command-line use, where the process ends right after."""
    sender = WebhookSender(url, **kw)
    for inc in incidents:
        sender.send(inc)
    sender.close()
    return list(sender.deliveries)
