"""test_serve_deploy: `cmake --install` and the systemd unit.

Installs the build into a temporary prefix and checks that the three
programs land side by side and work from there (the installed coordinator
finds its installed workers), that the installed unit points at the
installed hearth and passes `systemd-analyze verify` with nothing to say,
that its exposure score (`systemd-analyze security --offline`) is low, and
that the example configuration's arguments start a server.
"""
import os
import re
import shlex
import subprocess

import pytest

from test_serve_util import MODEL, Server, require_model

require_model()
BUILD = os.environ.get("HEARTH_BUILD_DIR", "")
SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    p = tmp_path_factory.mktemp("prefix")
    r = subprocess.run(["cmake", "--install", BUILD, "--prefix", str(p)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return p


def test_installed_programs_work(prefix):
    for name in ["hearth", "hearth-gpu-worker", "hearth-cpu-worker"]:
        assert os.access(prefix / "bin" / name, os.X_OK), name
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_WORKER_DIR"}
    r = subprocess.run([str(prefix / "bin" / "hearth"), "run", "-m", MODEL, "-p", "Hello", "-n", "3", "--temp", "0",
                        "-t", "2", "-v"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr  # the workers were found next to the installed hearth (/proc/self/exe)
    assert r.stdout.strip(), r.stderr


def test_unit_verifies(prefix):
    unit = prefix / "lib" / "systemd" / "system" / "hearth.service"
    text = unit.read_text()
    assert "ExecStart=%s serve " % (prefix / "bin" / "hearth") in text
    for setting in ["DynamicUser=yes", "ProtectSystem=strict", "RuntimeDirectory=hearth", "PrivateDevices=yes",
                    "LoadCredential=api-key:"]:
        assert setting in text, setting
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                       timeout=120)
    m = re.search(r"Overall exposure level for hearth.service: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    print("exposure", m.group(1))
    assert float(m.group(1)) <= 2.0, r.stdout


def test_example_config_starts_a_server(prefix):
    conf = prefix / "share" / "doc" / "hearth" / "hearth.conf.example"
    out = subprocess.run(["bash", "-c", "set -a; . '%s'; printf %%s \"$HEARTH_SERVE_ARGS\"" % conf], capture_output=True,
                         text=True, check=True).stdout
    args = shlex.split(out)
    assert args[0] == "-m"
    args = args[2:]  # the test's model instead of /var/lib/hearth/models/...
    i = args.index("--port")
    del args[i:i + 2]
    args = [a if a != "4096" else "1024" for a in args]  # a smaller context for the test machine
    s = Server(*args)
    try:
        status, body = s.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2})
        assert status == 200, body
    finally:
        assert s.stop() == 0, s.errtext()
