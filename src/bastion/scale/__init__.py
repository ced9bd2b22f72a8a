"""Scale-out: the same evaluation, certification and scan, sharded over a Ray cluster.

    from bastion.scale import open_backend, evaluate_sharded
    with open_backend("ray", address="auto") as backend:          # or "local": same plan, in this process
        res = evaluate_sharded(backend, ModelSpec.from_path("model.pt"), x, y, epsilons=[0.1])

Examples (attacks, certification) or files (scanning) are cut into shards; one actor per worker loads the
model once and runs the shards it is handed; the driver merges the shards into the result objects of the
local code (:class:`~bastion.assess.result.EvaluationResult`, :class:`~bastion.certify.CertifyResult`,
:class:`~bastion.scan.ScanReport`), so every report and gate works unchanged.

Seeds never depend on the cluster. Certification draws each example's noise from a generator seeded by
(seed, example index); attacks draw one stream per fixed block of :data:`BLOCK` examples, seeded by (seed,
index of the block's first example), because the attacks take one seed per call. So a sharded result is
the same bit for bit on 1 or 100 workers and under ``--backend local`` of this package; it equals the
unsharded local run bit for bit where nothing is random (scans, deterministic attacks) and in
distribution otherwise. Ray is an optional extra: ``pip install 'bastion-ml[ray]'``.
"""

from bastion.scale.backend import RAY_INSTALL, Backend, ModelSpec, open_backend, ray_available
from bastion.scale.jobs import certify_sharded, evaluate_sharded, scan_sharded
from bastion.scale.sharding import BLOCK, blocks, derive_seed

__all__ = ["BLOCK", "RAY_INSTALL", "Backend", "ModelSpec", "blocks", "certify_sharded", "derive_seed",
           "evaluate_sharded", "open_backend", "ray_available", "scan_sharded"]
