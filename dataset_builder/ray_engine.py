"""The Ray engine: the builder's shards, built by a pool of Ray actors across a cluster.

``build_reinforced_dataset(..., engine=RayEngine(...))`` (CLI: ``python -m dataset_builder ... --engine ray``) runs
the same setup as a build in one process (checks, resume fingerprint, the deterministic shard plan) in the driver,
which also does all the bookkeeping of the output folder. Only who builds a shard changes: workers (Ray actors,
``ShardWorker``) load the teachers and captioner once each and build whole shards with ``builder.build_shard``,
which writes a shard atomically (its report first). The shards are therefore those one process writes, byte for
byte for the same hardware and batch size, and finalisation is the same.

Faults and elasticity:

* A worker that dies (killed, preempted, out of memory, its node gone) is replaced, and its shard goes back to the
  queue for the next free worker; the driver removes that shard's temporary files before it hands it out again,
  and does not hand it out again if the dead worker had finished it (a shard is written once). A shard whose
  workers die ``max_attempts`` times fails the build.
* The pool's size is a target (``num_workers``, or as many workers as the cluster's resources hold, re-evaluated
  while it runs), so workers on nodes that join are used; an actor waiting for resources starts when they appear.
* Errors of the build itself (a shard over ``max_skipped_fraction``, a bad model spec) are not retried: they fail
  the build, as they would in one process.
* A killed driver takes its workers with it; rerunning the same command resumes (finished shards are skipped).

Every node needs this package (same versions) and must see ``output_dir``, and a local input with the ``datasets``
cache of a map-style one, at the same path (a shared file system); a Hub input is streamed by each worker. Run the
driver on a node of the cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .builder import BuildJob, ModelInfo
from .captioner import load_captioner
from .card import BuildError
from .teachers import MODEL_DTYPES, Teacher, TeacherEnsemble, load_teacher, model_dtype

logger = logging.getLogger(__name__)
DEFAULT_MAX_ATTEMPTS = 5
WAITING_WARNING_S = 60.0  # how often to say that no worker is ready yet


class ShardWorker:
    """A Ray actor: loads the teachers and captioner once (``load``), then builds whole shards (``build``).

    Args:
        models: ``(teachers, captioner)``: models, or CLI specs (``load_teacher``, ``load_captioner``) loaded on this
            worker's device, its GPU if it has one, else the CPU. Models are used as they were pickled (device
            included).
        dtype: Model dtype of specs (``teachers.model_dtype``).
    """

    def __init__(self, models: tuple[Sequence[Teacher | str], Any], dtype: str | None):
        # Loaded by load(), not here: the driver tells a load that raises (a bad spec) from a worker that dies.
        self.models, self.dtype = models, dtype

    def load(self) -> ModelInfo:
        """Load the models (once per worker) and describe them for the driver's setup."""
        import ray

        (teachers, captioner), dtype = self.models, self.dtype
        device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")
        dtype = model_dtype(dtype, device)
        self.teachers = [load_teacher(t, device, dtype) if isinstance(t, str) else t for t in teachers]
        self.captioner = load_captioner(captioner, device, dtype) if isinstance(captioner, str) else captioner
        return ModelInfo.of(self.teachers, self.captioner)

    def build(self, job: BuildJob, shard: int) -> dict:
        """Build and write ``shard`` of ``job``; returns its report."""
        ensemble = TeacherEnsemble(self.teachers, job.cfg.aug_resolution)
        return job.build(shard, ensemble, self.captioner, tqdm(disable=True))


