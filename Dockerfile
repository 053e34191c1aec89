# The image every cprec worker runs in: a process worker on a GPU node (`prefect worker start
# --pool cprec-gpu`), or the Kubernetes job of deploy/k8s/gpu-pool-base-job-template.json.
#   make image                 # CPU: torch's CPU wheel
#   make image VARIANT=cuda    # GPU: torch's CUDA wheel (CUDA runtime inside; the node gives the driver)
# The checkout lives at /opt/cprec (CPREC_HOME: the deployments' pull step works there); the run
# root lives on the volume every node mounts at /var/lib/cprec (configs/amazon2023.yaml).
FROM python:3.11-slim

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CPREC_HOME=/opt/cprec \
    HF_HUB_OFFLINE=1 \
    DO_NOT_TRACK=1

WORKDIR /opt/cprec

# torch first, pinned to the Makefile's version (a test checks), from PyTorch's index for VARIANT
# (the Makefile installs from PyPI on a CPU box; verify that the cu128 index carries the pin)
RUN case "$VARIANT" in \
      cpu) index=https://download.pytorch.org/whl/cpu ;; \
      cuda) index=https://download.pytorch.org/whl/cu128 ;; \
      *) echo "VARIANT=$VARIANT: expected cpu or cuda" >&2; exit 2 ;; \
    esac \
 && pip install "torch==${TORCH_VERSION}" --index-url "$index"

COPY pyproject.toml README.md ./
COPY cprec_core cprec_core
COPY flows flows
COPY tasks tasks
COPY sql sql
COPY configs configs
COPY deploy deploy
RUN pip install .

VOLUME /var/lib/cprec
CMD ["prefect", "worker", "start", "--pool", "cprec-gpu", "--type", "process"]
