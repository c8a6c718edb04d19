# Gradient Lab on a GPU server: docker build -t gradient-lab . && docker run --gpus all -p 8501:8501 gradient-lab
# Mirrors README.md's install-and-start command (tests/test_packaging.py keeps the two in step).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIENT_LAB_CACHE_DIR=/data/cache

WORKDIR /srv/gradient-lab
COPY requirements.txt .
RUN python3 -m pip install -r requirements.txt

COPY . .
RUN useradd --create-home --uid 1000 lab && mkdir -p /data/cache && chown -R lab /data && chmod 700 /data/cache
USER lab
VOLUME ["/data/cache"]
# No login of its own: beyond a class network, publish it only to a reverse proxy with TLS and authentication
# (README, "Deploying"), e.g. docker run -p 127.0.0.1:8501:8501 ...
EXPOSE 8501
HEALTHCHECK CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health')"
CMD ["python3", "-m", "app.launch", "--server.address=0.0.0.0", "--server.port=8501"]
