"""The adversarial battery: hostile programs, each asserting reward 0 (or the expected status), and no leaks.

Pattern: a hostile program prints the expected output only if its attack worked, so a broken isolation turns
into a passing test case (reward 1) and the assertion fails -- these tests can fail. Every test runs under the
small HOSTILE limits (conftest.py) and the ``no_leaks`` fixture: no process under a sandbox uid and no run cgroup
survives it.
"""

import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from sandbox.harness import TestSpec, run_tests
from sandbox.isolation import MEMORY, OK, OUTPUT_LIMIT, RUNTIME_ERROR, SANDBOX_ERROR, TIMEOUT

from .conftest import HOSTILE

pytestmark = pytest.mark.usefixtures("no_leaks")

ESCAPED = "ESCAPED"


def stdio_reward(sb, code: str, expected: str = ESCAPED, stdin: str = "", **kw) -> float:
    result = run_tests(sb, code, TestSpec.stdio([stdin], [expected]), per_test_timeout_s=kw.pop("wall", 1.5), **kw)
    assert result.status != SANDBOX_ERROR, result.message
    return 1.0 if result.passed else 0.0


# ---- resource exhaustion ----------------------------------------------------------------------------------

def test_fork_bomb_is_contained_and_a_concurrent_run_is_unaffected(sb):
    assert sb.report.forks_contained, "refusing to run a fork bomb without a pids cgroup or RLIMIT_NPROC"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    benign = {}

    def run_benign():  # starts while the bomb is running
        time.sleep(0.5)
        benign["r"] = sb.run_code("print(sum(range(10)))", limits=replace(HOSTILE, wall_time_s=10))

    t = threading.Thread(target=run_benign)
    t.start()
    r = sb.run_code(bomb)
    t.join()
    # contained by the pids limit; what ends it is the wall clock or, when the bomb's processes outgrow the memory
    # cgroup first (seen under load), the memory limit: both kill the whole tree
    assert r.status in (TIMEOUT, MEMORY) and "pids" in r.limits_hit, r
    assert benign["r"].status == OK and benign["r"].stdout == "45\n"
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


def test_forks_are_bounded_by_the_limit(sb):
    # A bounded bomb (60 sleeping children at most) that reports how many forks succeeded.
    code = ("import os, time\nn = 0\nfor _ in range(60):\n    try:\n        if os.fork() == 0:\n"
            "            time.sleep(30)\n            os._exit(0)\n        n += 1\n    except OSError:\n        break\n"
            "print(n)\n")
    r = sb.run_code(code)
    assert r.status == OK, r
    assert int(r.stdout) <= HOSTILE.max_processes


def test_thread_bomb(sb):
    code = ("import threading, time\nn = 0\ntry:\n    while n < 5000:\n"
            "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n        n += 1\n"
            "except RuntimeError:\n    pass\nprint('ESCAPED' if n > 100 else n, flush=True)\nimport os\nos._exit(0)\n")
    assert stdio_reward(sb, code) == 0.0
    r = sb.run_code(code)
    assert r.status == OK and int(r.stdout) <= HOSTILE.max_processes, r


def test_huge_allocation(sb):
    r = sb.run_code("x = bytearray(8 * 2**30)\nprint('ESCAPED')")
    assert r.status == MEMORY, r
    assert stdio_reward(sb, "x = b'a' * (2 * 2**30)\nprint('ESCAPED')") == 0.0


def test_slow_memory_growth(sb):
    code = "import time\nchunks = []\nwhile True:\n    chunks.append(bytearray(4 * 2**20))\n    time.sleep(0.002)\n"
    r = sb.run_code(code)
    assert r.status == MEMORY and r.memory_peak_bytes <= HOSTILE.memory_mb * 2**20, r


def test_busy_loop(sb):
    t = time.monotonic()
    r = sb.run_code("while True:\n    pass\n")
    assert r.status == TIMEOUT and time.monotonic() - t < HOSTILE.wall_time_s + 1.5, r


def test_endless_sleep(sb):
    r = sb.run_code("import time\ntime.sleep(10**6)\nprint('ESCAPED')")
    assert r.status == TIMEOUT and r.stdout == "", r


def test_ignoring_sigterm_and_friends(sb):
    code = ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, "
            "signal.SIGXCPU):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)\n")
    assert sb.run_code(code).status == TIMEOUT


