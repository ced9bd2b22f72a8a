"""Remote and exported models: the HTTP adapter against a local server, the ONNX Runtime adapter."""

from __future__ import annotations

import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import bastion as bn
from bastion.attacks.evasion import HopSkipJump, Square
from bastion.core.adapters import EndpointError, HTTPModel, OnnxModel
from bastion.errors import CapabilityError, InputError

#: how long the deliberately slow route sleeps, and the client timeout that must give up before it
SLOW_S = 1.0
TIMEOUT_S = 0.2


@pytest.fixture(scope="module")
def flat() -> bn.datasets.Dataset:
    return bn.datasets.digits(flatten=True)


@pytest.fixture(scope="module")
def clf(flat: bn.datasets.Dataset) -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(flat.x_train.numpy(), flat.y_train.numpy())


class _Server:
    """A model server on 127.0.0.1: /scores, /labels, /flaky (one 500 first), /slow, /bad (wrong shape)."""

    def __init__(self, model: LogisticRegression) -> None:
        self.model = model
        self.failures_left = 0
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                server.requests += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                rows = np.asarray(body["inputs"], dtype=np.float64)
                if self.path == "/flaky" and server.failures_left > 0:
                    server.failures_left -= 1
                    self._send(500, {"error": "injected"})
                    return
                if self.path == "/slow":
                    time.sleep(SLOW_S)
                if self.path == "/labels":
                    self._send(200, {"labels": server.model.predict(rows).tolist()})
                elif self.path == "/bad":
                    self._send(200, {"scores": [0.5] * rows.shape[0]})
                else:
                    self._send(200, {"scores": server.model.predict_proba(rows).tolist()})

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(clf: LogisticRegression) -> Iterator[_Server]:
    s = _Server(clf)
    yield s
    s.close()


def test_http_scores_match_and_queries_count(server: _Server, clf: LogisticRegression,
                                             flat: bn.datasets.Dataset) -> None:
    x = flat.x_test[:50]
    with HTTPModel(server.url + "/scores", batch_size=16) as m:
        scores = m.scores(x)
        assert scores.shape == (50, 10)
        np.testing.assert_allclose(scores.numpy(), clf.predict_proba(x.numpy()), atol=1e-6)
        assert m.queries == 50
        assert m.num_classes == 10
        assert torch.equal(m.predict(x), torch.from_numpy(clf.predict(x.numpy())).long())
        assert m.queries == 100


def test_http_retries_survive_one_500(server: _Server, clf: LogisticRegression, flat: bn.datasets.Dataset) -> None:
    x = flat.x_test[:8]
    server.failures_left = 1
    before = server.requests
    m = HTTPModel(server.url + "/flaky", retries=2)
    pred = m.predict(x)
    assert torch.equal(pred, torch.from_numpy(clf.predict(x.numpy())).long())
    assert server.requests - before == 2  # the failed attempt and the retry
    assert m.queries == 8  # a failed attempt is not an answered query
    server.failures_left = 5
    with pytest.raises(EndpointError, match="HTTP 500"):
        HTTPModel(server.url + "/flaky", retries=1).predict(x)
    server.failures_left = 0


def test_http_labels_only(server: _Server, clf: LogisticRegression, flat: bn.datasets.Dataset) -> None:
    x = flat.x_test[:20]
    m = bn.wrap(server.url + "/labels", output="labels")
    assert m.capabilities == bn.Capability.LABELS
    assert torch.equal(m.predict(x), torch.from_numpy(clf.predict(x.numpy())).long())
    with pytest.raises(CapabilityError):
        Square()(m, x, m.predict(x), epsilons=0.1)
    # A labels-only endpoint is exactly what HopSkipJump needs.
    y = flat.y_test[:6]
    m.reset_queries()
    res = HopSkipJump("l2", queries=300, steps=5)(m, flat.x_test[:6], y)
    assert res.queries == m.queries
    assert bool(res.success[0].all())


