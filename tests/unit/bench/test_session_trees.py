"""The SFTP servers' CPU in the pipeline benchmarks counts sessions that ended during the run."""

from __future__ import annotations

import subprocess
import sys
import time

from tooling.bench.harness import SessionTrees, cpu_tree_seconds, descendants, process_table

# A server that serves each client in a child and lets the kernel reap it (SIGCHLD ignored, as a
# child that ends unwaited for): the child's CPU never reaches the server's cutime.
SERVER = """
import os, signal, sys, time
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
if os.fork() == 0:
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    os._exit(0)
sys.stdout.write("forked\\n"); sys.stdout.flush()
time.sleep(30)
"""


def test_a_session_that_ended_keeps_the_cpu_it_was_last_seen_with() -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline() == "forked\n"
        trees = SessionTrees({"sftp-north": server.pid})
        before_tree = cpu_tree_seconds(server.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # sampled while the session works, until it ended
            trees.sample()
            time.sleep(0.05)
            if not _children(server.pid) and trees.cpu_s()["sftp-north"] > 0.2:
                break
        trees.sample()
        assert not _children(server.pid), "the session ended"
        assert trees.cpu_s()["sftp-north"] >= 0.25, trees.cpu_s()
        assert cpu_tree_seconds(server.pid) - before_tree < 0.1, "what the tree's own reading would have missed"
    finally:
        server.kill()
        server.wait()


def _children(pid: int) -> list[int]:
    return descendants(process_table()[0], pid)
