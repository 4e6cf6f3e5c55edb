"""Profile gatewise under wrk load with py-spy and print its hottest functions.

  .venv/bin/pip install py-spy        # a profiling tool, not a gatewise dependency
  .venv/bin/python bench/profile.py --config minimal-openai.yaml --model bench-json [--stream]

Samples the pinned gatewise process (py-spy `record --format raw`) while wrk
runs, then prints inclusive and self time per function: all code, and
gatewise's own (proxy/, translators/, policies/). The raw stacks stay in
bench/results/ for flame graphs (e.g. speedscope.app accepts them).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import loadgen
import procs
import common

OWN = ("proxy/", "translators/", "policies/")


def top(raw: Path, n: int) -> str:
    inclusive: collections.Counter = collections.Counter()
    self_own: collections.Counter = collections.Counter()
    self_all: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        k = int(count)
        total += k
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += k
        self_all[frames[-1]] += k
        own = [f for f in frames if any(o in f for o in OWN)]
        if own:
            self_own[own[-1]] += k  # time spent in or below gatewise's deepest own frame

    def table(counter: collections.Counter, title: str, only_own: bool) -> list[str]:
        rows = [f"{title} (% of {total} samples)"]
        for frame, k in counter.most_common():
            if only_own and not any(o in frame for o in OWN):
                continue
            rows.append(f"  {100 * k / total:5.1f} %  {frame}")
            if len(rows) > n:
                break
        return rows

    return "\n".join(table(inclusive, "inclusive, gatewise's own functions", True)
                     + table(self_own, "below gatewise's deepest own frame", True)
                     + table(self_all, "self time, any code", False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="minimal-openai.yaml")
    parser.add_argument("--model", default="bench-json")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(procs.VENV_PY.parent / "py-spy")
    if not Path(spy).exists():
        sys.exit("profile: py-spy is not installed; run: .venv/bin/pip install py-spy")
    common.require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="gatewise-profile-"))
    up = common.Upstream(workdir)
    target = procs.start_gatewise("gatewise", common.BENCH / "configs" / args.config,
                                  common.gateway_env(up, workdir), common.PROXY_CPU, workdir)
    if target.skipped:
        up.stop()
        sys.exit(f"profile: {target.skipped}")
    body = workdir / "request.json"
    req = json.loads((common.BENCH / "bodies" / "request.json").read_text())
    req["model"], req["stream"] = args.model, args.stream
    body.write_text(json.dumps(req))
    url = target.url + "/v1/chat/completions"
    common.RESULTS.mkdir(exist_ok=True)
    raw = common.RESULTS / (f"profile-{Path(args.config).stem}-{args.model}"
                         f"{'-stream' if args.stream else ''}-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    try:
        loadgen.run_wrk(url, args.conns, 2, body, common.LOAD_CPU, common.KEY)  # warm-up
        spy_proc = subprocess.Popen([spy, "record", "--pid", str(target.pid), "--format", "raw",
                                     "--rate", "250", "--nonblocking", "--function", "--duration",
                                     str(args.seconds), "-o", str(raw)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        result = loadgen.run_wrk(url, args.conns, args.seconds, body, common.LOAD_CPU, common.KEY)
        _, err = spy_proc.communicate(timeout=60)
        if not raw.exists():
            sys.exit(f"profile: py-spy wrote nothing: {err[-500:]}")
    finally:
        target.stop()
        up.stop()
    print(f"{args.config} {args.model}{' stream' if args.stream else ''}: "
          f"{result['rps']:.0f} req/s under py-spy, {result['error_count']} errors")
    print(top(raw, args.top))
    print(f"raw stacks: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
