"""megatron-dsm package.  `make install` is the supported CPU set-up; on NGC
images (Python 3.12, CUDA torch, transformer-engine, apex preinstalled) use
`pip install -e .[gpu]`."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements():
    out = []
    for line in (HERE / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(("pytest", "torch==")):
            continue
        out.append(line)
    return out


setup(
    name="megatron-dsm",
    version="0.1.0",
    description="DeepSeekMath (arXiv 2402.03300) end to end on Megatron-Core",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["megatron_dsm", "megatron_dsm.*"]),
    include_package_data=True,
    package_data={"megatron_dsm": ["assets/*", "assets/**/*"]},
    python_requires=">=3.10",
    # torch is not pinned here: the CPU wheel is chosen by `make install`, the
    # CUDA build comes from the NGC image.  A bare `torch` requirement in a
    # fresh env would pull a multi-GB CUDA build, so it is only a lower bound.
    install_requires=["torch>=2.3"] + _requirements(),
    extras_require={
        "gpu": ["transformer-engine[pytorch]>=1.9", "apex"],
        "test": ["pytest>=8", "pytest-timeout>=2.3", "trl>=0.20"],
    },
)
