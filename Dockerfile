# The cascade server: `cascade-router serve` with the server, OpenAI, Anthropic, Redis,
# PostgreSQL and OpenTelemetry extras. Mount or bake in a config at /etc/cascade/server.yaml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir ".[server,openai,anthropic,redis,postgres,otel]"
RUN useradd --create-home cascade
USER cascade
EXPOSE 8000
# 0.0.0.0 inside a container is only reachable through the published port; the config must
# name a key store (keys:) or the server refuses to start without --insecure-no-auth.
CMD ["cascade-router", "serve", "--config", "/etc/cascade/server.yaml", "--host", "0.0.0.0", "--port", "8000"]
