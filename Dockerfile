# Gradient Lab on a GPU server: docker build -t gradient-lab . && docker run --gpus all -p 8501:8501 gradient-lab
# The default (last) stage mirrors README.md's install-and-start command (tests/test_packaging.py keeps the two
# in step). The cluster stage (docker-compose.yml, README "More than one server") installs the cluster
# requirements instead: Ray and psycopg on top of the same runtime.
FROM python:3.11-slim AS base

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIENT_LAB_CACHE_DIR=/data/cache

WORKDIR /srv/gradient-lab
RUN useradd --create-home --uid 1000 lab && mkdir -p /data/cache && chown -R lab /data && chmod 700 /data/cache

FROM base AS cluster
COPY requirements.txt requirements-cluster.txt ./
RUN python3 -m pip install -r requirements-cluster.txt
COPY . .
USER lab
VOLUME ["/data/cache"]

FROM base
COPY requirements.txt .
RUN python3 -m pip install -r requirements.txt

COPY . .
USER lab
VOLUME ["/data/cache"]
# No login of its own: beyond a class network, publish it only to a reverse proxy with TLS and authentication
# (README, "Deploying"), e.g. docker run -p 127.0.0.1:8501:8501 ...
EXPOSE 8501
HEALTHCHECK CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health')"
CMD ["python3", "-m", "app.launch", "--server.address=0.0.0.0", "--server.port=8501"]
