# The image every node of a reelsr cluster runs (cluster.yaml's docker section, the
# KubeRay manifests in deploy/kuberay/): Ray's own image, Python 3.11, with the pinned
# dependencies of pyproject.toml and the project baked in, so nothing is installed
# when a node boots.
#
#   docker build -t REGISTRY/reelsr:VERSION .
#   docker push REGISTRY/reelsr:VERSION        # then name it in cluster.yaml / the manifests
#
# The base: Ray's image of the pinned Ray version for Python 3.11 with CUDA ("-gpu").
# PyPI's torch wheel brings its own CUDA runtime libraries, so the image needs only an
# NVIDIA driver on GPU nodes (any driver that runs CUDA 12.8 or newer); it runs on
# CPU-only nodes too.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

WORKDIR /home/ray/reelsr

# The dependencies first, as their own layer: rebuilt only when pyproject.toml changes.
COPY --chown=ray:users pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && python -m pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project (code, shipped weights, NIQE parameters, schemas), installed without
# touching the dependencies above.
COPY --chown=ray:users pipeline ./pipeline
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users schemas ./schemas
COPY --chown=ray:users README.md ./
RUN python -m pip install --no-cache-dir --no-deps -e . \
    && python -c "import pipeline, jobs.restore; from pipeline.models.weights import WEIGHTS; [w.item.read(s) for w in WEIGHTS for s in w.item.files]"

ENV PYTHONUNBUFFERED=1
