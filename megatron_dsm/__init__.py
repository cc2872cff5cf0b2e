"""megatron-dsm: DeepSeekMath reproduced end to end on Megatron-Core.

Stages (see DESIGN.md and docs/architecture.md): mining -> data -> training
-> SFT / reward models -> GRPO -> evaluation.
"""

import warnings

# megatron-core warns at import, on every rank, when transformer-engine or apex
# are absent; the fallbacks it names are what the CPU path uses (README), so
# the filter is set before any module of the package imports megatron-core.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
warnings.filterwarnings("ignore", message=".*Apex is not installed.*")

__version__ = "0.1.0"
