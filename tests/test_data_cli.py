"""`bastion data`: known answers for validate, audit, clean, manifest and diff, and the input never touched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bastion.cli.main import app

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["data", *args])
    return res.exit_code, res.output


def _blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two well separated classes: a clean set with nothing for any check to find."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(0.0, 0.05, size=(n, 4)) + y[:, None] * 1.0 + 0.25
    return x.astype(np.float32), y.astype(np.int64)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_clean_data_comes_back_unchanged(tmp_path: Path) -> None:
    x, y = _blobs()
    src = tmp_path / "train.npz"
    np.savez(src, x=x, y=y)
    before = _sha(src)
    code, out = _run("clean", str(src), "--out", str(tmp_path / "clean.npz"), "--json")
    assert code == 0, out
    assert json.loads(out)["removed"] == 0
    assert _sha(tmp_path / "clean.npz") == before == _sha(src)
    assert (tmp_path / "clean.npz.removed.jsonl").read_text() == ""
    code, out = _run("clean", str(src), "--out", str(src), "--force")         # never over the input
    assert code == 2 and "input" in out and _sha(src) == before
    code, out = _run("clean", str(src), "--out", str(tmp_path / "clean.npz"))  # nor over an existing output
    assert code == 2 and "--force" in out


def test_clean_removes_exactly_planted_duplicates_and_flips(tmp_path: Path) -> None:
    x, y = _blobs()
    flips = np.array([3, 50, 77])
    y_bad = y.copy()
    y_bad[flips] = 1 - y_bad[flips]
    x_all = np.concatenate([x, x[[10, 20]]])                   # two exact copies appended: rows 120, 121
    y_all = np.concatenate([y_bad, y_bad[[10, 20]]])
    src = tmp_path / "train.csv"
    header = ",".join(f"f{i}" for i in range(4)) + ",label\n"
    src.write_text(header + "".join(",".join(map(str, r)) + f",{int(lab)}\n" for r, lab in zip(x_all, y_all, strict=True)))
    before = _sha(src)
    code, out = _run("clean", str(src), "--out", str(tmp_path / "clean.csv"), "--json")
    assert code == 0, out
    log = [json.loads(line) for line in (tmp_path / "clean.csv.removed.jsonl").read_text().splitlines()]
    assert sorted(e["row"] for e in log) == [3, 50, 77, 120, 121]
    assert {e["detector"] for e in log} == {"cleanlab", "duplicates"}
    assert all(len(e["sha256"]) == 64 and e["reason"] for e in log)
    kept = (tmp_path / "clean.csv").read_text().splitlines()
    assert len(kept) == 1 + 122 - 5 and kept[0] + "\n" == header
    assert _sha(src) == before


def test_validate_names_violating_records(tmp_path: Path) -> None:
    import pandas as pd

    x, y = _blobs(40)
    df = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(label=y)
    df.loc[7, "b"] = 5.0
    df.loc[9, "label"] = 4
    df.to_parquet(tmp_path / "t.parquet")
    schema = tmp_path / "schema.yaml"
    schema.write_text("labels: [0, 1]\ncolumns:\n  b: {dtype: float, min: -1, max: 2}\n  a: {dtype: float}\n")
    code, out = _run("validate", str(tmp_path / "t.parquet"), "--schema", str(schema), "--json")
    assert code == 1, out
    rec = {(v["record"], v["check"].split(":")[0]) for v in json.loads(out)["violations"]}
    assert rec == {("7", "column b"), ("9", "column label")}
    good = df.drop(index=[7, 9])
    good.to_csv(tmp_path / "good.csv", index=False)
    code, out = _run("validate", str(tmp_path / "good.csv"), "--schema", str(schema))
    assert code == 0, out
    np.savez(tmp_path / "img.npz", x=np.full((6, 1, 8, 8), 0.5, np.float32), y=np.array([0, 1, 0, 1, 0, 3]))
    (tmp_path / "img.yaml").write_text("shape: [1, 8, 8]\nrange: [0, 1]\nlabels: [0, 1]\n")
    code, out = _run("validate", str(tmp_path / "img.npz"), "--schema", str(tmp_path / "img.yaml"), "--json")
    assert code == 1 and [v["record"] for v in json.loads(out)["violations"]] == ["5"]


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(root / c / f"{i}.png")
    return root


def test_manifest_diff_same_folder_is_empty_and_one_flipped_byte_is_one_change(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "images")
    keys = tmp_path / "keys" / "k"
    from bastion.sign import keygen

    keygen(keys)
    code, out = _run("manifest", str(folder), "--source", "unit-test", "--out", str(tmp_path / "a.json"),
                     "--key", str(keys))
    assert code == 0, out
    code, out = _run("manifest", str(folder), "--source", "unit-test", "--out", str(tmp_path / "b.json"))
    assert code == 0, out
    code, out = _run("diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json")
    assert code == 0 and json.loads(out)["changed"] == [] and json.loads(out)["identical"]
    target = folder / "dog" / "2.png"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    (folder / "cat" / "extra.png").write_bytes((folder / "cat" / "0.png").read_bytes())
    code, out = _run("manifest", str(folder), "--source", "unit-test", "--out", str(tmp_path / "c.json"),
                     "--key", str(keys))
    assert code == 0, out
    code, out = _run("diff", str(tmp_path / "a.json"), str(tmp_path / "c.json"), "--json",
                     "--public-key", str(keys) + ".pub")
    report = json.loads(out)
    assert code == 1
    assert report["changed"] == ["dog/2.png"] and report["added"] == ["cat/extra.png"] and report["removed"] == []
    assert report["signatures_failed"] == []
    code, out = _run("diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--public-key", str(keys) + ".pub")
    assert code == 1 and "b.json" in out                               # b was not signed


def test_audit_finds_duplicates_and_leakage(tmp_path: Path) -> None:
    x, y = _blobs()
    np.savez(tmp_path / "train.npz", x=np.concatenate([x, x[:1]]), y=np.concatenate([y, y[:1]]))
    np.savez(tmp_path / "test.npz", x=x[5:7], y=y[5:7])
    code, out = _run("audit", str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz"), "--checks",
                     "duplicates,leakage,label-issues", "--report", str(tmp_path / "rep"), "--json")
    assert code == 1, out
    found = {(f["check"], f["row"]) for f in json.loads(out)["findings"]}
    assert found == {("duplicates", 120), ("leakage", 5), ("leakage", 6)}
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"report.html", "report.json", "report.md"}
    assert "<html" in (tmp_path / "rep" / "report.html").read_text()


@pytest.mark.parametrize(("setup", "args", "needle"), [
    ("none", ["audit", "{d}/missing.npz"], "missing.npz"),
    ("mismatch", ["audit", "{d}/bad.npz"], "labels"),
    ("csv", ["audit", "{d}/t.csv", "--label-column", "target"], "no label column 'target'"),
    ("csv", ["clean", "{d}/t.csv", "--out", "{d}/o.csv", "--remove", "bogus"], "--remove"),
])
def test_bad_input_is_exit_2_with_a_clear_message(tmp_path: Path, setup: str, args: list[str], needle: str) -> None:
    if setup == "mismatch":
        np.savez(tmp_path / "bad.npz", x=np.zeros((5, 3)), y=np.zeros(4))
    if setup == "csv":
        (tmp_path / "t.csv").write_text("a,label\n1,0\n2,1\n")
    res = runner.invoke(app, ["data", *[a.format(d=tmp_path) for a in args]])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output


def test_diff_matches_records_by_content_before_position() -> None:
    from bastion.data.manifest import diff

    def manifest(digests: list[str]) -> dict[str, object]:
        return {"records": [{"id": str(i), "sha256": d} for i, d in enumerate(digests)]}

    old = manifest(["a", "b", "c", "d", "d"])
    removed = diff(old, manifest(["a", "c", "d", "d"]))        # "b" taken out: later ids shift by one
    assert (removed.added, removed.removed, removed.changed) == ([], ["1"], [])
    # Every moved record keeps its content (duplicates may pair either way).
    o, n = {e["id"]: e["sha256"] for e in old["records"]}, {str(i): d for i, d in enumerate("acdd")}  # type: ignore[index]
    assert removed.moved and all(o[a] == n[b] for a, b in removed.moved)
    flipped = diff(old, manifest(["a", "b", "x", "d", "d"]))   # one record's bytes changed in place
    assert (flipped.added, flipped.removed, flipped.changed) == ([], [], ["2"])
    grown = diff(old, manifest(["a", "b", "c", "d", "d", "d"]))  # one more copy of a duplicate is an addition
    assert (grown.added, grown.removed, grown.changed) == (["5"], [], [])
    assert diff(old, old).empty
