"""Prompts for tool-integrated reasoning: the training format, and a few-shot prompt for base models.

- `train` (`mmos-train-v1`): `<|user|>\\n{question}\\n<|assistant|>\\n`, the format MMOS fine-tunes and
  evaluates in (mmos-method.md §4); no instructions, no examples.
- `fewshot` (`tir-fewshot-v1`): our own instructions and worked examples in the ToRA style (reasoning,
  a ```python block, its ```output, an answer in `\\boxed{}`), then `Question: ...\\n\\nSolution:`.
  For models that have not been trained on the format.

Which one a result used is recorded with it (`PROMPT_VERSIONS`).
"""

from __future__ import annotations

PROMPT_VERSIONS = {"train": "mmos-train-v1", "fewshot": "tir-fewshot-v1"}

_FEWSHOT_HEADER = """\
Solve each math problem by reasoning in short steps and computing with Python.
- Write one ```python block that prints the result; its output follows in an ```output block.
- Use exact arithmetic where it matters: fractions.Fraction, or sympy for algebra and roots.
- When the output gives the result, state the final answer as $\\boxed{answer}$, without units.
"""

_FEWSHOT_EXAMPLES = [
    ("A bakery sells muffins for $3 each and cookies for $1.50 each. Maya buys 4 muffins and 6 cookies. "
     "How much does she spend in dollars?",
     "The cost is the muffins plus the cookies.\n"
     "```python\nmuffins = 4 * 3\ncookies = 6 * 1.5\nprint(muffins + cookies)\n```\n"
     "```output\n21.0\n```\n"
     "Maya spends $\\boxed{21}$ dollars."),
    ("A train travels 180 km in 2.5 hours, then 120 km in 1.5 hours. What is its average speed for the "
     "whole trip, in km per hour?",
     "Average speed is total distance over total time.\n"
     "```python\nfrom fractions import Fraction\ndistance = 180 + 120\n"
     "time = Fraction(5, 2) + Fraction(3, 2)\nprint(distance / time)\n```\n"
     "```output\n75\n```\n"
     "The average speed is $\\boxed{75}$ km per hour."),
    ("Find all real solutions of $x^2 - 5x + 6 = 0$ and give their sum.",
     "Solve the quadratic with sympy, then add the roots.\n"
     "```python\nimport sympy as sp\nx = sp.symbols('x')\nroots = sp.solve(x**2 - 5*x + 6, x)\n"
     "print(roots, sum(roots))\n```\n"
     "```output\n[2, 3] 5\n```\n"
     "The solutions are 2 and 3, so their sum is $\\boxed{5}$."),
]


def train_prompt(question: str) -> str:
    return f"<|user|>\n{question}\n<|assistant|>\n"


def fewshot_prompt(question: str) -> str:
    examples = "\n\n---\n\n".join(f"Question: {q}\n\nSolution:\n{a}" for q, a in _FEWSHOT_EXAMPLES)
    return f"{_FEWSHOT_HEADER}\n{examples}\n\n---\n\nQuestion: {question}\n\nSolution:\n"


def render_prompt(question: str, style: str) -> str:
    if style == "train":
        return train_prompt(question)
    if style == "fewshot":
        return fewshot_prompt(question)
    raise ValueError(f"prompt style must be one of {sorted(PROMPT_VERSIONS)}, got {style!r}")


def stop_strings(style: str) -> tuple[str, ...]:
    """Generation stops before the model writes its own ```output (we run the code instead) and, in the
    few-shot format, before it starts another example."""
    return ("```output",) if style == "train" else ("```output", "\n---", "\nQuestion:")
