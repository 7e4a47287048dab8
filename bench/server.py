"""Run the real service in a subprocess on loopback, the way `make serve` does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads together, in seconds (fields 14 and 15 of
    /proc/PID/stat, counted after the command name, which may itself hold spaces)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(pid: int) -> float:
    """:func:`process_cpu_seconds` of ``pid`` and of every live process descended from it: a server
    with several workers (LIKENESS_WORKERS), or one that runs its engine as a child (Milvus Lite)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent and child not in tree]
        tree.update(children)
        frontier += children
    total = 0.0
    for member in tree:
        try:
            total += process_cpu_seconds(member)
        except OSError:
            if member == pid:
                raise
    return total


class ServerProcess:
    """``python -m service`` (or another server module given as ``command``) on a free loopback port."""

    def __init__(self, data_dir: Path, port: int | None = None, command: list[str] | None = None,
                 cwd: Path = REPO, **env: str) -> None:
        self.port = port or free_port()
        self.cwd = cwd  # another checkout (an older commit) runs its own code
        self.command = [sys.executable, "-m", *(command or ["service"])]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "LIKENESS_DATA_DIR": str(data_dir), "LIKENESS_PORT": str(self.port),
                    "LIKENESS_HOST": "127.0.0.1", **env}
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 60) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(command, cwd=self.cwd, env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout}s: {self.log_path.read_text()[-2000:]}")

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far, all its threads, user and system (utime + stime
        from /proc/PID/stat; Linux only): its process and, with several workers, each worker's."""
        return process_tree_cpu_seconds(self.process.pid)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no snapshot, no flush."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
