"""Grading table: (pred, gold, compat, strict, symmetric). `symmetric` rows are also asserted swapped.

compat = what ToRA/MMOS's math_equal says (with this project's sympy); strict = exact numbers, no
percentage leniency, math-verify for structure. Where the two differ, the comment says why.
"""

T, F = True, False
S, A = True, False  # symmetric / asymmetric

CASES = [
    # --- integers
    ("42", "42", T, T, S),
    ("42", "43", F, F, S),
    ("1000001", "1000000", T, F, S),  # compat: within rel_tol 1e-4; strict: integers are exact
    ("123456789", "123456788", T, F, S),
    ("-5", "-5", T, T, S),
    ("-5", "5", F, F, S),
    ("007", "7", T, T, S),
    ("0", "-0", T, T, S),
    ("12", "12.0", T, T, S),
    ("17", "18", F, F, S),
    ("100", "10", F, F, S),
    ("0", "1", F, F, S),
    # --- decimals
    ("3.14", "3.14", T, T, S),
    ("3.14", "3.140", T, T, S),
    ("0.5", ".5", T, T, S),
    ("2.5", "2.4", F, F, S),
    ("0.333", "0.3333", F, F, S),
    ("3.0001", "3", T, F, S),  # compat: rel 3e-5 < 1e-4
    ("1.5", "1.50000", T, T, S),
    ("3244047.1", "3244047.0999999996", T, T, S),  # GSM-HARD float gold
    ("14053029.666666666", "14053029.67", T, F, S),  # strict compares to 6 decimal places
    ("18.00", "18", T, T, S),
    # --- thousands separators
    ("1,000", "1000", T, T, S),
    ("1,234,567", "1234567", T, T, S),
    ("10,000", "1000", F, F, S),
    ("1,000.5", "1000.5", T, T, S),
    ("-2,520,000", "-2520000", T, T, S),
    # --- fractions
    ("\\frac{1}{2}", "0.5", T, T, S),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", T, T, S),
    ("\\tfrac{1}{2}", "\\frac{1}{2}", T, T, S),
    ("1/2", "\\frac{1}{2}", T, T, S),
    ("\\frac12", "\\frac{1}{2}", T, T, S),
    ("\\frac{2}{4}", "\\frac{1}{2}", T, T, S),
    ("\\frac{1}{3}", "0.3333333", T, T, S),
    ("0.333", "\\frac{1}{3}", T, F, A),  # compat: N() within rel 1e-3; strict: not to 6 places
    ("-\\frac{1}{2}", "-0.5", T, T, S),
    ("\\frac{-1}{2}", "-\\frac{1}{2}", T, T, S),
    ("\\frac{3}{4}", "\\frac{4}{3}", F, F, S),
    ("3/4", "0.75", T, T, S),
    ("\\frac{10}{4}", "\\frac{5}{2}", T, T, S),
    ("\\frac{1}{2}", "\\frac{1}{3}", F, F, S),
    ("\\frac{7}{2}", "3.5", T, T, S),
    # --- mixed forms
    ("3\\frac{1}{2}", "3.5", F, T, S),  # compat reads 3 * 1/2; math-verify knows mixed numbers
    ("\\frac{7}{2}", "3\\frac{1}{2}", F, T, S),
    ("2+\\frac{1}{2}", "\\frac{5}{2}", T, T, S),
    ("\\frac{1}{2}+\\frac{1}{3}", "\\frac{5}{6}", T, T, S),
    # --- percentages
    ("50\\%", "50", T, T, S),
    ("50", "0.5", T, F, S),  # compat: percentage leniency (x100 / /100)
    ("1", "100", T, F, S),  # ... which also accepts a wrong answer
    ("25\\%", "0.25", T, F, S),
    ("12.5\\%", "12.5", T, T, S),
    ("50\\%", "40\\%", F, F, S),
    ("50%", "50", T, T, S),
    # --- units and \text{}
    ("5 \\text{ cm}", "5", T, T, S),
    ("\\$18.90", "18.9", T, T, S),
    ("\\text{Monday}", "Monday", T, T, S),
    ("12 \\text{ inches}", "12", T, T, S),
    ("12 \\text{ inches}", "13", F, F, S),
    ("\\text{(C)}", "C", T, T, S),
    ("5 \\mbox{ cm}", "5", T, T, S),
    # --- degrees
    ("90^\\circ", "90", T, T, S),
    ("90^{\\circ}", "90", T, T, S),
    ("45^\\circ", "90", F, F, S),
    ("30^\\circ", "30^{\\circ}", T, T, S),
    # --- square roots
    ("\\sqrt{2}", "\\sqrt2", T, T, S),
    ("2\\sqrt{2}", "\\sqrt{8}", T, T, S),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", T, T, S),
    ("1.41421356", "\\sqrt{2}", T, T, A),
    ("\\sqrt{3}", "\\sqrt{2}", F, F, S),
    ("3\\sqrt{3}", "\\sqrt{27}", T, T, S),
    ("\\sqrt{2}+1", "1+\\sqrt{2}", T, T, S),
    # --- pi
    ("\\pi", "\\pi", T, T, S),
    ("\\frac{\\pi}{2}", "\\frac{1}{2}\\pi", T, T, S),
    ("2\\pi", "\\pi", F, F, S),
    ("3.14159", "\\pi", F, F, A),  # this sympy's parse_latex reads \pi as a symbol; math-verify wants 6 places
    ("\\frac{3\\pi}{4}", "\\frac{3}{4}\\pi", T, T, S),
    ("4\\pi", "4\\pi", T, T, S),
    # --- scientific notation
    ("1e6", "1000000", T, T, S),
    ("1.5e3", "1500", T, T, S),
    ("2.0107e-06", "0.0000020107", T, T, S),
    ("1e-3", "0.001", T, T, S),
    ("1e6", "1000001", T, F, S),
    ("2.5E2", "250", T, T, S),
    # --- negative numbers
    ("-3", "-3.0", T, T, S),
    ("-3", "3", F, F, S),
    ("-0.5", "-\\frac{1}{2}", T, T, S),
    ("-9867630", "-9867630", T, T, S),
    ("-9867630", "9867630", F, F, S),
    ("-\\sqrt{2}", "\\sqrt{2}", F, F, S),
    # --- tuples and points
    ("(1,2)", "(1, 2)", T, T, S),
    ("(1,2)", "(2,1)", F, F, S),
    ("(1,\\frac{1}{2})", "(1,0.5)", T, T, S),
    ("(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", T, T, S),
    ("(1,2,3)", "(1,2)", F, F, S),
    ("(-1,4)", "(-1, 4)", T, T, S),
    ("(2,-3)", "(2,3)", F, F, S),
    # --- intervals
    ("[0,1)", "[0, 1)", T, T, S),
    ("(-\\infty,3]", "(-\\infty, 3]", T, T, S),
    ("[0,1]", "[0,1]", T, T, S),
    ("(0,1)", "[0,1]", F, F, S),
    ("[2,5)", "[2,5]", F, F, A),
    ("[2,5]", "[2,5)", T, F, A),  # compat: ToRA strips the brackets of both sides when pred has []
    ("(-\\infty,-2)\\cup(2,\\infty)", "(-\\infty, -2) \\cup (2, \\infty)", T, T, S),
    ("x\\in[2,5]", "[2,5]", T, T, S),
    # --- sets
    ("\\{1,2\\}", "\\{2,1\\}", F, T, S),  # compat compares strings; strict knows sets are unordered
    ("\\{1,2,3\\}", "\\{1,2\\}", F, F, S),
    ("\\{1,2\\}", "\\{1,2\\}", T, T, S),
    ("\\{-1,1\\}", "\\{1,-1\\}", F, T, S),
    # --- matrices and vectors
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", T, T, S),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}", F, F, S),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", F, T, S),
    ("\\begin{pmatrix}\\frac{1}{2}\\\\1\\end{pmatrix}", "\\begin{pmatrix}0.5\\\\1\\end{pmatrix}", F, T, S),
    ("\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}", "\\begin{pmatrix}1&0\\\\0&2\\end{pmatrix}", F, F, S),
    # --- equations
    ("x=3", "3", T, T, S),
    ("k=5", "5", T, T, S),
    ("y=2x+1", "y=1+2x", T, T, S),
    ("x=3", "x=4", F, F, S),
    ("x=3", "3", T, T, S),
    ("y=-x+2", "y=2-x", T, T, S),
    ("x=-2", "-2", T, T, S),
    # --- inequalities
    ("x>3", "x>3", T, T, S),
    ("x>3", "3<x", F, T, S),  # compat cannot subtract relations
    ("x\\geq 2", "x\\ge2", F, T, S),
    ("x<5", "x>5", F, F, S),
    ("x\\le 4", "x<4", F, F, S),
    # --- text answers
    ("shortage", "shortage", T, T, S),
    ("surplus", "shortage", F, F, S),
    ("\\text{yes}", "yes", T, T, S),
    ("Yes", "yes", F, T, S),  # compat is case-sensitive
    ("(C)", "C", T, T, A),
    ("A", "B", F, F, S),
    ("\\text{Saturday}", "\\text{Sunday}", F, F, S),
    ("even", "odd", F, F, S),
    # --- multiple answers
    ("4,6,14,15", "4, 6, 14, 15", T, T, S),
    ("15,4,6,14", "4,6,14,15", F, T, S),  # compat reads both as one number (commas dropped)
    ("-2, 2", "2, -2", F, T, S),
    ("1,2", "1,3", F, F, S),
    ("1, 2, 3", "1,2,3", T, T, S),
    ("2", "2, -2", T, F, S),  # compat: this sympy's parse_latex reads "2,-2" as its first item
    # --- expressions
    ("x^2+2x+1", "(x+1)^2", T, T, S),
    ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}", T, T, S),
    ("a+b", "b+a", T, T, S),
    ("x+1", "x+2", F, F, S),
    ("2^{10}", "1024", T, T, S),
    ("\\binom{5}{2}", "10", T, T, S),
    ("\\infty", "\\infty", T, T, S),
    ("-\\infty", "\\infty", F, F, S),
    ("2x", "x \\cdot 2", T, T, S),
    ("\\frac{1}{x}", "x^{-1}", T, T, S),
    # --- clear wrong and empty answers
    ("", "5", F, F, A),
    (None, "5", F, F, A),
    ("5", "", F, F, A),
    ("None", "5", F, F, S),
    ("-1", "1", F, F, S),
    ("42", "x+1", F, F, S),
    ("\\frac{1}{2}", "2", F, F, S),
    ("banana", "7", F, F, S),
]
