"""The HTTP service on loopback: verl's sandbox_fusion client unchanged, /run_tests, 429, tokens, bad input."""

import importlib.util
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sandbox.client import SandboxClient
from sandbox.harness import TestJob, TestSpec
from sandbox.isolation import Sandbox
from sandbox.service import make_server


def _verl_sandbox_fusion():
    """verl's sandbox_fusion package, loaded from its files without importing verl/__init__ (torch, ~6 s)."""
    spec = importlib.util.find_spec("verl")
    if spec is None:
        pytest.skip("verl is not installed")
    root = Path(spec.submodule_search_locations[0]) / "utils" / "reward_score" / "sandbox_fusion"
    name = "verl_sandbox_fusion_under_test"
    if name not in sys.modules:
        pkg = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
        module = importlib.util.module_from_spec(pkg)
        sys.modules[name] = module
        pkg.loader.exec_module(module)
    return sys.modules[name]


def _start(server):
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def service(sb):
    server, svc = make_server("127.0.0.1", 0, sandbox=sb, max_pending=8)
    url = _start(server)
    yield url, svc
    server.shutdown()
    server.server_close()
    svc.close()


def _post(url, path, body: bytes, headers=None):
    req = urllib.request.Request(url + path, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def test_verl_client_scores_stdio_and_function_tests(service, no_leaks):
    url, _ = service
    sf = _verl_sandbox_fusion()
    stdio = {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}
    right = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    wrong = "```python\na, b = map(int, input().split())\nprint(a * b)\n```"
    assert sf.compute_score(url + "/run_code", None, 256, right, json.dumps(stdio), timeout=5)[0] == 1.0
    assert sf.compute_score(url + "/run_code", None, 256, wrong, json.dumps(stdio), timeout=5)[0] == 0.0
    fn = {"fn_name": "add", "inputs": ["1\n2"], "outputs": ["3"]}  # verl's wrapper: JSON lines on stdin
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    assert sf.compute_score(url + "/run_code", None, 256, code, json.dumps(fn), timeout=5)[0] == 1.0


def test_verl_client_sees_timeouts_and_runtime_errors(service, no_leaks):
    url, _ = service
    sf = _verl_sandbox_fusion()
    utils = sys.modules["verl_sandbox_fusion_under_test.utils"]
    resp, err = utils.call_sandbox_api(url + "/run_code", "import time\ntime.sleep(5)", None, 1, 1, 256)
    assert err is None and resp["status"] == "Failed" and resp["run_result"]["status"] == "TimeLimitExceeded"
    results, _ = sf.check_correctness(url + "/run_code", {"inputs": [""], "outputs": ["1"]}, "raise ValueError", 2)
    assert results == [-2]
    results, _ = sf.check_correctness(url + "/run_code", {"inputs": [""], "outputs": ["1"]}, "while True: pass", 1)
    assert results == [-3]


def test_run_tests_batch_through_our_client(service, no_leaks):
    url, _ = service
    client = SandboxClient(url, batch_size=2)
    jobs = [TestJob(f"def f(x):\n    return x + {k}\n", TestSpec.call("f", [[1]], [2])) for k in range(5)]
    results = client.run_tests(jobs)
    assert [r.passed for r in results] == [False, True, False, False, False]
    assert client.run_code("print(6 * 7)").stdout == "42\n"
    assert client.health()["isolation"]["mode"].startswith("bwrap")


def test_bad_requests_get_a_status_and_the_server_stays_up(service):
    url, _ = service
    assert _post(url, "/run_code", b"{not json")[0] == 400
    assert _post(url, "/run_code", b'{"language": "python"}')[0] == 400
    status, body, _ = _post(url, "/run_code", b'{"code": "1", "language": "cobol"}')
    assert status == 400 and "supported" in body["error"]
    assert _post(url, "/nope", b"{}")[0] == 404
    assert _post(url, "/run_tests", b'{"jobs": [{"code": "x"}]}')[0] == 400
    assert _post(url, "/run_tests", json.dumps({"jobs": [{"code": "", "spec": {"kind": "x"}}]}).encode())[0] == 400
    with urllib.request.urlopen(url + "/health", timeout=5) as r:
        assert json.loads(r.read())["status"] == "ok"


def test_full_service_answers_429_with_retry_after_and_the_client_retries(sb, no_leaks):
    server, svc = make_server("127.0.0.1", 0, sandbox=sb, max_pending=1)
    url = _start(server)
    try:
        slow = threading.Thread(target=_post, args=(url, "/run_code", json.dumps(
            {"code": "import time\ntime.sleep(3)", "run_timeout": 6}).encode()))
        slow.start()
        deadline = time.monotonic() + 20  # admitted, not a fixed sleep: on a loaded host 0.3 s was not always enough
        while svc.health()["pending"] < 1:
            assert time.monotonic() < deadline, "the slow request was never admitted"
            time.sleep(0.02)
        status, body, headers = _post(url, "/run_code", b'{"code": "print(1)"}')
        assert status == 429 and headers["Retry-After"] == "1" and "busy" in body["error"]
        assert _post(url, "/run_tests", json.dumps({"jobs": [TestJob("x", TestSpec.stdio([""], [""])).to_dict()] * 2}
                                                   ).encode())[0] == 413
        t = time.monotonic()
        assert SandboxClient(url, backoff_s=0.1).run_code("print(1)").stdout == "1\n"  # waited, retried
        assert time.monotonic() - t >= 0.3
        slow.join()
    finally:
        server.shutdown()
        server.server_close()
        svc.close()


def test_token_required_off_loopback_and_enforced(sb):
    with pytest.raises(ValueError, match="token"):
        make_server("0.0.0.0", 0, sandbox=sb)
    server, svc = make_server("127.0.0.1", 0, sandbox=sb, token="s3cret")
    url = _start(server)
    try:
        assert _post(url, "/run_code", b'{"code": "print(1)"}')[0] == 401
        assert _post(url, "/run_code", b'{"code": "print(1)"}', {"Authorization": "Bearer nope"})[0] == 401
        assert _post(url, "/run_code", b'{"code": "print(1)"}', {"Authorization": "Bearer s3cret"})[0] == 200
        with pytest.raises(PermissionError):
            SandboxClient(url, token="nope").run_code("print(1)")
        assert SandboxClient(url, token="s3cret").run_code("print(1)").stdout == "1\n"
        with urllib.request.urlopen(url + "/health", timeout=5) as r:  # liveness needs no token
            assert r.status == 200
    finally:
        server.shutdown()
        server.server_close()
        svc.close()


def test_sandbox_failure_is_reported_distinctly(no_leaks):
    broken = Sandbox(1, bwrap="/nonexistent/bwrap")
    server, svc = make_server("127.0.0.1", 0, sandbox=broken)
    url = _start(server)
    try:
        status, body, _ = _post(url, "/run_code", b'{"code": "print(1)"}')
        assert status == 200 and body["status"] == "SandboxError"
        sf = _verl_sandbox_fusion()
        results, _ = sf.check_correctness(url + "/run_code", {"inputs": [""], "outputs": ["1"]}, "print(1)", 2)
        assert results == [-1]  # verl: sandbox error, not a wrong answer
        [r] = SandboxClient(url).run_tests([TestJob("print(1)", TestSpec.stdio([""], ["1"]))])
        assert r.status == "sandbox_error"
    finally:
        server.shutdown()
        server.server_close()
        svc.close()
        broken.close()


def test_client_gives_up_with_sandbox_error_when_nobody_listens():
    client = SandboxClient("http://127.0.0.1:9", max_retries=1, backoff_s=0.05, timeout_s=2)
    [r] = client.run_tests([TestJob("print(1)", TestSpec.stdio([""], ["1"]))])
    assert r.status == "sandbox_error" and "unavailable" in r.message
