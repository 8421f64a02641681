#!/usr/bin/env python3
"""test_supervision: kill -9 one worker in the middle of a long generation.

usage: test_supervision.py HEARTH_BINARY

For each worker role (the GPU worker and each of two CPU workers), starts a
greedy `hearth run` through the multi-process runtime, waits until part of
the text is out, kills that worker with SIGKILL, and checks that:
  - the run completes with exactly the text of the dense single-process pass
    (the coordinator restarted the worker alone, replayed the step in flight
    and, for the GPU worker, rebuilt the KV cache);
  - afterwards nothing of the session is left in /dev/shm or in the socket
    folder.
Then the same with a worker stopped by `hearth workers stop` and started by
hand, as a developer would.

Then many sequences at once: `hearth batch` runs six prompts four at a time
(continuous batching, an H2O budget below the sequences whose evictions
go to a q8 cold store recalled per step, sampling with per-sequence seeds); each worker role is killed while four sequences are in
flight (right after the fifth prompt took a finished one's slot). Every
sequence must give the text it gives alone (`hearth batch -np 1
--single-process`), the GPU worker's rebuild replaying each sequence's steps,
and nothing may be left behind. Exits 77 when the model is absent.
"""
import os
import signal
import subprocess
import sys
import threading
import time

HEARTH = sys.argv[1]
BIN_DIR = os.path.dirname(os.path.abspath(HEARTH))
MODEL = os.environ.get("HEARTH_TEST_MODEL", "")
PROMPT = "Write a long story about a dragon who learns to cook. Once upon a time"
N = "160"
BASE = ["-m", MODEL, "-p", PROMPT, "-n", N, "--temp", "0", "-t", "2", "-c", "512", "-b", "32"]


def runtime_root():
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(xdg, "hearth") if xdg else "/tmp/hearth-%d" % os.getuid()


def fail(msg, out="", err=""):
    print("FAIL:", msg)
    if out:
        print("  stdout:", out[:3000])
    if err:
        print("  stderr:", err[-3000:])
    sys.exit(1)


BATCH_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\\n",
    "Water boils at 100 degrees Celsius at sea level because",
    "A haiku about winter:\\n",
    "In 1969, the first humans landed on the Moon. The mission was called",
]
BATCH = ["-n", "72", "--temp", "0.8", "-s", "5", "-t", "2", "-c", "256", "-b", "32", "--kv-budget", "40",
         "--kv-cold", "q8", "--kv-recall", "32"]


