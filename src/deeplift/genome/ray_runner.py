"""Score chunks on Ray actors: each holds the converted models once; results stream back.

``workers`` actors (one CPU each, or one GPU each with ``device="cuda"``) are started on a local
Ray instance, or on an existing cluster with ``address``. At most two chunks per actor are in
flight, so the driver's memory stays flat however many regions there are; the driver alone
writes the output. Ray is optional: ``pip install 'deeplift[ray]'``.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from ..errors import InputError
from .regions import Region
from .scoring import ChunkResult, ScoreJob, score_chunk

IN_FLIGHT_PER_WORKER = 2


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--workers/--ray-address need Ray; install it with pip install 'deeplift[ray]' "
                         "(or drop those options to score in this process)") from None
    return ray


class _Scorer:
    """The actor: keeps the job (models included) and scores chunks."""

    def __init__(self, job: ScoreJob) -> None:
        self.job = job

    def score(self, start: int, onehot: np.ndarray, regions: list[Region]) -> ChunkResult:
        return score_chunk(self.job, start, onehot, regions)


def ray_score(job: ScoreJob, chunks: Iterable[tuple[int, np.ndarray, list[Region]]],
              workers: int | None, address: str | None, use_gpu: bool = False
              ) -> Iterator[ChunkResult]:
    """Results of ``score_chunk`` for every chunk, in completion order."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {"num_cpus": workers,
                                                        "include_dashboard": False}
        ray.init(log_to_driver=False, configure_logging=False, **kwargs)
    try:
        n = workers or max(1, int(ray.cluster_resources().get("GPU" if use_gpu else "CPU", 1)))
        actor_cls = ray.remote(num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0)(_Scorer)
        job_ref = ray.put(job)
        actors = [actor_cls.remote(job_ref) for _ in range(n)]
        pending: dict = {}
        idle = list(actors) * IN_FLIGHT_PER_WORKER
        for start, onehot, regions in chunks:
            if not idle:
                (done,), _ = ray.wait(list(pending), num_returns=1)
                idle.append(pending.pop(done))
                yield ray.get(done)
            actor = idle.pop(0)
            pending[actor.score.remote(start, onehot, regions)] = actor
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            pending.pop(done)
            yield ray.get(done)
    finally:
        if started:
            ray.shutdown()