def test_cpu_limit_with_sigxcpu_ignored(sb):
    # wall time above the CPU limit: RLIMIT_CPU's hard limit SIGKILLs even when SIGXCPU is ignored.
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n"
    r = sb.run_code(code, limits=replace(HOSTILE, cpu_time_s=1, wall_time_s=6))
    assert r.status == TIMEOUT and r.wall_time_s < 5, r


def test_double_fork_daemon_does_not_outlive_the_run(sb):
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        while True:\n            time.sleep(0.1)\n    os._exit(0)\nos.wait()\nprint('done')\n")
    r = sb.run_code(code)
    assert r.status == OK and r.stdout == "done\n", r
    # no_leaks checks no process of a sandbox uid survives


def test_gigabyte_of_output(sb):
    t = time.monotonic()
    r = sb.run_code("import sys\nchunk = 'x' * 2**20\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n")
    assert r.status == OUTPUT_LIMIT and r.stdout_truncated and len(r.stdout) == HOSTILE.max_stdout_bytes, r.status
    assert time.monotonic() - t < 5
    assert stdio_reward(sb, "print('ESCAPED' * 10**7)") == 0.0


def test_flood_of_stderr_is_truncated(sb):
    r = sb.run_code("import sys\nfor _ in range(200):\n    sys.stderr.write('e' * 65536)\nprint('ok')\n")
    assert r.status == OK and r.stdout == "ok\n" and r.stderr_truncated
    assert len(r.stderr) <= HOSTILE.max_stderr_bytes


def test_unread_large_stdin(sb):
    t = time.monotonic()
    r = sb.run_code("print('ok')", stdin="x" * (16 << 20))
    assert r.status == OK and r.stdout == "ok\n", r
    assert time.monotonic() - t < HOSTILE.wall_time_s


def test_disk_filling_is_capped_and_host_disk_untouched(sb):
    free_before = shutil.disk_usage("/tmp").free
    code = ("n = 0\nfor path in ('/w/fill', '/tmp/fill'):\n    try:\n        with open(path, 'wb') as f:\n"
            "            while True:\n                f.write(b'x' * 2**20)\n                f.flush()\n"
            "                n += 2**20\n    except OSError:\n        pass\n"
            f"print('ESCAPED' if n > 2 * {HOSTILE.workdir_mb} * 2**20 + 2**21 else n)\n")
    assert stdio_reward(sb, code) == 0.0
    assert abs(shutil.disk_usage("/tmp").free - free_before) < 64 << 20


def test_descriptor_exhaustion(sb):
    code = ("import os\nfds = []\ntry:\n    while len(fds) < 100000:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
            f"except OSError:\n    pass\nprint('ESCAPED' if len(fds) > {HOSTILE.max_open_files} else len(fds))\n")
    assert stdio_reward(sb, code) == 0.0


def test_file_count_exhaustion(sb):
    code = ("n = 0\ntry:\n    while n < 200000:\n        open(f'/tmp/f{n}', 'w').close()\n        n += 1\n"
            "except OSError:\n    pass\nprint('ESCAPED' if n >= 200000 else n)\n")
    assert stdio_reward(sb, code, wall=3.0) == 0.0


# ---- escaping the filesystem, reading secrets ---------------------------------------------------------

def test_writes_outside_the_workdir(sb):
    code = ("ok = []\nfor p in ('/usr/mixrl_x', '/etc/mixrl_x', '/root/mixrl_x', '/mixrl_x', '/work/mixrl_x',"
            " '/sys/mixrl_x', '/dev/mixrl_x', '/bin/mixrl_x', '/proc/mixrl_x'):\n    try:\n"
            "        open(p, 'w').write('x')\n        ok.append(p)\n    except OSError:\n        pass\n"
            "print('ESCAPED' if ok else 'contained', ok)\n")
    r = sb.run_code(code)
    assert r.stdout.startswith("contained"), r.stdout
    for p in ("/usr/mixrl_x", "/etc/mixrl_x", "/root/mixrl_x", "/mixrl_x", "/work/mixrl_x"):
        assert not os.path.exists(p)


def test_hostname_change_stays_in_the_run(sb):
    host = socket.gethostname()
    code = ("import socket\ntry:\n    open('/proc/sys/kernel/hostname', 'w').write('pwned')\nexcept OSError:\n"
            "    pass\nprint(socket.gethostname())\n")
    sb.run_code(code)  # its own UTS namespace: it may rename itself
    assert socket.gethostname() == host


