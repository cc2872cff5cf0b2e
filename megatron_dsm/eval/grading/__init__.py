"""Answer grading: extraction, normalisation, equivalence.

This is both the evaluation grader and GRPO's rule reward, so it has to be
right, fast and never hang.  The order of checks is fixed and cheap first:

1. normalised string equality (``normalise``);
2. numeric (``numeric``): plain numbers, fractions, percentages, and
   *constant* LaTeX expressions (``\\frac``, ``\\sqrt``, ``\\pi``, powers,
   implicit products) evaluated by a small in-process parser, compared at
   relative tolerance 1e-4 - this decides the large majority of pairs,
   right or wrong, without sympy;
3. structure (``equivalence``): tuples / intervals / sets / matrices
   element-wise (interval brackets must match), equations (``x=3`` vs ``3``,
   ``y=2x+1`` vs ``y=1+2x``);
4. only when nothing above could decide (free variables, unusual LaTeX):
   sympy ``parse_latex`` + simplification in a worker process with a
   per-call timeout (``symbolic``), so a pathological expression costs a
   bounded time and never blocks the caller.

``grade(completion, reference)`` extracts the model's final answer
(``extract``) and compares it with the reference answer.
``grade(..., grader="math_verify")`` uses the math-verify package instead.
Importing this package checks the antlr runtime sympy's LaTeX parser needs
(see ``symbolic``).
"""

from megatron_dsm.eval.grading.equivalence import grade, is_equiv
from megatron_dsm.eval.grading.extract import (
    extract_answer,
    extract_choice,
    extract_choices,
    last_boxed,
)
from megatron_dsm.eval.grading.normalise import normalize_answer
from megatron_dsm.eval.grading.numeric import numeric_value
from megatron_dsm.eval.grading.symbolic import (
    REQUIRED_ANTLR,
    STATS,
    SymbolicPool,
    check_antlr,
    symbolic_equiv,
)


def clear_caches() -> None:
    """Forget every remembered normalisation, numeric value and sympy answer
    (a throughput measurement starts cold)."""
    normalize_answer.cache_clear()
    numeric_value.cache_clear()
    symbolic_equiv.cache_clear()


__all__ = [
    "REQUIRED_ANTLR", "STATS", "SymbolicPool", "check_antlr", "clear_caches", "extract_answer",
    "extract_choice", "extract_choices", "grade", "is_equiv", "last_boxed", "normalize_answer",
]
