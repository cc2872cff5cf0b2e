"""Prompt formats for evaluation: few-shot CoT for base models, the zero-shot
instruct format (English and Chinese), program-of-thought, and the
tool-integrated reasoning loop.

The few-shot exemplars are this project's own: problems picked from the
MATH and GSM8K *train* splits (ids recorded beside each, so decontamination
can see them) with solutions written for this project.  The MATH prompt
follows the Minerva layout (``Problem:`` / ``Solution:`` ending in "Final
Answer: The final answer is $X$. I hope it is correct.") because the grader
extracts exactly that sentence.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

from .benchmarks import Problem

# ---------------------------------------------------------------------------
# Few-shot exemplars (train split only)
# ---------------------------------------------------------------------------

MATH_EXEMPLARS = [
    {"source": "train/intermediate_algebra/1922.json",
     "problem": r"The three roots of the equation \[ax^3+bx^2+cx+d=0\]are $1,$ $2,$ and $3.$ Compute $\frac{c}{d}.$",
     "solution": (r"By Vieta's formulas, the sum of the products of the roots taken two at a time is "
                  r"$\frac{c}{a} = 1\cdot 2 + 1\cdot 3 + 2\cdot 3 = 11$, and the product of the roots is "
                  r"$-\frac{d}{a} = 1\cdot 2\cdot 3 = 6$. So $c = 11a$ and $d = -6a$, which gives "
                  r"$\frac{c}{d} = \frac{11a}{-6a} = -\frac{11}{6}$."),
     "answer": r"-\frac{11}{6}"},
    {"source": "train/prealgebra/1630.json",
     "problem": r"Solve for $r$: \[\frac{r-45}{2} = \frac{3-2r}{5}.\]",
     "solution": (r"Multiplying both sides by $10$ clears the denominators: $5(r-45) = 2(3-2r)$, so "
                  r"$5r - 225 = 6 - 4r$. Adding $4r + 225$ to both sides gives $9r = 231$, hence "
                  r"$r = \frac{231}{9} = \frac{77}{3}$."),
     "answer": r"\frac{77}{3}"},
    {"source": "train/number_theory/786.json",
     "problem": r"If $n$ is an integer, what is the remainder when the sum of $7 - n$ and $n + 3$ is divided by $7$?",
     "solution": (r"The sum is $(7 - n) + (n + 3) = 10$, which no longer depends on $n$. Since "
                  r"$10 = 7 + 3$, the remainder on division by $7$ is $3$."),
     "answer": "3"},
    {"source": "train/counting_and_probability/966.json",
     "problem": r"How many positive two-digit integers are there in which each of the two digits is prime?",
     "solution": (r"The prime digits are $2, 3, 5, 7$, four choices. The tens digit can be any of the four "
                  r"and so can the units digit, independently, so there are $4 \cdot 4 = 16$ such integers."),
     "answer": "16"},
]

GSM8K_EXEMPLARS = [
    {"source": "gsm8k train #2793",
     "question": "Lara is baking cookies using four baking trays. She places five rows of cookies on a baking tray where there are six cookies in one row. How many cookies is she baking?",
     "solution": "One tray holds 5 rows of 6 cookies, so 5 * 6 = 30 cookies. Four trays hold 4 * 30 = 120 cookies.",
     "answer": "120"},
    {"source": "gsm8k train #2446",
     "question": "Bob and Jim decide to skip rocks.  Bob can skip a rock 12 times.  Jim can skip a rock 15 times.  If they each skipped 10 rocks how many total skips did they get?",
     "solution": "Bob gets 12 * 10 = 120 skips and Jim gets 15 * 10 = 150 skips. Together that is 120 + 150 = 270 skips.",
     "answer": "270"},
    {"source": "gsm8k train #6469",
     "question": "Twice Angie's age, plus 4, is 20. How old is Angie?",
     "solution": "Twice her age is 20 - 4 = 16, so her age is 16 / 2 = 8.",
     "answer": "8"},
    {"source": "gsm8k train #171",
     "question": "James collects all the fruits from his 2 trees.  Each tree has 20 plants.  Each plant has 1 seed and he plants 60% of those.  How many trees did he plant?",
     "solution": "The two trees have 2 * 20 = 40 plants, giving 40 seeds. He plants 60% of them: 40 * 0.6 = 24 trees.",
     "answer": "24"},
    {"source": "gsm8k train #1420",
     "question": "Compared to the amount of water she drank, Carla drank three times as much soda minus 6 ounces. If she drank 54 ounces of liquid total, how much water did she drink?",
     "solution": "Call the water w. The soda is 3w - 6, so w + 3w - 6 = 54. Then 4w = 60 and w = 15 ounces.",
     "answer": "15"},
    {"source": "gsm8k train #5216",
     "question": "Jacob takes four tests in his physics class and earns 85, 79, 92 and 84. What must he earn on his fifth and final test to have an overall average of 85?",
     "solution": "An average of 85 over 5 tests needs 85 * 5 = 425 points. He has 85 + 79 + 92 + 84 = 340, so he needs 425 - 340 = 85.",
     "answer": "85"},
    {"source": "gsm8k train #7448",
     "question": "A department store displays a 20% discount on all fixtures. What will be the new price of a 25 cm high bedside lamp that was worth $120?",
     "solution": "The discount is 120 * 20 / 100 = 24 dollars, so the lamp now costs 120 - 24 = 96 dollars.",
     "answer": "96"},
    {"source": "gsm8k train #2176",
     "question": "Maiya has two sisters. The first sister is twice as old as Maiya. The first sister is 1 year younger than Maiya. Their average age is 5. How old is Maiya?",
     "solution": "Their ages add up to 5 * 3 = 15. If Maiya is m, the first sister is 2m and the second is m - 1, so m + 2m + m - 1 = 15, 4m = 16, and m = 4.",
     "answer": "4"},
]

# ---------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------

INSTRUCT_EN = "User: {question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.\n\nAssistant:"
INSTRUCT_ZH = "User: {question}\n请通过逐步推理来解答问题，并把最终答案放置于\\boxed{{}}中。\n\nAssistant:"


def instruct_prompt(question: str, language: str = "en") -> str:
    """Zero-shot chain-of-thought prompt for instruct / RL models."""
    tmpl = INSTRUCT_ZH if language == "zh" else INSTRUCT_EN
    return tmpl.format(question=question)


def math_fewshot_prompt(question: str) -> str:
    """Minerva-style MATH 4-shot prompt."""
    parts = []
    for ex in MATH_EXEMPLARS:
        parts.append(f"Problem:\n{ex['problem']}\n\nSolution:\n{ex['solution']}\n"
                     f"Final Answer: The final answer is ${ex['answer']}$. I hope it is correct.")
    parts.append(f"Problem:\n{question}\n\nSolution:")
    return "\n\n".join(parts)


def gsm8k_fewshot_prompt(question: str) -> str:
    """GSM8K 8-shot chain-of-thought prompt."""
    parts = [f"Question: {ex['question']}\nAnswer: {ex['solution']} The answer is {ex['answer']}."
             for ex in GSM8K_EXEMPLARS]
    parts.append(f"Question: {question}\nAnswer:")
    return "\n\n".join(parts)


def choice_question(p: Problem) -> str:
    """Question text with its lettered options appended."""
    if not p.choices:
        return p.question
    opts = "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(p.choices))
    return f"{p.question}\n{opts}"


POT_SUFFIX = ("\nWrite a Python program that solves the problem and prints the final answer. "
              "Put the program in a ```python code block.")


def pot_prompt(question: str) -> str:
    """Program-of-thought prompt: the model answers with a program."""
    return f"User: {question}{POT_SUFFIX}\n\nAssistant:"


# Stop strings per format (generation stops at any of them).
STOPS = {
    "fewshot_math": ["\n\nProblem:", "I hope it is correct."],
    "fewshot_gsm8k": ["\n\nQuestion:"],
    "instruct": ["\n\nUser:"],
    "pot": ["\n\nUser:"],
    "tool": ["\n\nUser:"],
}


def build_prompt(p: Problem, style: str) -> str:
    """Prompt for ``p`` in ``style`` (fewshot | instruct | pot | tool)."""
    q = choice_question(p)
    if style == "instruct" or style == "tool":
        return instruct_prompt(q, p.language)
    if style == "fewshot":
        return gsm8k_fewshot_prompt(q) if p.benchmark.startswith(("gsm8k", "mgsm", "cmath")) \
            else math_fewshot_prompt(q)
    if style == "pot":
        return pot_prompt(q)
    raise ValueError(f"unknown prompt style {style!r} (fewshot | instruct | pot | tool)")


def stops_for(p: Problem, style: str) -> list[str]:
    if style == "fewshot":
        return STOPS["fewshot_gsm8k" if p.benchmark.startswith(("gsm8k", "mgsm", "cmath")) else "fewshot_math"]
    return STOPS[style]


# ---------------------------------------------------------------------------
# Program of thought / tool-integrated reasoning
# ---------------------------------------------------------------------------

_CODE_RE = re.compile(r"```python\s*\n(.*?)```", re.S)


def extract_program(completion: str) -> Optional[str]:
    """Last ```python block of a completion (or None)."""
    blocks = _CODE_RE.findall(completion)
    return blocks[-1] if blocks else None


def make_runnable(program: str) -> str:
    """A PoT program prints its answer or returns it from ``solution()``;
    call ``solution()`` and print what it returns when the program defines
    but does not itself call it."""
    if re.search(r"^def solution\(\s*\)", program, re.M) and not re.search(r"^\s*print\(\s*solution\(\)", program, re.M):
        return program + "\n\nprint(solution())\n"
    return program


def run_pot(completion: str, execute: Callable, timeout: float = 10.0) -> Optional[str]:
    """Run a PoT completion's program; its answer is the last printed line."""
    prog = extract_program(completion)
    if prog is None:
        return None
    res = execute(make_runnable(prog), timeout)
    if res.status != "ok":
        return None
    lines = [l for l in res.stdout.strip().splitlines() if l.strip()]
    return lines[-1].strip() if lines else None


def _open_code_block(text: str) -> Optional[str]:
    """If ``text`` ends with a complete ```python block that has not been run
    (no ```output after it), return its code."""
    idx = text.rfind("```python")
    if idx < 0:
        return None
    tail = text[idx:]
    m = re.match(r"```python\s*\n(.*?)```", tail, re.S)
    if not m or "```output" in tail[m.end():]:
        return None
    return m.group(1)


def tool_integrated(prompts: list[str], generate: Callable[[list[str]], list[str]],
                    execute: Callable, *, max_rounds: int = 4, timeout: float = 10.0,
                    max_output_chars: int = 800) -> list[str]:
    """Tool-integrated reasoning: text and ```python blocks interleave.

    ``generate(prompts) -> completions`` continues each transcript and
    should stop after a closing ``` of a python block (pass "```output" or
    the closing fence as a stop).  Each new block runs in the sandbox and
    its output is appended as a ```output block; the model continues from
    there, for at most ``max_rounds`` executions.  Returns the full
    assistant text of every prompt (without the prompt).
    """
    texts = [""] * len(prompts)
    active = list(range(len(prompts)))
    for rnd in range(max_rounds + 1):
        if not active:
            break
        outs = generate([prompts[i] + texts[i] for i in active])
        if len(outs) != len(active):
            raise ValueError(f"tool_integrated: generate returned {len(outs)} completions for {len(active)} prompts")
        nxt = []
        for i, out in zip(active, outs):
            texts[i] += out
            code = _open_code_block(texts[i])
            if code is None or rnd == max_rounds:
                continue
            res = execute(code, timeout)
            shown = (res.stdout if res.status == "ok" else (res.stdout + res.stderr)).strip()
            if res.status in ("timeout", "killed"):
                shown = (shown + f"\n[{res.status}: {res.reason}]").strip()
            if len(shown) > max_output_chars:
                shown = shown[:max_output_chars] + "\n...[truncated]"
            texts[i] += f"\n```output\n{shown}\n```\n"
            nxt.append(i)
        active = nxt
    return texts
