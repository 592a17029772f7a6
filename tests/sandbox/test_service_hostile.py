"""Issue 18, the sandbox service under hostile clients: each finding measured on the stdlib server, as a test.

Before (stdlib http.server): a NaN ``total_timeout_s`` skipped the 60 s cap (a 75 s sleep ran to the end);
``Content-Length: -1`` read the socket to EOF (200 MB buffered); the body was read before the token check; no
socket timeouts (slowloris held forever); backlog 5 (a 200-connection burst was partly reset); invalid UTF-8
and 100k-deep JSON were 500s. Also here: sandbox host state is cleaned when an owner exits without close().
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from sandbox.harness import TestJob, TestSpec
from sandbox.service import make_server
from tests.hostile_http import connect, flood, listen_backlog, post, request, rss_mb, seconds_until_closed

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT_S = 1.5  # the request deadline of the server under test (default 10 s)


@pytest.fixture(scope="module")
def server(sb):
    srv, svc = make_server("127.0.0.1", 0, sandbox=sb, token=TOKEN, max_pending=4, max_body_bytes=1 << 20,
                           request_timeout_s=TIMEOUT_S)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    svc.close()


def assert_healthy(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        assert json.loads(r.read())["status"] == "ok"


def job(**over) -> str:
    d = TestJob("import time\ntime.sleep(75)", TestSpec.stdio([""], [""])).to_dict()
    return json.dumps({"jobs": [{**d, **over}]})


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", '"nan"', "0", "-5", "61"])
def test_non_finite_or_out_of_range_total_timeout_is_400_naming_the_field(server, value):
    """Finding 1: `"total_timeout_s": NaN` ran a 75 s sleep to its end (NaN > 60 is False)."""
    body = job().replace('"total_timeout_s": 30.0', f'"total_timeout_s": {value}').encode()
    assert f'"total_timeout_s": {value}' in body.decode()
    status, data, elapsed = request(server, post("/run_tests", body, AUTH))
    assert status == 400 and elapsed < 2.0
    assert b"total_timeout_s" in data


def test_non_finite_run_timeout_and_per_test_timeout_are_400(server):
    status, data, _ = request(server, post("/run_code", b'{"code": "print(1)", "run_timeout": NaN}', AUTH))
    assert status == 400 and b"run_timeout" in data
    status, data, _ = request(server, post("/run_code", b'{"code": "print(1)", "run_timeout": "inf"}', AUTH))
    assert status == 400 and b"run_timeout" in data
    body = job().replace('"per_test_timeout_s": 5.0', '"per_test_timeout_s": NaN').encode()
    status, data, _ = request(server, post("/run_tests", body, AUTH))
    assert status == 400 and b"jobs[0].per_test_timeout_s" in data
    body = job(memory_mb=10**30).encode()
    status, data, _ = request(server, post("/run_tests", body, AUTH))
    assert status == 400 and b"memory_mb" in data


def test_negative_content_length_is_400_and_nothing_is_buffered(server):
    """Finding 6: `Content-Length: -1` made the stdlib server read to EOF (200 MB buffered)."""
    before = rss_mb()
    with connect(server) as s:
        s.sendall(b"POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nAuthorization: Bearer t0ken\r\n\r\n")
        sent = 0
        try:
            for _ in range(200):  # up to 100 MB, until the server hangs up
                s.sendall(b"x" * (512 * 1024))
                sent += 512 * 1024
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(3)
        try:
            answer = s.recv(4096)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert sent < 50 << 20, "the server kept reading a body of negative length"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
    assert rss_mb() - before < 30
    assert_healthy(server)


def test_declared_or_streamed_body_past_the_cap_is_413_without_buffering_it(server):
    status, _, elapsed = request(server, b"POST /run_code HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\n"
                                         b"Content-Length: 1000000000000\r\n\r\n")
    assert status == 413 and elapsed < 2.0
    before = rss_mb()
    chunk = b"x" * (256 * 1024)
    raw = b"POST /run_code HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 40 + b"0\r\n\r\n"  # 10 MB against a 1 MB cap
    status, data, _ = request(server, raw)
    assert status == 413 and b"limit" in data
    assert rss_mb() - before < 30
    assert_healthy(server)


def test_no_token_is_401_before_the_body_is_sent(server):
    """Finding 6: the body was read before the token check: headers alone got no answer."""
    status, data, elapsed = request(server, b"POST /run_tests HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
    assert status == 401 and elapsed < 1.0  # answered well before the request deadline
    status, _, _ = request(server, b"POST /run_tests HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
                                   b"Content-Length: 5000000\r\n\r\n")
    assert status == 401


@pytest.mark.parametrize("trickle,start", [
    (b"", b""),                                                       # connect, send nothing
    (b"X", b"POST /run_code HTTP/1.1\r\nHost: x\r\nX-Slow: "),         # headers one byte at a time
    (b"x", b"POST /run_code HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\nContent-Length: 999\r\n\r\n"),
])
def test_slow_clients_are_dropped_within_the_request_deadline(server, trickle, start):
    """Finding 6: no socket timeouts; 200 slowloris connections were held forever."""
    with connect(server) as s:
        s.sendall(start)
        took = seconds_until_closed(s, trickle, every_s=0.2, limit_s=TIMEOUT_S + 5)
    assert took < TIMEOUT_S + 1.5


def test_200_connections_at_once_are_all_answered(server):
    """Finding 6: listen backlog 5 reset 40-65% of a 200-connection burst."""
    backlog = listen_backlog(server)
    assert backlog is None or backlog >= 1024  # the stdlib server listened with 5
    statuses = flood(server, 200, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses.count(200) == 200, statuses


@pytest.mark.parametrize("body", [
    b'{"code": "print(\xff\xfe)"}',                    # invalid UTF-8
    b"[" * 100_000 + b"]" * 100_000,                   # 100k-deep JSON
    b'{"code": "print(1)", "x": ' + b"[" * 200 + b"]" * 200 + b"}",   # deeper than the service's limit
    b'{"code": "print(1)", "run_timeout": 1' + b"0" * 5000 + b"}",    # an int past Python's digit limit
    b'{"code": "print(1)", "memory_limit_MB": 1e999}',
    b"",
])
def test_hostile_json_is_400_not_500(server, body):
    status, data, _ = request(server, post("/run_code", body, AUTH))
    assert status == 400, data[-300:]
    assert_healthy(server)


def test_trainer_token_reaches_a_token_protected_sandbox(server, monkeypatch):
    """Finding 3: the code client the trainer builds sent no token, so every code sample was masked."""
    from rl.actors import build_reward_router
    from rl.config import GRPOConfig

    monkeypatch.setenv("MY_SANDBOX_TOKEN", TOKEN)
    cfg = GRPOConfig(sandbox_url=f"http://127.0.0.1:{server}", sandbox_token_env="MY_SANDBOX_TOKEN")
    router = build_reward_router(cfg)
    try:
        assert router.code_client.executor.token == TOKEN
        result = router.code_client.run_tests("def f(x):\n    return x + 1\n", TestSpec.call("f", [[1]], [2]))
        assert result.error is None and (result.passed, result.total) == (1, 1)
    finally:
        router.close()
    monkeypatch.delenv("MY_SANDBOX_TOKEN")
    router = build_reward_router(cfg)
    try:
        assert router.code_client.executor.token is None
        with pytest.raises(PermissionError):  # 401 raises: a wrong deployment is loud, not a masked run
            router.code_client.run_tests("def f(x):\n    return x\n", TestSpec.call("f", [[1]], [1]))
    finally:
        router.close()


# ------------------------------------------------------------------------------------- host state on exit

_OWNER = """
import os, sys, json
from sandbox.isolation import Sandbox
s = Sandbox(1)
print(json.dumps({"parents": s._cg.parents, "stage": s._stage_dir}), flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), 9)
"""


def _owner(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _OWNER, mode], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    return json.loads(out.stdout.splitlines()[0])


def _state(info: dict) -> list[str]:
    paths = [p for c, p in info["parents"].items() if not c.startswith("_")] + [info["stage"] or ""]
    return [p for p in paths if p and os.path.exists(p)]


def test_sandbox_owner_that_exits_without_close_leaves_nothing(sb):
    info = _owner("exit")
    assert info["parents"] and _state(info) == []


def test_state_of_a_killed_owner_is_swept_by_the_next_sandbox(sb):
    from sandbox.isolation import Sandbox

    info = _owner("kill")  # SIGKILL: nothing at exit ran
    left = _state(info)
    assert left, "a killed owner should leave its folders (else this test shows nothing)"
    base = os.path.dirname(next(p for c, p in sb._cg.parents.items() if not c.startswith("_")))
    alive = os.path.join(base, f"mixrl-sandbox-{os.getppid()}-abcdef")  # a live pid's folder: never touched
    os.makedirs(alive, exist_ok=True)
    stage_alive = tempfile.mkdtemp(prefix=f"mixrl-sandbox-stage-{os.getppid()}-")
    try:
        Sandbox(1).close()
        assert _state(info) == []
        assert os.path.isdir(alive) and os.path.isdir(stage_alive)
    finally:
        os.rmdir(alive)
        os.rmdir(stage_alive)


def test_http_server_doctests():
    import doctest

    import sandbox.http_server

    result = doctest.testmod(sandbox.http_server)
    assert result.attempted > 0 and result.failed == 0


def test_sigterm_stops_the_service_and_removes_its_cgroups(sb):
    """uvicorn re-raises SIGTERM after its shutdown, which killed the process before the sandbox's clean-up."""
    import re
    import signal

    base = os.path.dirname(next(p for c, p in sb._cg.parents.items() if not c.startswith("_")))
    proc = subprocess.Popen([sys.executable, "-m", "sandbox.service", "--port", "0"], stderr=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        line = ""
        while "sandbox service on" not in line:
            line = proc.stderr.readline()
            assert line, "the service exited before serving"
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", line).group(1))
        assert_healthy(port)
        assert [d for d in os.listdir(base) if d.startswith(f"mixrl-sandbox-{proc.pid}-")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert [d for d in os.listdir(base) if d.startswith(f"mixrl-sandbox-{proc.pid}-")] == []
    finally:
        proc.kill()
        proc.wait()
