"""Gateway fixtures: the digits CNN as a TorchScript file, reference data, databases (SQLite, PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _guard_helpers import PG_DSN, PG_URL, REDIS_URL

import bastion as bn


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory, digits_cnn: torch.nn.Module) -> Path:
    path = tmp_path_factory.mktemp("guard") / "digits.pt"
    torch.jit.script(digits_cnn).save(str(path))
    return path


@pytest.fixture(scope="session")
def reference_file(tmp_path_factory: pytest.TempPathFactory, digits: bn.datasets.Dataset) -> Path:
    path = tmp_path_factory.mktemp("guard-ref") / "clean.npz"
    np.savez(path, x=digits.x_test[:300].numpy(), y=digits.y_test[:300].numpy())
    return path


def pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=2).close()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    if not pg_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    import psycopg

    schema = f"guard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def redis_client() -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    yield client
    client.close()



@pytest.fixture
def make_gateway(model_file: Path, reference_file: Path, tmp_path: Path) -> Iterator[object]:
    """Build gateways on the digits model; every audit writer is stopped at the end of the test."""
    from bastion.guard import ServeOptions, build_gateway

    built = []

    def make(db: str, config: dict[str, object] | None = None, **kw: object) -> object:
        cfg_path = None
        if config is not None:
            import yaml

            cfg_path = tmp_path / f"guard{len(built)}.yaml"
            cfg_path.write_text(yaml.safe_dump(config))
        opts = ServeOptions(model=str(model_file), db=db, config=str(cfg_path) if cfg_path else None,
                            reference=str(reference_file), **kw)  # type: ignore[arg-type]
        gw = build_gateway(opts)
        built.append(gw)
        return gw

    yield make
    for gw in built:
        gw.audit.stop()  # type: ignore[attr-defined]
        gw.audit.engine.dispose()  # type: ignore[attr-defined]