def test_http_timeout_and_unreachable(server: _Server, flat: bn.datasets.Dataset) -> None:
    x = flat.x_test[:2]
    with pytest.raises(EndpointError, match=r"ReadTimeout.*timeout="):
        HTTPModel(server.url + "/slow", timeout=TIMEOUT_S, retries=0).scores(x)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EndpointError, match=r"failed after 2 attempt\(s\).*server is up"):
        HTTPModel(f"http://127.0.0.1:{port}/scores", retries=1, timeout=1.0).scores(x)


def test_http_bad_answers_and_arguments(server: _Server, flat: bn.datasets.Dataset) -> None:
    with pytest.raises(EndpointError, match=r"shape \(3,\)"):
        HTTPModel(server.url + "/bad").scores(flat.x_test[:3])
    with pytest.raises(EndpointError, match="expected 'scores'"):
        HTTPModel(server.url + "/labels").scores(flat.x_test[:3])
    with pytest.raises(InputError):
        HTTPModel("ftp://example.org")
    with pytest.raises(InputError):
        HTTPModel(server.url, output="proba")


def test_square_through_http(server: _Server, clf: LogisticRegression, flat: bn.datasets.Dataset) -> None:
    x, y = flat.x_test[:20], flat.y_test[:20]
    m = bn.wrap(server.url + "/scores")
    clean = float((m.predict(x) == y).float().mean())
    m.reset_queries()
    res = Square("linf", queries=60)(m, x, y, epsilons=0.15)
    _, adv, success = res
    assert float((adv - x).abs().max()) <= 0.15 + 1e-6
    assert res.queries == m.queries > 0
    # Success as judged through HTTP agrees with the model itself.
    assert torch.equal(success, torch.from_numpy(clf.predict(adv.numpy()) != y.numpy()))
    assert float(success.float().mean()) > 1 - clean + 0.3


# --- ONNX Runtime --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    pytest.importorskip("onnxruntime")
    digits = bn.datasets.digits()
    torch.manual_seed(0)
    net: torch.nn.Module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                               torch.nn.Linear(32, 10))
    net = bn.zoo.train(net, digits.x_train, digits.y_train, epochs=8, lr=5e-3, seed=0)
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter warns it is legacy; it needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (digits.x_test[:1],), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path, net


def test_onnx_scores_match_torch(onnx_file: tuple[Path, torch.nn.Module], digits: bn.datasets.Dataset) -> None:
    path, net = onnx_file
    m = bn.wrap(path)
    assert isinstance(m, OnnxModel)
    assert bn.Capability.SCORES in m.capabilities and bn.Capability.GRADIENTS not in m.capabilities
    x = digits.x_test[:30]
    with torch.no_grad():
        expected = net(x)
    np.testing.assert_allclose(m.scores(x).numpy(), expected.numpy(), atol=1e-4)
    assert m.queries == 30
    # Flat rows are folded into the graph's (N, 1, 8, 8) input.
    np.testing.assert_allclose(m.scores(x.flatten(1)).numpy(), expected.numpy(), atol=1e-4)
    with pytest.raises(InputError, match="ONNX graph"):
        m.scores(torch.zeros(2, 3))


def test_square_lowers_onnx_accuracy(onnx_file: tuple[Path, torch.nn.Module], digits: bn.datasets.Dataset) -> None:
    path, _ = onnx_file
    m = bn.wrap(str(path))
    x, y = digits.x_test[:40], digits.y_test[:40]
    clean = float((m.predict(x) == y).float().mean())
    _, adv, success = Square("linf", queries=100)(m, x, y, epsilons=0.2)
    assert float((adv - x).abs().max()) <= 0.2 + 1e-6
    assert float((m.predict(adv) == y).float().mean()) < clean - 0.3
    assert torch.equal(success, m.predict(adv) != y)


def test_sklearn_string_classes(flat: bn.datasets.Dataset) -> None:
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    est = LogisticRegression(max_iter=100).fit(flat.x_train[:300].numpy(), names[flat.y_train[:300].numpy()])
    m = bn.wrap(est)
    x = flat.x_test[:20]
    # classes_ is sorted alphabetically; predictions are indices into it, aligned with predict_proba.
    assert torch.equal(m.predict(x), m.scores(x).argmax(dim=1))
