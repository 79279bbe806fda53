"""Sandbox throughput against its baselines, measured in the same run on the same machine.

    .venv/bin/python benchmarks/sandbox_throughput.py [--print-programs 2000] [--sympy-programs 200]

Runs print-only programs and sympy programs through
  (a) our sandbox (`Sandbox(workers=cores)`: fork servers, namespaces, seccomp, limits),
  (b) a fresh `python -I -c` subprocess per program (the simple safe way), `cores` at a time,
  (c) a reused process pool that `exec`s each program in-process (the unsafe ToRA/MMOS way).
Every output is checked, so a broken path cannot look fast. The last line is one JSON object:
{"print_only": {"programs_per_s", "programs_per_s_per_core", "speedup_vs_fresh_interpreter",
"ratio_vs_unsafe_pool", ...}, "sympy": {...}, "cores", "protections"}.
Targets (issue 3): print-only >= 5x the fresh interpreter and >= 300 programs/s per core.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from mmos_ray.sandbox import Sandbox


def print_programs(n: int) -> list[tuple[str, str]]:
    return [(f"print({i} * 2)", f"{i * 2}\n") for i in range(n)]


def sympy_programs(n: int) -> list[tuple[str, str]]:
    programs = []
    for i in range(n):
        code = f"import sympy as sp\nx = sp.symbols('x')\nprint(sp.factor(x**2 - {i + 1}**2))"
        programs.append((code, f"(x - {i + 1})*(x + {i + 1})\n"))
    return programs


def run_sandbox(sandbox: Sandbox, programs) -> float:
    started = time.perf_counter()
    results = sandbox.execute_many([code for code, _ in programs])
    elapsed = time.perf_counter() - started
    _check([r.stdout for r in results], programs, "sandbox")
    return elapsed


def run_fresh(programs, workers: int) -> float:
    def one(code: str) -> str:
        return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60).stdout

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outputs = list(pool.map(one, [code for code, _ in programs]))
    elapsed = time.perf_counter() - started
    _check(outputs, programs, "fresh interpreter")
    return elapsed


def _unsafe_exec(code: str) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            exec(code, {"__name__": "__main__"})  # noqa: S102 - the unsafe baseline, on our own benchmark code
        except Exception as exc:
            return repr(exc)
    return buffer.getvalue()


def run_unsafe_pool(pool, programs) -> float:
    started = time.perf_counter()
    outputs = list(pool.imap(_unsafe_exec, [code for code, _ in programs], chunksize=1))
    elapsed = time.perf_counter() - started
    _check(outputs, programs, "unsafe pool")
    return elapsed


def _check(outputs, programs, label: str) -> None:
    wrong = sum(out != expected for out, (_, expected) in zip(outputs, programs))
    if wrong:
        raise SystemExit(f"{label}: {wrong} of {len(programs)} outputs are wrong")


def measure(kind: str, programs, sandbox: Sandbox, pool, cores: int) -> dict:
    warm = programs[:cores * 2]  # start the servers / import sympy in the pool before timing
    sandbox.execute_many([code for code, _ in warm])
    list(pool.imap(_unsafe_exec, [code for code, _ in warm], chunksize=1))
    ours = len(programs) / run_sandbox(sandbox, programs)
    fresh = len(programs) / run_fresh(programs, cores)
    unsafe = len(programs) / run_unsafe_pool(pool, programs)
    row = {"programs": len(programs), "programs_per_s": round(ours, 1), "programs_per_s_per_core": round(ours / cores, 1),
           "fresh_interpreter_per_s": round(fresh, 1), "unsafe_pool_per_s": round(unsafe, 1),
           "speedup_vs_fresh_interpreter": round(ours / fresh, 2), "ratio_vs_unsafe_pool": round(ours / unsafe, 3)}
    print(f"{kind}: {json.dumps(row)}", file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print-programs", type=int, default=2000)
    parser.add_argument("--sympy-programs", type=int, default=200)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    args = parser.parse_args()
    with Sandbox(workers=args.cores) as sandbox, multiprocessing.get_context("fork").Pool(args.cores) as pool:
        report = {
            "print_only": measure("print_only", print_programs(args.print_programs), sandbox, pool, args.cores),
            "sympy": measure("sympy", sympy_programs(args.sympy_programs), sandbox, pool, args.cores),
            "cores": args.cores,
            "protections": {k: v for k, v in sandbox.protections.items() if k != "preloaded"},
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
