"""Starting the processes under test, pinned to a core, and reading /proc about them."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
GATEWISE = ROOT / ".venv" / "bin" / "gatewise"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kb(pid: int, key: str) -> int:
    """VmRSS / VmHWM (peak RSS) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


@dataclass
class Target:
    """One thing wrk can be pointed at: its URL, the pid whose CPU/RSS we read."""

    name: str
    url: str
    proc: subprocess.Popen | None = None
    pid: int | None = None  # the process whose CPU we charge (nginx's worker for `direct`)
    skipped: str | None = None
    stderr_path: Path | None = None
    metrics_url: str | None = None
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_floor(name: str, upstream: str, cpu: str, workdir: Path) -> Target:
    port = free_port()
    err = workdir / f"{name}.stderr"
    proc = subprocess.Popen(["taskset", "-c", cpu, str(VENV_PY), str(ROOT / "bench" / "floor.py"),
                             "--port", str(port), "--upstream", upstream],
                            stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    wait_port(port, proc)
    return Target(name, f"http://127.0.0.1:{port}", proc, proc.pid, stderr_path=err)


def gatewise_command(tree: Path | None) -> list[str]:
    """This checkout's `gatewise`, or another checkout's (`--baseline`): its own code,
    imported first from its directory, with this virtualenv's packages."""
    if tree is None:
        return [str(GATEWISE)]
    return [str(ROOT / ".venv" / "bin" / "python"), "-m", "proxy"]


def check_config(config: Path, env: dict[str, str], tree: Path | None = None) -> str | None:
    """None if gatewise accepts the config, else its first complaint (the skip reason)."""
    out = subprocess.run([*gatewise_command(tree), "check", "--config", str(config)], env=env,
                         check=False, capture_output=True, text=True, cwd=tree)
    if out.returncode == 0:
        return None
    problems = [line.strip() for line in out.stderr.splitlines() if line.startswith("  ")]
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return (problems[0] if problems else out.stderr.strip()[-200:]) + more


def start_gatewise(name: str, config: Path, env: dict[str, str], cpu: str,
                   workdir: Path, tree: Path | None = None) -> Target:
    reason = check_config(config, env, tree)
    if reason:
        return Target(name, "", skipped=f"config rejected: {reason}")
    port = free_port()
    err = workdir / f"{name}.stderr"
    proc = subprocess.Popen(["taskset", "-c", cpu, *gatewise_command(tree), "serve", "--config",
                             str(config), "--port", str(port)], env=env, cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    try:
        wait_port(port, proc)
    except RuntimeError as exc:
        tail = err.read_text(errors="replace")[-300:]
        return Target(name, "", skipped=f"did not start: {exc}: {tail}")
    url = f"http://127.0.0.1:{port}"
    return Target(name, url, proc, proc.pid, stderr_path=err, metrics_url=url + "/metrics")


def fetch_metrics(target: Target) -> str | None:
    """gatewise's /metrics text, when it has one (the overhead histogram hook)."""
    if not target.metrics_url:
        return None
    try:
        with urllib.request.urlopen(target.metrics_url, timeout=2) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def overhead_samples(metrics: str | None) -> dict[str, float]:
    """The `*overhead*` series of a Prometheus text page, by name{labels}."""
    samples = {}
    for line in (metrics or "").splitlines():
        if "overhead" in line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                pass
    return samples


def overhead_summary(before: dict[str, float], after: dict[str, float], model: str) -> dict | None:
    """What one scenario added to gatewise's overhead histogram for `model`:
    count, mean, and the bucket bounds holding the median and the 99th percentile."""
    label = f'model="{model}"'
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if label in k}
    count = next((v for k, v in delta.items() if k.split("{")[0].endswith("_count")), 0)
    total = next((v for k, v in delta.items() if k.split("{")[0].endswith("_sum")), 0)
    if not count:
        return None
    buckets = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in delta.items()
                     if '_bucket{' in k and 'le="' in k)

    def bound(q: float) -> float | None:
        return next((le * 1000 for le, n in buckets if n >= q * count), None)

    return {"count": int(count), "mean_ms": 1000 * total / count, "p50_le_ms": bound(0.5),
            "p99_le_ms": bound(0.99), "buckets": buckets}