def test_host_environment_is_not_visible(sb, monkeypatch):
    secret = secrets.token_hex(8)
    monkeypatch.setenv("MIXRL_TEST_SECRET", secret)
    code = ("import os, glob\nfound = os.environ.get('MIXRL_TEST_SECRET')\n"
            "for path in glob.glob('/proc/*/environ'):\n    try:\n        data = open(path, 'rb').read()\n"
            "    except OSError:\n        continue\n    for kv in data.split(b'\\0'):\n"
            "        if kv.startswith(b'MIXRL_TEST_SECRET='):\n            found = kv.split(b'=', 1)[1].decode()\n"
            "print(found)\n")
    assert stdio_reward(sb, code, expected=secret) == 0.0
    assert secret not in sb.run_code(code + "import os\nprint(os.environ)\nprint(open('/proc/1/environ').read())\n").stdout


def test_home_directory_and_repository_are_not_visible(sb):
    home_secret = Path.home() / f".mixrl-sandbox-test-{secrets.token_hex(4)}"
    value = secrets.token_hex(8)
    home_secret.write_text(value)
    try:
        code = ("import os\nfound = ''\nfor top in ('/root', '/home', '/work', os.path.expanduser('~')):\n"
                "    for dirpath, _, files in os.walk(top):\n        for name in files:\n"
                "            if name.startswith('.mixrl-sandbox-test-'):\n"
                "                try:\n                    found = open(os.path.join(dirpath, name)).read()\n"
                "                except OSError:\n                    pass\n"
                "try:\n    open('/work/main/pyproject.toml').read()\n    found = found or 'repo'\nexcept OSError:\n"
                "    pass\nprint(found)\n")
        # the walk's time is not under test here: a loaded host must not turn it into a timeout (one full-suite run
        # got an empty stdout from the 1.5 s HOSTILE limits; it passed alone)
        assert stdio_reward(sb, code, expected=value, wall=10.0) == 0.0
        seen = sb.run_code(code, limits=replace(HOSTILE, wall_time_s=10.0, cpu_time_s=10))
        assert (seen.status, seen.stdout) == (OK, "\n"), (seen.status, seen.limits_hit, seen.stderr[-500:])
    finally:
        home_secret.unlink()


def test_other_processes_proc_is_not_visible(sb):
    marker = f"mixrl-marker-{secrets.token_hex(4)}"
    host = subprocess.Popen(["/bin/sh", "-c", f"exec -a {marker} sleep 30"])
    try:
        code = ("import os\npids = [p for p in os.listdir('/proc') if p.isdigit()]\nseen = ''\nfor p in pids:\n"
                "    try:\n        seen += open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace')\n"
                "    except OSError:\n        pass\n"
                f"print('ESCAPED' if '{marker}' in seen or 'pytest' in seen or len(pids) > 4 else len(pids))\n")
        assert stdio_reward(sb, code) == 0.0
    finally:
        host.kill()
        host.wait()


def test_state_left_in_tmp_is_gone_for_the_next_run(sb):
    token = secrets.token_hex(8)
    sb.run_code(f"for p in ('/tmp/state', '/w/state', '/dev/shm/state'):\n    try:\n"
                f"        open(p, 'w').write('{token}')\n    except OSError:\n        pass\n")
    code = ("found = ''\nfor p in ('/tmp/state', '/w/state', '/dev/shm/state'):\n    try:\n"
            "        found = open(p).read()\n    except OSError:\n        pass\nprint(found)\n")
    assert stdio_reward(sb, code, expected=token) == 0.0
    assert not any(token in p.read_text(errors="ignore") for p in Path("/tmp").glob("state*") if p.is_file())


# ---- network ----------------------------------------------------------------------------------------

def test_network_egress_and_dns(sb):
    code = ("import socket\nok = []\nfor target in [('1.1.1.1', 53), ('8.8.8.8', 443)]:\n    try:\n"
            "        socket.create_connection(target, timeout=0.5)\n        ok.append(target)\n"
            "    except OSError:\n        pass\nfor name in ('example.com', 'localhost'):\n    try:\n"
            "        socket.getaddrinfo(name, 80)\n        ok.append(name)\n    except OSError:\n        pass\n"
            "try:\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.sendto(b'x', ('1.1.1.1', 53))\n"
            "    ok.append('udp')\nexcept OSError:\n    pass\nprint('ESCAPED' if ok else 'contained', ok)\n")
    r = sb.run_code(code)
    assert r.stdout.startswith("contained"), r.stdout


