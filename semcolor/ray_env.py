"""Starting or joining Ray for every command that uses it, and the storage settings Ray processes need."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from semcolor.core import storage
from semcolor.options import option

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RayOptions:
    """The options of every command that runs on Ray."""

    address: str | None = option(None, help="Ray cluster to join (default: RAY_ADDRESS, else a new local Ray that "
                                 "stops with the command)")
    num_cpus: int | None = option(None, help="CPUs of a new local Ray (default: all of this machine's)")
    shared_path: bool = option(False, help="the command's local paths are on a filesystem every node of the cluster "
                               "mounts (NFS and the like); without it a local path on a cluster of several nodes "
                               "is refused, as each node would read and write its own disk")

AWS_ENV: tuple[str, ...] = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _package_root() -> str:
    """The folder that holds this ``semcolor`` package."""
    import semcolor

    return os.path.dirname(os.path.dirname(os.path.abspath(semcolor.__file__)))


def _cwd_shadows_package() -> bool:
    """True when the working directory holds a ``semcolor`` folder that is not this package (e.g. a checkout
    named ``semcolor``): Ray puts the driver's working directory first on its workers' import path, where that
    folder would be imported instead of the installed package."""
    here = os.path.join(os.getcwd(), "semcolor")
    return os.path.isdir(here) and os.path.realpath(here) != os.path.realpath(
        os.path.join(_package_root(), "semcolor"))


RAY_DATA_LOGGING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_data_logging.yaml")
"""Ray Data's logging config for semcolor's commands: warnings on the console, everything in ray-data.log."""


class RayNoticeFilter(logging.Filter):
    """Drops Ray Data's console notices about its own display settings (progress bars on or off, a new UI)."""

    NOTICES = ("Progress bars disabled", "Progress bars for operators disabled", "[dataset]: A new progress UI")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


def quiet_logs() -> dict[str, str]:
    """Keep what a user acts on: Ray's warnings and errors, progress bars on a terminal, semcolor's own lines.

    Ray Data's per-dataset INFO lines (plans, log locations, progress logged line by line when stdout is not a
    terminal) go to its log file only; Ray's local token notice and its deprecation notices about its own
    internals are dropped. Returns the environment variables that do the same in Ray's workers.
    """
    import sys

    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", RAY_DATA_LOGGING)
    if "ray.data" in sys.modules:  # configured at import: configure again
        from ray.data._internal.logging import configure_logging

        configure_logging()
    for name in ("ray.train", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    return {"RAY_DATA_LOGGING_CONFIG": os.environ["RAY_DATA_LOGGING_CONFIG"],
            "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def init_ray(address: str | None, num_cpus: int | None, keep_idle_workers: bool = False) -> bool:
    """Join ``address`` (else RAY_ADDRESS), or start a new local Ray with ``num_cpus`` (never silently joins another
    local cluster); a no-op when this process is already connected. Returns True when it started a local Ray
    (which stops with this process). ``keep_idle_workers``: the new local Ray keeps idle workers instead of killing
    them after 1 s (:func:`keep_idle_workers_config`; a joined cluster keeps its own settings).

    Ray puts the driver's working directory first on its workers' import path; run from the folder that holds a
    checkout named ``semcolor``, that folder would shadow the installed package inside every worker. A local Ray
    started here gives its workers this package's own root first on PYTHONPATH; a joined cluster gets the same
    only when the working directory would shadow it (its workers' own PYTHONPATH is otherwise left alone).
    """
    import ray

    if ray.is_initialized():
        return False
    worker_env = quiet_logs()
    address = address or os.environ.get("RAY_ADDRESS")
    path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
    if address:
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": path}} if _cwd_shadows_package() else None)
        return False
    # The dashboard serves Ray's State API, which Ray Train's placement-group cleaner polls (it warns every few
    # seconds without it).
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": path, **worker_env},
                          "worker_process_setup_hook": "semcolor.ray_env.pin_ray_address"},
             _system_config=keep_idle_workers_config(startup_concurrency(num_cpus)) if keep_idle_workers else None)
    return True


