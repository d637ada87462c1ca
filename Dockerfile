# The dashboard (and, with another command, a worker) in a container.
#
#   docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm -t automl-workbench .
#   docker run -p 8501:8501 -v automl-data:/data \
#       -v "$PWD/.streamlit/secrets.toml:/app/.streamlit/secrets.toml:ro" automl-workbench
#
# The base image is a build argument: any image with Python 3.11+ and pip (a mirror of
# python:3.11-slim, or a local one made with debootstrap) will do.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG APP_UID=10001
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    CUDA_VISIBLE_DEVICES="" \
    AUTOML_HOME=/data/runs \
    AUTOML_ARTIFACTS=/data/artifacts \
    AUTOML_MODE=shared \
    HOME=/home/automl \
    NUMBA_CACHE_DIR=/home/automl/.cache/numba

WORKDIR /app
# dependencies first: a code change does not reinstall TensorFlow
COPY requirements.txt ./
RUN python -m pip install --no-cache-dir -r requirements.txt

# the code belongs to root and is read-only to the user that serves it
COPY . .
RUN useradd --uid "${APP_UID}" --user-group --create-home --home-dir /home/automl \
        --shell /usr/sbin/nologin automl \
    && mkdir -p /data/runs /data/artifacts \
    && chown -R automl:automl /data \
    && python -m compileall -q automl_core dashboard pages app.py \
    && python -c "from automl_core.analysis.latent import warm_up_umap; warm_up_umap()" \
    && chown -R automl:automl "${NUMBA_CACHE_DIR}"
# (the warm-up compiles UMAP's numba kernels into NUMBA_CACHE_DIR, a folder the serving user
# may write, so the dashboard's first UMAP loads them instead of compiling for a minute)

USER automl
VOLUME ["/data"]
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status != 200)"]

CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501"]
