"""Issue 18, `mixrl serve-rewards` (OpenRLHF ``/get_reward``) under hostile clients.

Before (stdlib http.server): no token option, ``--host 0.0.0.0`` served anyone, no body cap (one 8 MB query
took the server to 1,030 MB: the repetition detector costs ~115 MB per MB of text), ``Content-Length: -1``
bypassed any limit, the body was read before anything else, no socket timeouts, backlog 5, and invalid UTF-8 /
deep JSON were 500s.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request

import pytest

from rewards.compat import make_reward_server
from rewards.router import RewardRouter
from tests.hostile_http import (connect, flood, listen_backlog, post, request, rss_mb, seconds_until_closed,
                                self_signed_cert)

TOKEN = "r3wards"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT_S = 1.5
GOOD = json.dumps({"query": ["Q \\boxed{2}"], "prompts": ["Q "], "labels": ["2"]}).encode()


def _serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def port(pool):
    server = _serve(make_reward_server("127.0.0.1", 0, router=RewardRouter(pool=pool), token=TOKEN,
                                       max_body_bytes=1 << 20, max_query_chars=64 * 1024,
                                       request_timeout_s=TIMEOUT_S))
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_token_is_required_and_checked_before_the_body(port):
    status, data, _ = request(port, post("/get_reward", GOOD, AUTH))
    assert status == 200 and json.loads(data.partition(b"\r\n\r\n")[2])["rewards"] == [pytest.approx(1.1)]
    assert request(port, post("/get_reward", GOOD))[0] == 401
    assert request(port, post("/get_reward", GOOD, {"Authorization": "Bearer nope"}))[0] == 401
    # headers only, a large body announced and never sent: the answer comes at once, not at the deadline
    status, _, elapsed = request(port, b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n")
    assert status == 401 and elapsed < 1.0
    assert request(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200  # open


def test_non_loopback_without_a_token_is_refused_unless_explicitly_insecure(pool):
    with pytest.raises(ValueError, match="without a token"):
        make_reward_server("0.0.0.0", 0, router=RewardRouter(pool=pool))
    server = make_reward_server("0.0.0.0", 0, router=RewardRouter(pool=pool), insecure_no_token=True)
    server.server_close()
    server = make_reward_server("0.0.0.0", 0, router=RewardRouter(pool=pool), token=TOKEN)
    server.server_close()


def test_cli_refuses_a_public_host_without_a_token(monkeypatch, capsys):
    from mixrl.cli import main

    monkeypatch.delenv("MIXRL_REWARDS_TOKEN", raising=False)
    assert main(["serve-rewards", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--insecure-no-token" in capsys.readouterr().err


def test_oversized_query_and_body_are_refused_before_scoring(port):
    """Finding 4: an 8 MB query took the server to 1,030 MB."""
    before = rss_mb()
    big = json.dumps({"query": ["ab" * 400_000], "prompts": [""], "labels": ["1"]}).encode()  # 800 kB < 1 MB cap
    status, data, _ = request(port, post("/get_reward", big, AUTH))
    assert status == 400 and b"query[0]" in data
    status, data, elapsed = request(port, b"POST /get_reward HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer r3wards\r\n"
                                          b"Content-Length: 8000000\r\n\r\n")
    assert status == 413 and elapsed < 1.0
    assert rss_mb() - before < 40


def test_negative_content_length_is_400(port):
    status, _, elapsed = request(port, b"POST /get_reward HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer r3wards\r\n"
                                       b"Content-Length: -1\r\n\r\n" + b"x" * 100_000)
    assert status == 400 and elapsed < 2.0


@pytest.mark.parametrize("body", [
    b'{"query": ["\xff"], "labels": ["1"]}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"query": ["a"], "labels": ["1"], "global_step": NaN}',
    b'{"query": ["a"], "labels": ["1"], "global_step": 1e999}',
    b'{"query": ["a"], "labels": ["1"], "global_step": 1' + b"0" * 30 + b"}",
])
def test_hostile_json_is_400(port, body):
    status, data, _ = request(port, post("/get_reward", body, AUTH))
    assert status == 400, data[-300:]


def test_slowloris_is_dropped_and_a_burst_is_accepted(port):
    with connect(port) as s:
        s.sendall(b"POST /get_reward HTTP/1.1\r\nHost: x\r\n")
        assert seconds_until_closed(s, b"Y", every_s=0.2, limit_s=TIMEOUT_S + 5) < TIMEOUT_S + 1.5
    backlog = listen_backlog(port)
    assert backlog is None or backlog >= 1024  # the stdlib server listened with 5
    statuses = flood(port, 200, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses.count(200) == 200


def test_https_with_a_self_signed_certificate(pool, tmp_path):
    certfile, keyfile = self_signed_cert(tmp_path)
    server = _serve(make_reward_server("127.0.0.1", 0, router=RewardRouter(pool=pool), token=TOKEN,
                                       ssl_certfile=certfile, ssl_keyfile=keyfile))
    try:
        assert server.url.startswith("https://")
        req = urllib.request.Request(server.url + "/get_reward", data=GOOD, headers=AUTH)
        with urllib.request.urlopen(req, timeout=20, context=ssl.create_default_context(cafile=certfile)) as r:
            assert json.loads(r.read())["rewards"] == [pytest.approx(1.1)]
        with pytest.raises(urllib.error.URLError):  # a client that does not trust the certificate
            urllib.request.urlopen(req, timeout=20, context=ssl.create_default_context())
    finally:
        server.shutdown()
        server.server_close()
