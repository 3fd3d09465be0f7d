"""Starting or joining Ray, as safely as the tool can (README: "Failure and security model").

A local instance listens on loopback only (`loopback_only`: every server - GCS, raylet, workers, agents, metrics,
dashboard - binds 127.0.0.1), never runs with token authentication off, and keeps its token readable by this user
only. Joining a cluster (`--address`) keeps the cluster's own settings.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ray

from ...errors import SrSearchError
from ...study.model import Study
from ..resources import check_resources, check_timing_device, local_resources

Echo = Callable[[str], None]


def token_path() -> Path | None:
    """Where Ray reads its token from (None when it comes from the RAY_AUTH_TOKEN variable itself)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def secure_token(echo: Echo) -> Path | None:
    """Make sure Ray's token exists and only this user can read it: create it 0600 when missing (so Ray does not
    create it world-readable), tighten it when it is group- or world-readable (and say so)."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        raise SrSearchError("RAY_AUTH_MODE is set to disable Ray's token authentication; sr-search does not start a "
                            "Ray instance without it (anyone on this machine could run code in it): unset "
                            "RAY_AUTH_MODE")
    path = token_path()
    if path is None:
        return None
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))  # what Ray itself would generate
        return path
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(mode & 0o700)
        echo(f"Ray token {path} was readable by other users (mode {mode:o}); tightened it to {mode & 0o700:o}")
    return path


#: Ray's switch for a single-machine instance (how it runs on macOS and Windows): a loopback node address
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While a local instance starts: Ray's single-machine mode, so every server it starts binds 127.0.0.1.

    Ray 2.60 has no public setting for this on Linux: a loopback node address (`ray start --node-ip-address
    127.0.0.1`, `_node_ip_address`) is turned into the machine's address on purpose. Its single-machine switch is the
    environment variable `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, which the processes Ray starts read; the running
    driver read it when it imported Ray, so its copy (`ray._private.ray_constants.ENABLE_RAY_CLUSTER`) is set too.
    This function is the one place sr-search borrows a private part of Ray (tools/check_private_imports.py lists it;
    tests/test_cluster_switch.py fails when a Ray upgrade changes it, and this refuses to start rather than expose
    the instance). The variable and the flag are as they were afterwards, in case this process joins a cluster."""
    from ray._private import ray_constants  # the one borrowing (see above)

    if getattr(ray_constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", None) != SINGLE_MACHINE or \
            not isinstance(getattr(ray_constants, "ENABLE_RAY_CLUSTER", None), bool):
        raise SrSearchError(f"Ray {ray.__version__} no longer has the single-machine switch sr-search uses to keep a "
                            f"local instance on 127.0.0.1 ({SINGLE_MACHINE}); refusing to start one that may listen "
                            f"on every interface. Install the Ray version pyproject.toml pins, or join a cluster "
                            f"with --address")
    old_env, old_flag = os.environ.get(SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(SINGLE_MACHINE, None)
        else:
            os.environ[SINGLE_MACHINE] = old_env
        ray_constants.ENABLE_RAY_CLUSTER = old_flag


def init_ray(address: str | None, dashboard_host: str, echo: Echo) -> str | None:
    """Join `address` (or RAY_ADDRESS) or start a local instance; returns the dashboard URL if there is one."""
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return None
    quiet = dict(configure_logging=True, logging_level="WARNING", log_to_driver=False)
    if address:
        import sr_search

        # Ship this package's code to the cluster's workers (its dependencies must be installed there).
        ctx = ray.init(address=address, runtime_env={"py_modules": [os.path.dirname(sr_search.__file__)]}, **quiet)
        token = token_path()
    else:
        token = secure_token(echo)
        with loopback_only():
            ctx = ray.init(address="local", include_dashboard=None, dashboard_host=dashboard_host, **quiet)
    url = getattr(ctx, "dashboard_url", None)
    if url:
        url = url if url.startswith("http") else f"http://{url}"
        echo(f"Ray dashboard: {url}")
        where = f"the file {token}" if token else "the RAY_AUTH_TOKEN variable"
        echo(f"  it asks for Ray's token on first visit: paste the contents of {where} (`ray get-auth-token` "
             f"prints it); API clients send it as 'Authorization: Bearer <token>'. Keep it private.")
    return url


def cluster_resources() -> dict[str, float]:
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def wait_for_resources(study: Study, echo: Echo, joined: bool) -> None:
    """Refuse a study the machine or cluster cannot run, naming what is missing and what exists; with
    `resources.autoscaling`, wait (up to `resources.wait_s`) for the cluster to offer it, saying so."""
    check_timing_device(study)  # no node the autoscaler adds can fix this: refuse it at once
    where = "the Ray cluster" if joined else "this machine"
    available = cluster_resources() if ray.is_initialized() else local_resources()
    if not study.resources.autoscaling:
        check_resources(study, available, where)
        return
    deadline = time.time() + study.resources.wait_s
    while True:
        try:
            check_resources(study, available, where)
            return
        except SrSearchError as exc:
            if time.time() >= deadline:
                raise SrSearchError(f"{exc} (waited {study.resources.wait_s:g} s for the autoscaler)") from None
            echo(f"waiting for the autoscaler: {exc}")
        time.sleep(10)
        available = cluster_resources()
