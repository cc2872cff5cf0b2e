# megatron-dsm on the NGC PyTorch image.
#
# Base: nvcr.io/nvidia/pytorch:25.11-py3 (Ubuntu 24.04, Python 3.12, CUDA 13,
# NVIDIA's PyTorch build, transformer-engine and apex preinstalled). The image's
# CUDA torch, transformer-engine, apex, triton, flash-attn, numpy and nvidia-*
# libraries are pinned to the versions the image ships (a constraints file made
# from the image itself) so nothing below can replace them. megatron-core comes
# from PyPI at the version requirements.txt and setup.py pin (0.16.1): the one
# every test runs against, and the one whose internals generation relies on
# are checked (megatron_dsm/models/mcore_inference.py).
#
#   docker build -t megatron-dsm .
#   docker run --gpus all --ipc=host --rm -it -v /data:/data megatron-dsm \
#     bash examples/pretrain_dsm.sh
#
# To move to another NGC release change the tag below (it must ship Python 3.12:
# 25.01 or later); tests/ops/test_dockerfile.py checks the rest.
FROM nvcr.io/nvidia/pytorch:25.11-py3

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CUDA_DEVICE_MAX_CONNECTIONS=1 \
    DSM_CONSTRAINTS=/etc/pip/megatron-dsm-image.txt

WORKDIR /opt/megatron-dsm

# 1. Check the base, and record the GPU stack it ships as pip constraints.
RUN python -c 'import sys; assert sys.version_info[:2] == (3, 12), "need Python 3.12, image has " + sys.version' \
 && python -c 'import torch, transformer_engine.pytorch, apex; assert torch.version.cuda, "image torch has no CUDA"' \
 && python -c 'import importlib.metadata as m, re; k = re.compile(r"(torch|torchvision|torchaudio|triton|pytorch-triton|transformer[-_]engine.*|apex|flash[-_]attn.*|nvidia-.*|numpy)", re.I); print("\n".join(sorted({d.metadata["Name"] + "==" + d.version for d in m.distributions() if d.metadata["Name"] and k.fullmatch(d.metadata["Name"])})))' > "$DSM_CONSTRAINTS" \
 && grep -iE '^torch==' "$DSM_CONSTRAINTS"

# 2. Requirements other than torch (and the test runner), megatron-core at the
#    version of requirements.txt/setup.py, all under the image constraints.
COPY requirements.txt ./
RUN grep -vE '^(torch==|pytest)' requirements.txt > /tmp/requirements.image.txt \
 && PIP_CONSTRAINT="$DSM_CONSTRAINTS" python -m pip install --no-cache-dir \
      -r /tmp/requirements.image.txt "megatron-core==0.16.1" "pytest>=8" "pytest-timeout>=2.3" \
 && rm /tmp/requirements.image.txt

# 3. vLLM for rollouts colocated with the policy (--rollout-engine vllm; auto
#    picks it on a GPU), built from source against the image's torch: vLLM's
#    wheels pin a torch of their own, which the constraints forbid.
#    use_existing_torch.py drops vLLM's torch pins.  NVIDIA's vLLM 26.01
#    container builds this release (0.11.1) on the same PyTorch 2.10 base.
ARG VLLM_VERSION=0.11.1
ARG MAX_JOBS=16
WORKDIR /opt/vllm
RUN git clone --depth 1 --branch "v${VLLM_VERSION}" https://github.com/vllm-project/vllm.git . \
 && python use_existing_torch.py \
 && PIP_CONSTRAINT="$DSM_CONSTRAINTS" python -m pip install --no-cache-dir -r requirements/build.txt \
 && PIP_CONSTRAINT="$DSM_CONSTRAINTS" MAX_JOBS="$MAX_JOBS" python -m pip install --no-cache-dir --no-build-isolation . \
 && python -c 'import torch, vllm; print("vllm", vllm.__version__, "torch", torch.__version__)'
WORKDIR /opt/megatron-dsm

# 4. The package with its gpu extra; --no-deps because every dependency is
#    already here (transformer-engine and apex from the image, vLLM from step 3).
#    The last line fails the build if anything replaced the image's torch.
COPY . ./
RUN PIP_CONSTRAINT="$DSM_CONSTRAINTS" python -m pip install --no-cache-dir --no-deps --no-build-isolation -e ".[gpu]" \
 && python -c 'import megatron.core, megatron_dsm, transformer_engine.pytorch, apex, torch; print("megatron-core", megatron.core.__version__, "torch", torch.__version__)' \
 && python -c 'import importlib.metadata as m, os; pins = dict(l.strip().split("==", 1) for l in open(os.environ["DSM_CONSTRAINTS"]) if "==" in l); bad = {n: (v, m.version(n)) for n, v in pins.items() if m.version(n) != v}; assert not bad, "image packages replaced: " + str(bad)'

CMD ["bash"]
