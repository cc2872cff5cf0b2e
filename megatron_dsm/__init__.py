"""megatron-dsm: DeepSeekMath reproduced end to end on Megatron-Core.

Stages (see DESIGN.md): mining -> data -> training -> SFT / reward models ->
GRPO -> evaluation.  Each subpackage depends only on those before it in that
path, plus ``platform``, ``config`` and ``models``.
"""

__version__ = "0.1.0"