def startup_concurrency(num_cpus: int | None) -> int:
    """The workers a new local Ray of ``num_cpus`` CPUs (None: Ray's own count, cgroup limits included) starts at
    once: its CPUs, at most this machine's cores (as Ray computes it when it starts the raylet)."""
    if num_cpus is None:
        try:  # private: the count Ray itself will use
            from ray._private.utils import get_num_cpus

            num_cpus = int(get_num_cpus())
        except (ImportError, AttributeError):
            num_cpus = os.cpu_count() or 1
    return max(1, min(os.cpu_count() or 1, int(num_cpus)))


WORKER_WARNING_PER_CPU = 4
"""Ray's raylet warns ("N PYTHON worker processes have been started ...") once a node has this many workers per
CPU (its startup concurrency, the node's CPUs, times 4)."""


def keep_idle_workers_config(cpus: int) -> dict[str, int]:
    """Ray system settings for a local Ray that starts ``cpus`` workers at once (:func:`startup_concurrency`) and
    keeps its idle workers (:func:`init_ray`'s ``keep_idle_workers``, the bulk job's).

    Ray kills a worker idle for 1 s while a node has more workers than its soft limit (default: its CPUs). On a
    small machine the bulk job always has more: its model actors, Ray Data's own actors (stats, autoscaling, actor
    locations) and decode / merge tasks that reserve a fraction of a CPU. Every killed task worker was started
    again for a next task, importing Ray Data, the stages and their compiled kernels anew: on 2 CPUs the pipeline
    spent 0.122 CPU-s per image with them, 0.109 without (docs/benchmarks/colorize.json before and after). The
    memory of the workers kept was in use at the job's peak already; it now stays in use until the job ends. The
    limit stays one under the count at which Ray warns about too many workers; other commands keep Ray's default
    (training's and Serve's actors would reach it).
    """
    return {"num_workers_soft_limit": max(cpus, WORKER_WARNING_PER_CPU * cpus - 1)}


def pin_ray_address() -> None:
    """Worker setup hook of a local Ray started by :func:`init_ray`: RAY_ADDRESS = this cluster's GCS, so that
    code inside Ray which finds its cluster by address "auto" (Ray Train's placement-group cleaner polls the
    State API that way) finds this one even while another semcolor command runs its own local Ray on the host
    (without it: ``ConnectionError: Found multiple active Ray instances``)."""
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def alive_nodes() -> int:
    """Nodes of the connected Ray cluster that are alive."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def node_resources() -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(totals, free): the resources of each alive node of the connected Ray cluster, in the same order."""
    from ray._private.state import available_resources_per_node, total_resources_per_node  # DeveloperAPI

    totals = total_resources_per_node()
    free = available_resources_per_node()
    return [dict(totals[n]) for n in totals], [dict(free.get(n, {})) for n in totals]


READONLY_NODE_TYPE = "node_"
"""Ray's monitor without an autoscaling config (``ray.init``, a hand-made ``ray start --head``) runs a read-only
"provider" that names each node's type ``node_<node id>`` (``ray.autoscaler._private.util.format_readonly_node_type``)."""


def node_types_autoscale(node_types: list[str]) -> bool | None:
    """From the node types the autoscaler's status reports (``ray status``): True when one is a configured type
    (``ray up``'s ``available_node_types``, KubeRay's group names), False when all are the read-only monitor's
    anonymous ones, None when there are none (no report)."""
    if not node_types:
        return None
    return any(not t.startswith(READONLY_NODE_TYPE) for t in node_types)


def autoscaler_present() -> bool:
    """Whether an autoscaler may add nodes to the connected Ray cluster (Ray has no public API for it:
    ray-project/ray#52033). Signals, first answer wins:

    1. this process started the cluster itself (``ray.init`` of a local Ray, as :func:`init_ray` and the tests do):
       none, ``ray.init`` runs no autoscaler;
    2. the autoscaler's cluster config in the GCS (what Ray Train's and Ray Data's own resource checks read) with a
       node group that can grow: one;
    3. the v1 autoscaler's status in the GCS (what ``ray status`` prints): any configured node type means one (``ray
       up``, KubeRay), only the read-only monitor's anonymous types mean none (a hand-started cluster);
    4. the v2 autoscaler (enabled on the cluster): one;
    5. no report at all: assume one may exist, so a request is waited for (bounded) rather than refused.
    """
    import json

    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None and getattr(node, "head", False):
        return False
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        if config is not None and any(g.max_count == -1 or g.max_count > g.min_count
                                      for g in config.node_group_configs if g.resources and g.max_count != 0):
            return True
    except Exception as exc:  # private API: a missing signal, not an error
        log.debug("autoscaler signal 2 (cluster config) unavailable: %s", exc)
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        if status:
            mapping = (json.loads(status).get("autoscaler_report") or {}).get("node_type_mapping") or {}
            verdict = node_types_autoscale(list(mapping.values()))
            if verdict is not None:
                return verdict
    except Exception as exc:
        log.debug("autoscaler signal 3 (autoscaler status) unavailable: %s", exc)
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2(fetch_from_server=True):
            return True
    except Exception as exc:
        log.debug("autoscaler signal 4 (autoscaler v2) unavailable: %s", exc)
    return True