class Run:
    """A `hearth run` (or another command) whose stdout and stderr are read as they come."""

    def __init__(self, extra, args=None, cmd="run"):
        self.p = subprocess.Popen([HEARTH, cmd] + (BASE if args is None else args) + ["-v"] + extra,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out, self.err = b"", b""
        self.session = None
        self.t_out = threading.Thread(target=self._read, args=("out",), daemon=True)
        self.t_err = threading.Thread(target=self._read, args=("err",), daemon=True)
        self.t_out.start()
        self.t_err.start()

    def _read(self, which):
        stream = self.p.stdout if which == "out" else self.p.stderr
        for chunk in iter(lambda: stream.read1(4096), b""):
            if which == "out":
                self.out += chunk
            else:
                self.err += chunk
                if self.session is None:
                    for line in self.err.decode("utf-8", "replace").splitlines():
                        if "] info: session " in line:
                            self.session = line.split("session ")[1].split(":")[0]

    def wait_log(self, needle, timeout=120):
        t0 = time.time()
        while needle.encode() not in self.err:
            if self.p.poll() is not None:
                fail("the run ended before logging %r" % needle, self.text(), self.errtext())
            if time.time() - t0 > timeout:
                fail("no %r within %d s" % (needle, timeout), self.text(), self.errtext())
            time.sleep(0.005)

    def wait_output(self, n_bytes, timeout=120):
        t0 = time.time()
        while len(self.out) < n_bytes:
            if self.p.poll() is not None:
                fail("hearth run ended before %d bytes of output" % n_bytes, self.text(), self.errtext())
            if time.time() - t0 > timeout:
                fail("no output within %d s" % timeout, self.text(), self.errtext())
            time.sleep(0.01)

    def finish(self, timeout=300):
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            fail("hearth run did not finish", self.text(), self.errtext())
        self.t_out.join()
        self.t_err.join()
        return self.p.returncode

    def text(self):
        return self.out.decode("utf-8", "replace")

    def errtext(self):
        return self.err.decode("utf-8", "replace")

    def pid_of(self, role):
        path = os.path.join(runtime_root(), self.session, role + ".pid")
        with open(path) as f:
            return int(f.read().split()[0])


def leftovers(session):
    shm = [f for f in os.listdir("/dev/shm") if session in f]
    folder = os.path.join(runtime_root(), session)
    return shm + ([folder] if os.path.exists(folder) else [])


def main():
    if not MODEL or not os.path.exists(MODEL):
        print("SKIP: no model at HEARTH_TEST_MODEL=%r" % MODEL)
        sys.exit(77)
    ref = subprocess.run([HEARTH, "run", "--single-process"] + BASE, capture_output=True, timeout=300)
    if ref.returncode != 0:
        fail("dense reference run failed", ref.stdout.decode(), ref.stderr.decode())
    expected = ref.stdout.decode("utf-8", "replace")
    print("reference: %d bytes of text" % len(expected))

    for role in ["gpu0", "cpu0", "cpu1"]:
        r = Run(["--cpu-workers", "2", "--hot-fraction", "0.3"])
        r.wait_output(len(expected) // 3)
        victim = r.pid_of(role)
        os.kill(victim, signal.SIGKILL)
        print("killed %s (pid %d) after %d bytes of output" % (role, victim, len(r.out)))
        rc = r.finish()
        if rc != 0:
            fail("run with %s killed exited with %d" % (role, rc), r.text(), r.errtext())
        if r.text() != expected:
            fail("text after killing %s differs from the dense pass" % role, r.text(), r.errtext())
        if "restart" not in r.errtext() and "started %s" % role not in r.errtext():
            fail("no sign that %s was restarted" % role, "", r.errtext())
        left = leftovers(r.session)
        if left:
            fail("session %s left %s behind" % (r.session, left), "", r.errtext())
        print("ok: kill -9 %s: same %d bytes of text, nothing left behind" % (role, len(expected)))

    # a developer stops cpu0 and starts it by hand
    r = Run(["--cpu-workers", "1", "--hot-fraction", "0.5"])
    r.wait_output(len(expected) // 4)
    stop = subprocess.run([HEARTH, "workers", "stop", "cpu0", "--session", r.session], capture_output=True,
                          timeout=30)
    if stop.returncode != 0 or b"hearth-cpu-worker --session" not in stop.stdout:
        fail("hearth workers stop cpu0 failed", stop.stdout.decode(), stop.stderr.decode())
    time.sleep(0.5)
    n_before = len(r.out)
    time.sleep(0.5)
    if len(r.out) != n_before:
        fail("generation went on while cpu0 was stopped", r.text(), r.errtext())
    hand = subprocess.Popen([os.path.join(BIN_DIR, "hearth-cpu-worker"), "--session", r.session, "--role", "cpu0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rc = r.finish()
    hand_err = hand.communicate(timeout=30)[1].decode()
    if rc != 0 or r.text() != expected:
        fail("run with cpu0 restarted by hand differs or failed (exit %d)" % rc, r.text(), r.errtext() + hand_err)
    if hand.returncode != 0:
        fail("the hand-started worker exited with %d" % hand.returncode, "", hand_err)
    if leftovers(r.session):
        fail("session %s left %s behind" % (r.session, leftovers(r.session)))
    print("ok: cpu0 stopped with `hearth workers stop` and started by hand: same text, nothing left behind")

    # many sequences at once: a kill while four are in flight
    prompts = os.path.join(os.environ.get("TMPDIR", "/tmp"), "hearth-supervision-prompts-%d.txt" % os.getpid())
    with open(prompts, "w") as f:
        f.write("\n".join(BATCH_PROMPTS) + "\n")
    try:
        args = ["-m", MODEL, "-f", prompts] + BATCH
        ref = subprocess.run([HEARTH, "batch", "--single-process", "-np", "1"] + args, capture_output=True,
                             timeout=300)
        if ref.returncode != 0:
            fail("batch reference (alone, one process) failed", ref.stdout.decode(), ref.stderr.decode())
        expected = ref.stdout.decode("utf-8", "replace")
        if expected.count("--- [") != len(BATCH_PROMPTS):
            fail("the batch reference does not hold every prompt", expected)
        for role in ["gpu0", "cpu0", "cpu1"]:
            r = Run(["--cpu-workers", "2", "--hot-fraction", "0.3", "-np", "4"], args, cmd="batch")
            r.wait_log("prompt 4: sequence")
            victim = r.pid_of(role)
            os.kill(victim, signal.SIGKILL)
            print("batch: killed %s (pid %d) as prompt 4 took a freed slot (%d of %d results out)" %
                  (role, victim, r.text().count("--- ["), len(BATCH_PROMPTS)))
            rc = r.finish()
            if rc != 0:
                fail("batch with %s killed exited with %d" % (role, rc), r.text(), r.errtext())
            if sorted(r.text().split("--- [")) != sorted(expected.split("--- [")):
                fail("batch after killing %s differs from each sequence alone" % role, r.text() + "\nEXPECTED:\n" +
                     expected, r.errtext())
            if role == "gpu0" and "rebuilt the KV caches of" not in r.errtext():
                fail("no sign that the KV caches were rebuilt", "", r.errtext())
            if leftovers(r.session):
                fail("session %s left %s behind" % (r.session, leftovers(r.session)), "", r.errtext())
            print("ok: batch, kill -9 %s: every sequence as alone, nothing left behind" % role)
    finally:
        os.unlink(prompts)
    print("all passed")


main()
