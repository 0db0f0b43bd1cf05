# prefect-otel as a container image:
#   docker build -t prefect-otel .
#   docker run -d --stop-timeout 30 -v prefect-otel-state:/var/lib/prefect-otel \
#     -e PREFECT_API_URL=http://host:4200/api -e OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 prefect-otel
# The volume keeps the state file (resume cursor, open runs, spans the collector has not taken) across
# containers; without it `docker rm` loses them. A SIGTERM flushes for up to 10 s before the state is
# saved, and ends the process within 12 s: `docker stop`'s default 10 s would cut that short. A Prefect server on the Docker host is
# reached as `host.docker.internal` (on Linux add `--add-host=host.docker.internal:host-gateway`) and
# must listen beyond 127.0.0.1 (`prefect server start --host 0.0.0.0`).
# Arguments after the image name replace `watch` (e.g. `demo`, `--help`, or `replay -` given a file on
# standard input: `docker run -i --rm -e OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 prefect-otel
# replay - < events.jsonl`; without the endpoint it sends to localhost:4318, the container itself).

# Node 26, the LTS line CI runs the test suite on (.ci/run); package.json accepts >= 20.12, but
# Node 20 is past its end of life (2026-04-30) and gets no security fixes.
# Build stage: every dependency, then compile. Only src/ is copied in, so only dist/src is built.
FROM node:26-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the `prepare` script would compile before the sources are here.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies and the compiled dist/src, run as the non-root `node` user.
FROM node:26-slim AS runtime
ENV NODE_ENV=production \
    PREFECT_OTEL_STATE_FILE=/var/lib/prefect-otel/state.json
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
# Owned by `node`, so a fresh named volume mounted here is writable by it too.
RUN mkdir -p /var/lib/prefect-otel && chown node:node /var/lib/prefect-otel
USER node
ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["watch"]
