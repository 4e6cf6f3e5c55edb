"""Instructions per request of gatewise's own code, for comparing configs on a busy machine.

  .venv/bin/python bench/instructions.py bench/configs/full-openai.yaml \
      bench/configs/full-routes-openai.yaml [--small 300 --large 1300]
  .venv/bin/python bench/instructions.py --micro stream [--reads event] \
      bench/configs/minimal-openai.yaml bench/configs/minimal-anthropic.yaml

Runs bench/micro.py (in process: handler checks, pipeline, dispatch, an instant
fake upstream; with `--micro stream`, bench/micro_stream.py: a streamed request,
the upstream's reads cut as `--reads` says) under valgrind's callgrind twice per
config, with `--small` and `--large` measured requests, and reports (Ir(large) − Ir(small)) ÷ (large −
small): start-up and warm-up cancel out. Instruction counts do not move with
other processes' load the way CPU time does; they are a proxy for CPU, not a
measure of it (cache misses and branch mispredictions are not counted).
Needs valgrind (`apt-get install -y valgrind`); ~1-2 minutes per run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent


MICROS = {"json": "micro.py", "stream": "micro_stream.py"}


def instructions(config: str, n: int, workdir: str, micro: str = "json",
                 reads: str = "whole") -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "WARMUP": "200", "READS": reads,
           "BENCH_UPSTREAM": "http://127.0.0.1:1", "BENCH_KEY": "bench-key-0123456789abcdef",
           "BENCH_TMP": workdir}
    for name in os.listdir(workdir):
        os.remove(os.path.join(workdir, name))
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, str(BENCH / MICROS[micro]), config, str(n)],
                         env=env, capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=1300)
    parser.add_argument("--micro", choices=sorted(MICROS), default="json",
                        help="json: bench/micro.py; stream: bench/micro_stream.py")
    parser.add_argument("--reads", default="whole",
                        help="stream: the upstream's reads, whole, event or N bytes")
    args = parser.parse_args()
    base = None
    with tempfile.TemporaryDirectory(prefix="gatewise-instr-") as workdir:
        for config in args.configs:
            small = instructions(config, args.small, workdir, args.micro, args.reads)
            large = instructions(config, args.large, workdir, args.micro, args.reads)
            per = (large - small) / (args.large - args.small)
            base = per if base is None else base
            print(f"{config}: {per / 1000:.1f} k instructions/request "
                  f"({(per / base - 1) * 100:+.2f} % vs the first)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
