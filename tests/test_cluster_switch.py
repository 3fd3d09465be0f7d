"""The one private part of a dependency sr-search borrows: Ray's single-machine switch (`cluster.loopback_only`).

Ray offers no public way to keep a local instance on loopback on Linux. These tests fail when a Ray upgrade changes
what the switch is or does, so the borrowing is looked at again before a release ships with it (the listening
sockets themselves are checked by tests/test_security.py, which starts Ray)."""

from __future__ import annotations

import inspect
import os

import pytest

ray_constants = pytest.importorskip("ray._private.ray_constants")


def test_ray_still_has_the_switch_and_its_node_address_still_follows_it():
    from ray._private import services

    from sr_search.run.tune.cluster import SINGLE_MACHINE

    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == SINGLE_MACHINE
    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)
    # what makes it work: the node address is the loopback address while the flag is off
    source = inspect.getsource(services.get_node_ip_address)
    assert "ENABLE_RAY_CLUSTER" in source and "get_localhost_ip" in source, source


def test_the_switch_is_set_while_ray_starts_and_put_back_after(monkeypatch):
    from ray._private import services

    from sr_search.run.tune.cluster import SINGLE_MACHINE, loopback_only

    monkeypatch.delenv(SINGLE_MACHINE, raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with loopback_only():
        assert os.environ[SINGLE_MACHINE] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
        assert services.get_node_ip_address() in ("127.0.0.1", "::1")
    assert SINGLE_MACHINE not in os.environ and ray_constants.ENABLE_RAY_CLUSTER is before
    monkeypatch.setenv(SINGLE_MACHINE, "1")
    with pytest.raises(RuntimeError), loopback_only():
        raise RuntimeError("ray.init failed")
    assert os.environ[SINGLE_MACHINE] == "1" and ray_constants.ENABLE_RAY_CLUSTER is before


def test_without_the_switch_no_local_instance_starts(monkeypatch):
    from sr_search.errors import SrSearchError
    from sr_search.run.tune.cluster import loopback_only

    monkeypatch.delattr(ray_constants, "ENABLE_RAY_CLUSTER")
    with pytest.raises(SrSearchError, match="RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") as refused, loopback_only():
        pass
    assert "--address" in str(refused.value)