def test_host_loopback_service_is_unreachable(sb):
    banner = secrets.token_hex(8)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def serve():
        server.settimeout(5)
        try:
            conn, _ = server.accept()
            conn.sendall(banner.encode() + b"\n")
            conn.close()
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        code = (f"import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                "    print(s.recv(100).decode().strip())\nexcept OSError as e:\n    print('refused', e)\n")
        assert stdio_reward(sb, code, expected=banner) == 0.0
    finally:
        server.close()


# ---- signals and the process tree ---------------------------------------------------------------------

def test_kill_minus_one_reaches_only_the_run(sb):
    # Host processes running under the very uids the sandbox slots use: only the pid namespace protects them.
    victims = [subprocess.Popen(["sleep", "30"], user=uid, group=uid) for uid in sb.sandbox_uids()]
    try:
        r = sb.run_code("import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('alive')\n")
        assert r.status in (OK, RUNTIME_ERROR), r
        assert all(v.poll() is None for v in victims), "kill(-1) reached a host process"
        assert sb.run_code("print(1)").stdout == "1\n"
    finally:
        for v in victims:
            v.kill()
            v.wait()


def test_killing_parent_and_init(sb):
    code = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nprint('ESCAPED')\n"
    r = sb.run_code(code)
    assert r.status != SANDBOX_ERROR
    assert sb.run_code("print(2)").stdout == "2\n"  # the pool still works


def test_closing_stdout(sb):
    assert stdio_reward(sb, "import os\nos.close(1)\nos.close(2)\n", expected="") == 1.0  # nothing expected: fine
    assert stdio_reward(sb, "import os\nos.close(1)\nos.close(2)\n", expected="42") == 0.0
    wrong = "import os\ndef f(x):\n    os.close(1)\n    return x + 1\n"
    assert not run_tests(sb, wrong, TestSpec.call("f", [[1]], [3])).passed


def test_privilege_and_namespace_syscalls_are_refused(sb):
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nok = []\n"
            "if libc.unshare(0x10000000) == 0: ok.append('unshare-user')\n"
            "if libc.unshare(0x00020000) == 0: ok.append('unshare-mnt')\n"
            "if libc.mount(b'none', b'/w', b'tmpfs', 0, None) == 0: ok.append('mount')\n"
            "if libc.ptrace(16, 1, 0, 0) == 0: ok.append('ptrace')\n"
            "try:\n    os.setuid(0)\n    ok.append('setuid')\nexcept OSError:\n    pass\n"
            "print('ESCAPED' if ok else 'contained', ok)\n")
    r = sb.run_code(code)
    assert r.stdout.startswith("contained"), r


# ---- cheating the harness -----------------------------------------------------------------------------

def test_os_exit_before_assertions(sb):
    code = "import os\ndef f(x):\n    return 0\nos._exit(0)\n"
    assert not run_tests(sb, code, TestSpec.asserts("assert f(1) == 2")).passed


def test_sys_exit_before_assertions(sb):
    code = "import sys\ndef f(x):\n    return 0\nsys.exit(0)\n"
    assert not run_tests(sb, code, TestSpec.asserts("assert f(1) == 2")).passed


def test_exit_inside_the_function_call(sb):
    code = "import os\ndef f(x):\n    os._exit(0)\n"
    assert not run_tests(sb, code, TestSpec.call("f", [[1]], [2])).passed
    assert not run_tests(sb, code, TestSpec.asserts("assert f(1) == 2")).passed


def test_always_equal_objects(sb):
    evil = ("class AlwaysEq(int):\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda s, o: False\n"
            "    def __lt__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
            "def f(x):\n    return AlwaysEq(0)\n")
    assert not run_tests(sb, evil, TestSpec.call("f", [[1]], [2])).passed
    assert not run_tests(sb, evil, TestSpec.asserts("assert f(1) == 2")).passed
    assert not run_tests(sb, evil, TestSpec.asserts("assert abs(f(1) - 2) < 1e-6")).passed
    assert not run_tests(sb, evil, TestSpec.asserts("assert [f(1)] == [2]")).passed
    plain_evil = "class E:\n    def __eq__(self, o):\n        return True\n    def __bool__(self):\n        return True\n" \
                 "def f(x):\n    return E()\n"
    assert not run_tests(sb, plain_evil, TestSpec.call("f", [[1]], [2])).passed
    assert not run_tests(sb, plain_evil, TestSpec.asserts("assert f(1) == 2")).passed
    assert not run_tests(sb, plain_evil, TestSpec.asserts("assert f(1)")).passed
    # monkeypatching a stdlib class's __eq__ is caught too
    patched = "import fractions\nfractions.Fraction.__eq__ = lambda s, o: True\n" \
              "def f(x):\n    return fractions.Fraction(1, 3)\n"
    assert not run_tests(sb, patched, TestSpec.asserts("assert f(1) == 2")).passed


