"""Every ```bash block of README.md runs as written after the demo, in a fresh folder.

A command is expected to exit 0, or 1 when its line ends in a comment that starts with ``exit 1`` followed
by the end of the comment or a colon (``# exit 1``, ``# exit 1: below the bar``): a gate that fails on
purpose. ``make`` lines are not run (``make demo`` is the demo run here first; ``make test`` runs this
test). To keep the run near a minute the demo is ``--quick``, its training split is cut to
``TRAIN_EXAMPLES``, and a few budgets shrink by the rules in ``SMALLER`` and ``EXTRA`` below; nothing else
is changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(os.environ.get("BASTION_README", Path(__file__).resolve().parents[1] / "README.md"))
BIN = Path(sys.executable).parent
#: (pattern, replacement): budgets a flag allows to shrink, so the whole README runs in about a minute
SMALLER = [
    (re.compile(r"--epochs \d+"), "--epochs 1"),
    (re.compile(r"--n \d{4,}"), "--n 200"),
    (re.compile(r"--limit \d+"), "--limit 8"),
]
#: (command, flags added when the command does not set them): smaller data or a screening suite
EXTRA = [
    (re.compile(r"^bastion (evaluate|certify)\b"), "--limit", "--limit 20"),
    (re.compile(r"^bastion attack\b"), "--limit", "--limit 100"),  # adv.npz feeds --window 100 monitors
    (re.compile(r"^bastion (evaluate|harden)\b"), "--suite", "--suite fast"),
]
#: a trailing comment that says the command is meant to fail its gate
EXIT_ONE = re.compile(r"^exit 1(:|$)")
#: examples of the demo's training split used here (harden and monitor fit train or fit on it)
TRAIN_EXAMPLES = 200


def _split_comment(line: str) -> tuple[str, str]:
    """The command and its trailing comment (a ``#`` outside quotes, after whitespace)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def commands(text: str) -> list[tuple[str, int]]:
    """(command, expected exit code) for every command of every bash block, in order."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        logical: list[str] = []
        for raw in block.splitlines():
            logical.append(raw)
            if raw.rstrip().endswith("\\"):
                continue
            lines, logical = logical, []
            # A continued line's comment sits on its last physical line.
            command, comment = _split_comment(lines[-1])
            command = " ".join([ln.rstrip().rstrip("\\").strip() for ln in lines[:-1]] + [command.strip()])
            if not command or command.startswith("make "):
                continue
            out.append((command, 1 if EXIT_ONE.match(comment) else 0))
    return out


def shrink(command: str) -> str:
    for pattern, replacement in SMALLER:
        command = pattern.sub(replacement, command)
    for pattern, flag, added in EXTRA:
        if pattern.match(command) and flag not in command:
            command += " " + added
    return command


def test_parser_reads_continuations_comments_and_markers() -> None:
    text = ("```bash\nmake demo   # x\nbastion a --x 1 \\\n    --y 2   # exit 1: a gate\n"
            "bastion b '#not' # exit 1 names what changed\necho 'a # b'   # exit 1\n```\n```python\nx = 1\n```\n")
    assert commands(text) == [("bastion a --x 1 --y 2", 1), ("bastion b '#not'", 0), ("echo 'a # b'", 1)]
    assert shrink("bastion certify --n 100000 --epochs 10") == "bastion certify --n 200 --epochs 1 --limit 20"
    assert shrink("bastion attack --eps 0.1") == "bastion attack --eps 0.1 --limit 100"
    assert shrink("bastion harden --epochs 10") == "bastion harden --epochs 1 --suite fast"
    assert shrink("bastion evaluate --suite standard") == "bastion evaluate --suite standard --limit 20"


@pytest.mark.skipif(not (BIN / "bastion").exists(), reason="the bastion console script is not installed")
@pytest.mark.timeout(1800)  # about a minute on an idle 2-core machine; ~30 processes each start torch
def test_every_readme_command_runs_after_the_demo(tmp_path: Path) -> None:
    import numpy as np

    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HOME=str(tmp_path), COLUMNS="200")
    demo = subprocess.run(["bastion", "demo", "--quick"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert demo.returncode == 0, demo.stderr[-2000:]
    for name in ("model.pt", "ckpt.pt", "model.safetensors", "train.npz", "test.npz", "report.html"):
        assert (tmp_path / "bastion-demo" / name).is_file(), name
    train = tmp_path / "bastion-demo" / "train.npz"
    with np.load(train) as d:
        x, y = d["x"], d["y"]
    assert x.shape[1:] == (1, 8, 8) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    np.savez_compressed(train, x=x[:TRAIN_EXAMPLES], y=y[:TRAIN_EXAMPLES])  # a smaller budget, same file

    todo = commands(README.read_text(encoding="utf-8"))
    assert len(todo) >= 10, "the README's bash blocks were not found"
    failures = []
    for command, expected in todo:
        run = shrink(command)
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", "-c", run], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
        took = time.perf_counter() - t0
        if proc.returncode != expected:
            failures.append(f"{command}\n  ran: {run}\n  exit {proc.returncode} (expected {expected}) after "
                            f"{took:.1f} s\n  {(proc.stderr or proc.stdout).strip()[-600:]}")
    assert not failures, "README commands that did not run as written:\n" + "\n".join(failures)
