"""What a local study exposes (README: "Failure and security model")."""

import os
import stat
import time

import grpc
import psutil
import pytest
import ray

pytestmark = pytest.mark.ray


def test_a_local_instance_listens_on_loopback_only_and_keeps_its_token_private(tmp_path, monkeypatch):
    from sr_search.run.tune.cluster import init_ray, secure_token, token_path

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Ray caches the token per process, so this test uses the real one: made if missing, then opened up to others
    # as Ray itself leaves it, to see it tightened
    secure_token(lambda _: None)
    token = token_path()
    token.chmod(0o644)
    secret = token.read_text().strip()
    said = []
    if ray.is_initialized():
        ray.shutdown()
    before = _listeners()  # whatever earlier tests left behind is not this instance's
    init_ray(None, "127.0.0.1", said.append)
    try:
        time.sleep(2)  # agents and metrics servers come up just after init returns
        listeners = sorted(set(_listeners()) - set(before))
        assert len(listeners) >= 5, listeners  # GCS, raylet, dashboard, agents, workers...
        exposed = [entry for entry in listeners if entry[0] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
        assert exposed == [], exposed
        assert stat.S_IMODE(os.stat(token).st_mode) == 0o600 and any("tightened" in s for s in said)
        # and a client without the token is refused (a local user of a shared machine reaches loopback too)
        channel = grpc.insecure_channel(ray.get_runtime_context().gcs_address)
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
                                   request_serializer=lambda x: x, response_deserializer=lambda x: x)
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
        assert any("token" in s for s in said) and not any(secret in s for s in said)  # how to log in, not the token
    finally:
        ray.shutdown()


def test_token_authentication_is_never_turned_off(monkeypatch):
    from sr_search.errors import SrSearchError
    from sr_search.run.tune.cluster import secure_token

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(SrSearchError, match="RAY_AUTH_MODE"):
        secure_token(lambda _: None)


def _listeners() -> list[tuple[str, int, str]]:
    """(address, port, process) of every listening socket of this process and the processes it started."""
    out = []
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            out += [(c.laddr.ip, c.laddr.port, proc.name()) for c in proc.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return out