def test_shadowing_json_and_print(sb):
    code = ("import json, builtins, sys\njson.dumps = lambda *a, **k: '2'\n"
            "builtins.print = lambda *a, **k: sys.__stdout__.write('x [0, \"ok\", 2]\\n')\n"
            "sys.modules['json'] = type(sys)('json')\ndef f(x):\n    print(x)\n    return -1\n")
    assert not run_tests(sb, code, TestSpec.call("f", [[1]], [2])).passed
    fine = "import json\njson.dumps = None\nprint = None\ndef f(x):\n    return x + 1\n"
    assert run_tests(sb, fine, TestSpec.call("f", [[1]], [2])).passed  # the harness holds its own references


def test_printing_a_fake_nonce(sb):
    code = ("import os, secrets\ntry:\n    nonce = open('/w/_mixrl_nonce').read()\nexcept OSError:\n"
            "    nonce = secrets.token_hex(16)\nfor fake in (nonce, 'deadbeef' * 4, '0' * 32):\n"
            "    print(fake)\n    print(fake + ' [0, \"ok\", 2]')\nos._exit(0)\n")
    assert not run_tests(sb, code, TestSpec.call("f", [[1]], [2])).passed
    assert not run_tests(sb, code, TestSpec.asserts("assert f(1) == 2")).passed


def test_printing_only_a_prefix_of_the_expected_output(sb):
    assert stdio_reward(sb, "print(1)\nprint(2)\n", expected="1\n2\n3\n") == 0.0
    assert stdio_reward(sb, "print('12')", expected="123") == 0.0
    assert stdio_reward(sb, "print('yes')", expected="YES") == 0.0  # case-sensitive


def test_tracing_to_jump_over_asserts(sb):
    code = ("import sys\ndef jump(frame, event, arg):\n    if event == 'line' and frame.f_code.co_filename == 'tests.py':\n"
            "        try:\n            frame.f_lineno = frame.f_lineno + 1\n        except ValueError:\n            pass\n"
            "    return jump\nsys.settrace(jump)\nsys._getframe().f_back.f_trace = jump\ndef f(x):\n    return 0\n")
    assert not run_tests(sb, code, TestSpec.asserts("assert f(1) == 2\nassert f(2) == 3")).passed


def test_monkeypatching_builtins_the_guard_uses(sb):
    code = ("import builtins\nbuiltins.type = lambda *a: int\nbuiltins.isinstance = lambda *a: True\n"
            "builtins.all = lambda *a: True\nbuiltins.bool = lambda *a: True\n"
            "class E(int):\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return E(0)\n")
    assert not run_tests(sb, code, TestSpec.asserts("assert f(1) == 2")).passed
    assert not run_tests(sb, code, TestSpec.call("f", [[1]], [2])).passed


def test_reading_the_tests_or_driver_state(sb):
    # The assert tests are deleted before the solution runs; call tests never enter the sandbox at all.
    code = ("import os, re\nsrc = ''\nfor name in os.listdir('/w'):\n    if name != 'solution.py':\n        try:\n"
            "            src += open('/w/' + name).read()\n        except OSError:\n            pass\n"
            "found = re.findall(r'== (\\d+)', src)\ndef f(x):\n    return int(found[0]) if found else 0\n")
    assert not run_tests(sb, code, TestSpec.asserts("assert f(1) == 12345")).passed
    assert not run_tests(sb, code, TestSpec.call("f", [[1]], [12345])).passed


def test_sandbox_failure_is_not_a_wrong_answer(sb):
    from sandbox.isolation import Sandbox

    broken = Sandbox(1, bwrap="/nonexistent/bwrap")
    try:
        r = run_tests(broken, "print(1)", TestSpec.stdio([""], ["1"]))
        assert r.status == SANDBOX_ERROR and r.message
    finally:
        broken.close()


def test_concurrent_hostile_runs_do_not_interfere(sb):
    from concurrent.futures import ThreadPoolExecutor

    codes = ["while True:\n    pass\n", "print(sum(range(100)))", "x = bytearray(2**31)", "print('ok')"] * 2
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: sb.run_code(c), codes))
    assert [r.stdout for r in results[1::4]] == ["4950\n"] * 2
    assert [r.stdout for r in results[3::4]] == ["ok\n"] * 2
    assert all(r.status == TIMEOUT for r in results[0::4])
