"""The fake upstream: nginx answering every POST with a fixed body, from memory.

Bodies live in bench/bodies/. nginx's static handler answers POST with 405, so
each location turns that 405 into an internal GET of the body file
(`error_page 405 =200 /_bodies/<file>`), served from the open-file cache.
The delayed locations inline the body in the config instead. Locations:

  /openai-json/…  /openai-sse/…  /anthropic-json/…  /anthropic-sse/…   instant
  /lat60/<kind>/…        same body after 60 ms (echo module's `echo_sleep`)
  /slow-openai-sse/…     `chunks` OpenAI chunks, one every `interval_ms` (streaming scale)

The delayed locations need the echo module (Debian: libnginx-mod-http-echo);
without it they are left out and the scenarios that need them are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

BODIES = Path(__file__).parent / "bodies"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
KINDS = {  # location name -> (body file, content type)
    "openai-json": ("openai.json", "application/json"),
    "openai-sse": ("openai.sse", "text/event-stream"),
    "anthropic-json": ("anthropic.json", "application/json"),
    "anthropic-sse": ("anthropic.sse", "text/event-stream"),
}


def quote(text: str, variables: bool = False) -> str:
    """An nginx double-quoted string (its parser knows \\\\ \\" \\n \\r \\t)."""
    if "$" in text and not variables:
        raise ValueError("fixed bodies must not contain '$' (nginx would expand it)")
    return '"' + (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                  .replace("\r", "\\r").replace("\t", "\\t")) + '"'


def has_echo_module() -> bool:
    return os.path.exists(ECHO_MODULE)


def slow_chunks(chunks: int) -> list[str]:
    """OpenAI chunks stamped with nginx's send time (`"t":$msec`, epoch seconds, ms
    resolution), so the client can measure each chunk's delivery delay."""
    base = {"t": "T_NOW", "id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1732800000,
            "model": "gpt-4o-mini"}
    out = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": "tok"} if i == 0 else {"content": f" t{i}"}
        out.append("data: " + json.dumps({**base, "choices": [
            {"index": 0, "delta": delta, "finish_reason": None}]}, separators=(",", ":")) + "\n\n")
    out.append("data: " + json.dumps({**base, "choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop"}]}, separators=(",", ":")) + "\n\n")
    usage = {"prompt_tokens": 231, "completion_tokens": chunks, "total_tokens": 231 + chunks}
    out.append("data: " + json.dumps({**base, "choices": [], "usage": usage},
                                     separators=(",", ":")) + "\n\ndata: [DONE]\n\n")
    return [c.replace('"T_NOW"', "$msec") for c in out]


def render(workdir: Path, port: int, *, chunks: int = 200, interval_ms: int = 50) -> str:
    echo = has_echo_module()
    lines = [f"load_module {ECHO_MODULE};" if echo else "", "worker_processes 1;",
             "daemon off;", "master_process on;", f"pid {workdir}/nginx.pid;",
             f"error_log {workdir}/nginx-error.log warn;", "worker_rlimit_nofile 65536;",
             "events { worker_connections 16384; multi_accept on; }", "http {",
             "  access_log off; keepalive_requests 10000000; keepalive_timeout 120s;",
             "  server_tokens off; tcp_nodelay on; client_body_buffer_size 64k;",
             f"  client_body_temp_path {workdir}/body;",
             f"  proxy_temp_path {workdir}/proxy; fastcgi_temp_path {workdir}/fcgi;",
             f"  uwsgi_temp_path {workdir}/uwsgi; scgi_temp_path {workdir}/scgi;",
             f"  server {{ listen 127.0.0.1:{port} reuseport backlog=4096;"]
    for kind, (name, ctype) in KINDS.items():
        lines.append(f"    location /{kind}/ {{ root {BODIES}; try_files /{name} =404;"
                     f" error_page 405 =200 /_bodies/{name}; }}")
        if echo:
            text = (BODIES / name).read_text()
            body = " ".join(f"echo -n {quote(text[i:i + 2000])};" for i in range(0, len(text), 2000))
            lines.append(f"    location /lat60/{kind}/ {{ default_type {ctype}; echo_read_request_body;"
                         f" echo_sleep 0.06; {body} }}")
    types = "application/json json; text/event-stream sse;"
    lines.append(f"    location /_bodies/ {{ internal; alias {BODIES}/; types {{ {types} }}"
                 " open_file_cache max=16 inactive=1h; open_file_cache_valid 1h; etag off; }")
    if echo:
        steps = " ".join(f"echo -n {quote(c, True)}; echo_flush; echo_sleep {interval_ms / 1000:g};"
                         for c in slow_chunks(chunks)[:-1])
        steps += f" echo -n {quote(slow_chunks(chunks)[-1], True)};"
        lines.append(f"    location /slow-openai-sse/ {{ default_type text/event-stream;"
                     f" echo_read_request_body; {steps} }}")
    lines += ["    location / { return 404; }", "  }", "}"]
    return "\n".join(line for line in lines if line) + "\n"


def start(workdir: Path, port: int, cpu: str, **kwargs) -> subprocess.Popen:
    """nginx in the foreground, pinned to `cpu`; raises if it does not start."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(render(workdir, port, **kwargs))
    check = subprocess.run([nginx, "-t", "-p", str(workdir), "-c", str(conf)],
                           check=False, capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx rejected {conf}:\n{check.stderr}")
    return subprocess.Popen(["taskset", "-c", cpu, nginx, "-p", str(workdir), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