def require_shared_paths(paths: dict[str, str | None], shared_path: bool) -> None:
    """Refuse local ``paths`` (what each path is -> its URL; None ones are skipped) on a Ray cluster of several
    nodes, where every node would read and write its own disk (outputs scattered, inputs missing), unless the
    user says they are on a shared filesystem (``--shared-path``). Call after :func:`init_ray`."""
    local = {what: url for what, url in paths.items() if url is not None and storage.is_local(url)}
    if shared_path or not local:
        return
    nodes = alive_nodes()
    if nodes <= 1:
        return
    named = ", ".join(f"{what} {url!r}" for what, url in local.items())
    raise ValueError(f"{named}: local path(s) on a Ray cluster of {nodes} nodes, where each node would use its own "
                     "disk; use object storage (s3://...), or pass --shared-path if every node mounts the path "
                     "(NFS and the like)")


GPU_PREFLIGHT_TIMEOUT_S = 300.0
"""How long :func:`require_cuda_where_gpus` waits for a node with the GPUs asked for (an autoscaler may add one)."""


def why_no_cuda() -> str | None:
    """None when this process's torch can use CUDA, else why not (with the torch version)."""
    import torch

    if torch.cuda.is_available():
        return None
    why = ("this torch is built without CUDA" if torch.version.cuda is None
           else "torch finds no usable CUDA device (no driver, or the GPU is hidden)")
    return f"{why} (torch {torch.__version__})"


def cuda_problem(option: str) -> str | None:
    """In a Ray worker given GPUs for ``option``: None when CUDA works here, else why not, naming this node."""
    import ray

    why = why_no_cuda()
    if why is None:
        return None
    node = ray.get_runtime_context().get_node_id()
    return (f"{option}: Ray placed this work on node {ray.util.get_node_ip_address()} ({node[:12]}), which declares "
            f"GPU(s) {ray.get_gpu_ids()}, but CUDA is not usable there: {why}; run it on a node with a working GPU, "
            f"or set {option} 0 for CPU")


def require_cuda_where_gpus(option: str, num_gpus: float, timeout_s: float = GPU_PREFLIGHT_TIMEOUT_S) -> None:
    """Before a job places work with ``num_gpus`` GPUs (``option``, e.g. ``--gpus-per-actor``): one task with the
    same GPU request checks that CUDA works on the node Ray picks, so a node that declares a GPU it cannot use
    fails here in one line naming the node and the option, not deep inside torch. No-op for ``num_gpus`` 0."""
    import ray

    if num_gpus <= 0:
        return
    probe = ray.remote(num_gpus=num_gpus, num_cpus=0)(cuda_problem).remote(option)
    ready, _ = ray.wait([probe], timeout=timeout_s)
    if not ready:
        ray.cancel(probe, force=True)
        raise ValueError(f"{option} {num_gpus:g}: no node of this Ray cluster offered {num_gpus:g} GPU(s) within "
                         f"{timeout_s:.0f} s; add GPU nodes or set {option} 0")
    problem = ray.get(probe)
    if problem is not None:
        raise ValueError(problem)


def storage_env(urls: list[str | None]) -> dict[str, str]:
    """The driver's AWS_* variables when any URL is s3://, for Ray workers started before they were set
    (pass as ``runtime_env={"env_vars": ...}``); empty otherwise."""
    if not any(u and storage.scheme_of(u) in ("s3", "s3a") for u in urls):
        return {}
    return {k: os.environ[k] for k in AWS_ENV if k in os.environ}