@dataclass(frozen=True)
class RayEngine:
    """Build the shards on a Ray cluster (see the module docstring); pass it as ``build_reinforced_dataset``'s
    ``engine``.

    Attributes:
        address: The cluster: ``"auto"`` (the one this machine is a node of), ``"host:port"`` (its head), or None
            (``RAY_ADDRESS`` if set, else a Ray instance started on this machine for the build). A process that
            already called ``ray.init`` keeps its connection.
        num_workers: Target number of workers; None: as many as the cluster's resources hold, re-evaluated as
            nodes join and leave. Never more than the shards left.
        num_gpus_per_worker: GPUs a worker requests (fractions share a GPU); None: 1 if the cluster has GPUs,
            else 0.
        num_cpus_per_worker: CPUs a worker requests; None: 1 + the build's ``num_workers`` (its DataLoader workers).
        model_dtype: Dtype of the models loaded from specs (default: float16 on GPU, float32 on CPU).
        max_attempts: Workers that may die building one shard before the build fails.
        poll_s: How often the driver looks for new resources while nothing finishes.
    """

    address: str | None = None
    num_workers: int | None = None
    num_gpus_per_worker: float | None = None
    num_cpus_per_worker: float | None = None
    model_dtype: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    poll_s: float = 5.0

    def __post_init__(self):
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 1):
            raise BuildError(f"num_workers must be None or an integer >= 1, got {self.num_workers!r}")
        for name in ("num_gpus_per_worker", "num_cpus_per_worker"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise BuildError(f"{name} must be None or >= 0, got {value!r}")
        if self.model_dtype is not None and self.model_dtype not in MODEL_DTYPES:
            raise BuildError(f"model_dtype must be None or one of {list(MODEL_DTYPES)}, got {self.model_dtype!r}")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise BuildError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if not self.poll_s > 0:
            raise BuildError(f"poll_s must be > 0, got {self.poll_s!r}")

    def run(self, setup: Callable[[ModelInfo], BuildJob], teachers: Sequence[Teacher | str], captioner: Any,
            num_loader_workers: int = 0, progress: bool = True) -> None:
        """Build every unfinished shard of the job ``setup`` returns for the workers' models (called by
        ``build_reinforced_dataset``, which finalises the dataset afterwards)."""
        with _connect(self.address) as ray:
            _Driver(ray, self, setup, teachers, captioner, num_loader_workers, progress).run()


def _check_reachable(address: str | None) -> None:
    """Fail in seconds on an address nothing listens at (``ray.init`` would retry for minutes)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address in (None, "auto", "local"):
        return
    host, colon, port = address.split("://")[-1].rpartition(":")
    if not colon or not port.isdigit():
        raise BuildError(f"Ray address {address!r} is not 'auto' or host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        raise BuildError(f"no Ray cluster at {address!r} ({err}): start one with `ray start --head`, or pass the "
                         "address `ray start` printed ('auto' on a node of the cluster)") from err


def _summary(err: Exception) -> str:
    """The first line of a Ray error (the rest, pages of advice, stays in the exception chain)."""
    return str(err).strip().split("\n", 1)[0]


@contextlib.contextmanager
def _connect(address: str | None) -> Iterator[Any]:
    """The ``ray`` module, connected to the cluster at ``address`` (disconnected afterwards), or to the session this
    process already has."""
    try:
        import ray
    except ImportError as err:
        raise BuildError("the Ray engine needs the ray package: pip install 'mobileclip-hf[ray]' (or ray)") from err
    if ray.is_initialized():
        yield ray
        return
    _check_reachable(address)
    try:
        ray.init(address=address)
    except (ConnectionError, ValueError) as err:
        raise BuildError(f"cannot connect to the Ray cluster at {address!r}: {err}") from err
    try:
        yield ray
    finally:
        ray.shutdown()


class _Driver:
    """The driver's loop: keeps the pool at its target size, hands unfinished shards to idle workers, retries the
    shards of workers that died, and shows progress. Workers are loading, idle, or building one shard."""

    def __init__(self, ray: Any, engine: RayEngine, setup: Callable[[ModelInfo], BuildJob],
                 teachers: Sequence[Teacher | str], captioner: Any, num_loader_workers: int, progress: bool):
        self.ray, self.engine, self.setup, self.progress = ray, engine, setup, progress
        # What a dead worker raises; a RayTaskError is an error of the build itself.
        errors = ray.exceptions
        self.lost = (errors.RayActorError, errors.WorkerCrashedError, errors.NodeDiedError, errors.OutOfMemoryError)
        gpus = engine.num_gpus_per_worker
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
        self.demand = {"CPU": engine.num_cpus_per_worker if engine.num_cpus_per_worker is not None
                       else 1 + num_loader_workers, "GPU": gpus}
        self.worker_cls = ray.remote(ShardWorker).options(num_cpus=self.demand["CPU"], num_gpus=gpus, max_restarts=0)
        # Put once: every worker gets the same copy (models are pickled once, specs are small).
        self.models_ref = ray.put((list(teachers), captioner))
        self.loading: dict[Any, Any] = {}  # load() reference -> worker
        self.idle: list[Any] = []
        self.building: dict[Any, tuple[Any, int]] = {}  # build() reference -> (worker, shard)
        self.job: BuildJob | None = None
        self.job_ref: Any = None
        self.models: ModelInfo | None = None
        self.todo: deque[int] = deque()
        self.attempts: dict[int, int] = {}
        self.load_deaths = 0  # in a row
        self.bar: Any = None
        self.rows, self.started = 0, 0.0

    def target(self) -> int:
        """Workers wanted now: ``num_workers``, or as many as the live nodes hold; at most one per shard left."""
        want = self.engine.num_workers
        if want is None:
            total = self.ray.cluster_resources()
            fits = [int(total.get(name, 0) // need) for name, need in self.demand.items() if need]
            want = max(1, min(fits, default=1))
        return want if self.job is None else min(want, len(self.todo) + len(self.building))

    def resize(self, target: int) -> None:
        """Start workers up to ``target`` (Ray starts each once a node can hold it); stop idle ones beyond it."""
        while len(self.loading) + len(self.idle) + len(self.building) < target:
            worker = self.worker_cls.remote(self.models_ref, self.engine.model_dtype)
            self.loading[worker.load.remote()] = worker
        while self.idle and len(self.loading) + len(self.idle) + len(self.building) > target:
            self.ray.kill(self.idle.pop())

    def run(self) -> None:
        waited = time.monotonic()
        try:
            while self.job is None or self.todo or self.building:
                self.resize(self.target())
                self.dispatch()
                pending = [*self.loading, *self.building]
                ready, _ = self.ray.wait(pending, num_returns=1, timeout=self.engine.poll_s)
                for ref in ready:
                    if ref in self.loading:
                        self.loaded(ref, self.loading.pop(ref))
                    else:
                        self.built(ref, *self.building.pop(ref))
                if self.idle or self.building:
                    waited = time.monotonic()
                elif time.monotonic() - waited > WAITING_WARNING_S:
                    waited = time.monotonic()
                    logger.warning("no Ray worker is ready yet: %d starting (loading the models, or waiting for a "
                                   "node with %s free; the cluster has %s free)", len(self.loading), self.demand,
                                   self.ray.available_resources())
            # A worker of a killed earlier driver may have left some beside a shard finished since.
            self.job.remove_temporaries(range(self.job.num_shards))
        finally:
            if self.bar is not None:
                self.bar.close()
            for worker in [*self.loading.values(), *self.idle, *(w for w, _ in self.building.values())]:
                self.ray.kill(worker)

    def loaded(self, ref: Any, worker: Any) -> None:
        """A worker's ``load`` returned: the first one's models fix the job; the others must have the same."""
        try:
            models = self.ray.get(ref)
        except self.lost as err:
            self.load_deaths += 1
            if self.load_deaths >= self.engine.max_attempts * self.target():
                raise BuildError(f"{self.load_deaths} Ray workers in a row died while loading the models (last: "
                                 f"{_summary(err)})") from err
            logger.warning("a Ray worker died while loading the models (%s); starting another", _summary(err))
            return
        except self.ray.exceptions.RayTaskError as err:
            raise err.cause from err
        self.load_deaths = 0
        if self.job is None:
            self.models, self.job = models, self.setup(models)
            self.job_ref = self.ray.put(self.job)
            self.todo = deque(s for s in range(self.job.num_shards) if not self.job.is_done(s))
            self.bar = tqdm(total=self.job.num_shards, initial=self.job.num_shards - len(self.todo), unit="shard",
                            desc="ray", disable=not self.progress)
            logger.info("building %d of %d shards on Ray workers", len(self.todo), self.job.num_shards)
            self.started = time.monotonic()
        elif models != self.models:
            raise BuildError(f"a Ray worker loaded other models ({models}) than the first one ({self.models}): every "
                             "node must load the same teachers and captioner")
        self.idle.append(worker)

    def dispatch(self) -> None:
        """Hand unfinished shards to idle workers, after removing what an interrupted attempt left of them."""
        while self.idle and self.todo:
            shard = self.todo.popleft()
            if self.job.is_done(shard):  # a worker of a killed driver finished it meanwhile
                self.finished(self.job.shard_report(shard))
                continue
            self.job.remove_temporaries([shard])
            worker = self.idle.pop()
            self.building[worker.build.remote(self.job_ref, shard)] = (worker, shard)

    def built(self, ref: Any, worker: Any, shard: int) -> None:
        """A worker's ``build`` returned: the shard is done, or goes back to the queue if the worker died."""
        try:
            report = self.ray.get(ref)
        except self.lost as err:
            if self.job.is_done(shard):  # it died after writing the shard
                self.finished(self.job.shard_report(shard))
                return
            self.attempts[shard] = self.attempts.get(shard, 0) + 1
            if self.attempts[shard] >= self.engine.max_attempts:
                raise BuildError(f"shard {shard}: the Ray worker building it died, {self.attempts[shard]} times "
                                 f"(last: {_summary(err)}); giving up at max_attempts={self.engine.max_attempts} "
                                 "(does it need more memory than a worker has?)") from err
            logger.warning("the Ray worker building shard %d died (%s); retrying it (attempt %d of %d)", shard,
                           _summary(err), self.attempts[shard] + 1, self.engine.max_attempts)
            self.todo.appendleft(shard)
            return
        except self.ray.exceptions.RayTaskError as err:
            raise err.cause from err
        self.idle.append(worker)
        self.finished(report)

    def finished(self, report: dict) -> None:
        self.rows += report["rows_in"]
        self.bar.update(1)
        self.bar.set_postfix(workers=len(self.idle) + len(self.building),
                             samples_per_s=f"{self.rows / (time.monotonic() - self.started):.1f}")


__all__ = ["DEFAULT_MAX_ATTEMPTS", "RayEngine", "ShardWorker"]
