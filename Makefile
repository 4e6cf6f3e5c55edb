# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= proxy.example.yaml
STAMP  := $(VENV)/.installed

.PHONY: run test check clean

# (Re)install whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gatewise serve --config $(CONFIG)

check: $(STAMP)
	$(VENV)/bin/gatewise check --config $(CONFIG)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# Benchmark (bench/README.md): loopback only; needs nginx (+ echo module) and wrk.
# `make bench BENCH_ARGS=--quick` for ~1-2 minutes; SOAK_SECONDS=600 by default.
BENCH_PKGS := nginx-light wrk libnginx-mod-http-echo
define bench_deps
	@if ! { command -v wrk && { command -v nginx || test -x /usr/sbin/nginx; } && test -f /usr/lib/nginx/modules/ngx_http_echo_module.so; } >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && apt-get install -y $(BENCH_PKGS); \
	  else echo "bench: install the tools first: sudo apt-get update && sudo apt-get install -y $(BENCH_PKGS)"; exit 1; fi; \
	fi
endef

.PHONY: bench bench-soak bench-workers bench-peers
bench: $(STAMP)
	$(bench_deps)
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python bench/run.py $(BENCH_ARGS)

bench-soak: $(STAMP)
	$(bench_deps)
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python bench/run.py --soak --soak-seconds $${SOAK_SECONDS:-600}
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python bench/run.py --stream-scale $(BENCH_ARGS)
bench-peers: $(STAMP)  # + LiteLLM (own venv, PyPI) and Portkey (npm), bench/README.md "Peers"
	$(bench_deps)
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python bench/run.py --peers $(BENCH_ARGS)

bench-workers: $(STAMP)  # --workers 1 vs 2 on Redis (bench/README.md, "Multi-worker")
	PATH="$$PATH:/usr/sbin" $(VENV)/bin/python bench/run.py --workers-scale $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
