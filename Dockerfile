# gatewise container: slim Python, non-root, config at /etc/gatewise/config.yaml
# (deploy/docker.yaml by default: it listens on 0.0.0.0 and so needs a client key).
#   docker build -t gatewise .
#   docker run --stop-timeout 35 -p 4000:4000 -e GATEWISE_CLIENT_KEY=$(openssl rand -hex 24) \
#     -e OPENAI_API_KEY gatewise
# Your own config: -v "$PWD/gatewise.yaml:/etc/gatewise/config.yaml:ro".
# On SIGTERM gatewise drains for server.shutdown_timeout (30 s by default) and
# then ends what is left cleanly: give `docker stop` longer than that
# (--stop-timeout 35; Docker's own default of 10 s would cut streams).
FROM python:3.11-slim AS build
# Optional extras, e.g. --build-arg EXTRAS=redis,postgres for the scale-out
# backends, or otlp for trace export.
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY translators ./translators
COPY policies ./policies
RUN pip install --no-cache-dir --prefix=/install ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/gatewise --create-home gatewise
COPY --from=build /install /usr/local
COPY deploy/docker.yaml /etc/gatewise/config.yaml
ENV GATEWISE_CONFIG=/etc/gatewise/config.yaml PYTHONUNBUFFERED=1
USER gatewise
WORKDIR /var/lib/gatewise
EXPOSE 4000
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4000/health/live', timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
# Inside a container the gateway must listen on every interface (with client keys:
# gatewise refuses a public bind without them unless server.allow_unauthenticated).
ENTRYPOINT ["gatewise"]
CMD ["serve", "--config", "/etc/gatewise/config.yaml", "--host", "0.0.0.0", "--port", "4000"]
