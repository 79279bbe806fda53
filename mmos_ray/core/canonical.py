"""Program canonicalisation: one key for programs that differ only in names, comments and layout.

`canonical_key(text)` covers every ```python block of a trajectory: each block is parsed, every binding
is renamed by scope (assignments and re-assignments, augmented and annotated targets, parameters,
loop, `with`, `except` and comprehension targets, functions, classes, import aliases) to `v0, v1, ...`
in order of first appearance (attributes, and so names bound in class bodies, are kept), docstrings are
dropped, and the tree is printed back (comments and
formatting gone). Alpha-equivalent programs get one key; a different constant or operation gives
another. A block that does not parse is kept under a raw key (whitespace-normalised) and reported, never
dropped.

`mmos_key(text)` reproduces the MMOS key for comparison (mmos-method.md §2.9b): the rationale before the
first fence, the first block through MMOS's renamer (functions -> a, b, ...; new stored names -> A, B,
...; parameters, imports and re-assigned names kept), and the first output block.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import re
import string

_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
_OUTPUT = re.compile(r"```output\n(.*?)```", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Canonical:
    key: str  # the canonical text of all blocks, joined
    fingerprint: str  # a short hash of the key
    blocks: int
    unparsable: int  # blocks kept under their raw text


def code_blocks(text: str) -> list[str]:
    """Every closed ```python block of a trajectory, in order."""
    return _BLOCK.findall(text)


def output_blocks(text: str) -> list[str]:
    return [block.strip("\n") for block in _OUTPUT.findall(text)]


def canonical_key(text: str) -> Canonical:
    parts, unparsable = [], 0
    for code in code_blocks(text):
        canonical = canonicalize_code(code)
        if canonical is None:
            unparsable += 1
            canonical = "#raw\n" + "\n".join(" ".join(line.split()) for line in code.strip().splitlines())
        parts.append(canonical)
    key = "\n#---\n".join(parts)
    return Canonical(key, fingerprint(key), len(parts), unparsable)


def fingerprint(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def canonicalize_code(code: str) -> str | None:
    """The canonical text of one program, or None when it does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    _drop_docstrings(tree)
    _Renamer().rename(tree)
    return ast.unparse(tree)


def _drop_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


class _Scope:
    def __init__(self, parent: "_Scope | None"):
        self.parent = parent
        self.names: dict[str, str] = {}
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()

    def lookup(self, name: str) -> str | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.names:
                return scope.names[name]
            scope = scope.parent
        return None


class _Renamer:
    """Two passes per scope: collect what the scope binds (Python's rule: a name bound anywhere in a
    function is local to it), then rename bindings and the loads that resolve to them."""

    def __init__(self):
        self.counter = 0
        self.function_params: dict[str, dict[str, str]] = {}  # canonical function name -> param renames

    def fresh(self) -> str:
        name = f"v{self.counter}"
        self.counter += 1
        return name

    def rename(self, tree: ast.Module) -> None:
        module = _Scope(None)
        self._declare(module, tree.body)
        self._visit_body(tree.body, module)

    # -- pass 1: bindings of a scope, in order of appearance (nested scopes excluded) --------------
    def _declare(self, scope: _Scope, body: list[ast.stmt], params: list[str] = ()) -> None:
        for name in params:
            self._bind(scope, name)
        for stmt in body:
            for node in _scope_nodes(stmt):
                if isinstance(node, ast.Global):
                    scope.globals.update(node.names)
                elif isinstance(node, ast.Nonlocal):
                    scope.nonlocals.update(node.names)
        for stmt in body:
            for name in _bound_names(stmt):
                if name not in scope.globals and name not in scope.nonlocals:
                    self._bind(scope, name)

    def _bind(self, scope: _Scope, name: str) -> None:
        if name not in scope.names:
            scope.names[name] = self.fresh()

    # -- pass 2: rewrite ----------------------------------------------------------------------------
    def _visit_body(self, body: list[ast.stmt], scope: _Scope) -> None:
        for stmt in body:
            self._visit(stmt, scope)

    def _visit(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return self._function(node, scope)
        if isinstance(node, ast.Lambda):
            return self._lambda(node, scope)
        if isinstance(node, ast.ClassDef):
            return self._class(node, scope)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self._comprehension(node, scope)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                target = scope.lookup(bound) if alias.name != "*" else None
                if target:
                    alias.asname = target
        elif isinstance(node, ast.Name):
            new = scope.lookup(node.id)
            if new:
                node.id = new
            return
        elif isinstance(node, ast.arg):
            new = scope.lookup(node.arg)
            if new:
                node.arg = new
            return
        elif isinstance(node, ast.ExceptHandler) and node.name:
            node.name = scope.lookup(node.name) or node.name
        elif isinstance(node, ast.Call):
            self._call_keywords(node, scope)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            node.names = [scope.lookup(n) or n for n in node.names]
        for child in ast.iter_child_nodes(node):
            self._visit(child, scope)

    def _function(self, node, scope: _Scope) -> None:
        new_name = scope.lookup(node.name) or node.name
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self._visit(default, scope)
        for decorator in node.decorator_list:
            self._visit(decorator, scope)
        if node.returns:
            self._visit(node.returns, scope)
        inner = _Scope(scope)
        params = [a.arg for a in _all_args(node.args)]
        self._declare(inner, node.body, params)
        self.function_params[new_name] = {p: inner.names[p] for p in params}
        node.name = new_name
        for arg in _all_args(node.args):
            arg.arg = inner.names[arg.arg]
            if arg.annotation:
                self._visit(arg.annotation, scope)
        self._visit_body(node.body, inner)

    def _lambda(self, node: ast.Lambda, scope: _Scope) -> None:
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self._visit(default, scope)
        inner = _Scope(scope)
        for arg in _all_args(node.args):
            self._bind(inner, arg.arg)
            arg.arg = inner.names[arg.arg]
        self._visit(node.body, inner)

    def _class(self, node: ast.ClassDef, scope: _Scope) -> None:
        for child in node.bases + node.keywords + node.decorator_list:
            self._visit(child, scope)
        node.name = scope.lookup(node.name) or node.name
        # Names bound in a class body are attributes (reached as self.x, which is not renamed): kept.
        inner = _Scope(scope)
        for stmt in node.body:
            for name in _bound_names(stmt):
                inner.names.setdefault(name, name)
        self._visit_body(node.body, inner)

    def _comprehension(self, node, scope: _Scope) -> None:
        inner = _Scope(scope)
        for index, generator in enumerate(node.generators):
            # The first iterable is evaluated in the enclosing scope; the rest see the targets so far.
            self._visit(generator.iter, scope if index == 0 else inner)
            for name in _target_names(generator.target):
                self._bind(inner, name)
            self._visit(generator.target, inner)
            for condition in generator.ifs:
                self._visit(condition, inner)
        for part in ([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]):
            self._visit(part, inner)

    def _call_keywords(self, node: ast.Call, scope: _Scope) -> None:
        if isinstance(node.func, ast.Name):
            params = self.function_params.get(scope.lookup(node.func.id) or "", {})
            for keyword in node.keywords:
                if keyword.arg in params:
                    keyword.arg = params[keyword.arg]


def _all_args(args: ast.arguments) -> list[ast.arg]:
    return [*args.posonlyargs, *args.args, *([args.vararg] if args.vararg else []), *args.kwonlyargs,
            *([args.kwarg] if args.kwarg else [])]


def _scope_nodes(stmt: ast.AST):
    """The nodes of a statement that belong to the same scope (nested functions, classes, lambdas and
    comprehensions are not entered; their names are theirs)."""
    yield stmt
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return  # only its name is bound here
    for child in ast.iter_child_nodes(stmt):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield child  # its name is bound here; its body is not ours
            continue
        if isinstance(child, (ast.Lambda, ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            continue
        yield from _scope_nodes(child)


def _bound_names(stmt: ast.AST) -> list[str]:
    names = []
    for node in _scope_nodes(stmt):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.append(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.extend(a.asname or a.name.split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.append(node.name)
        elif isinstance(node, ast.NamedExpr):
            names.append(node.target.id)
    return names


def _target_names(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


# --- the MMOS key, for comparison --------------------------------------------------------------------

_MMOS_KEEP = {"print", "range", "len", "sum", "max", "min", "abs", "round", "int", "float", "str", "list",
              "dict", "set", "tuple", "sorted", "enumerate", "zip", "map", "filter", "True", "False", "None"}


def mmos_key(text: str) -> str:
    """MMOS's dedup key: rationale before the first fence + the first block renamed its way + the first output."""
    start = text.find("```python\n")
    if start < 0:
        return text.strip()
    rationale = text[:start]
    blocks, outputs = code_blocks(text), output_blocks(text)
    if not blocks:
        return text.strip()
    code = blocks[0].replace("\n   ", "\n    ").replace('""""', '"""')
    try:
        tree = ast.parse(code)
        _MmosRenamer().visit(tree)
        code = ast.unparse(tree)
    except (SyntaxError, ValueError):
        pass  # MMOS under --save keeps the un-renamed code
    first_output = outputs[0] if outputs else ""
    return f"{rationale}```python\n{code}\n```\n```output\n{first_output}\n```"


class _MmosRenamer(ast.NodeTransformer):
    """MMOS's renamer and its quirks: functions a, b, c...; new stored names A, B, C... (one counter,
    modulo 26); a re-assigned name keeps its original spelling at the re-assignment; parameters,
    attributes and imports are not renamed."""

    def __init__(self):
        self.functions: dict[str, str] = {}
        self.scopes: list[dict[str, str]] = [{}]
        self.counter = 0

    def visit_FunctionDef(self, node):
        new = string.ascii_lowercase[len(self.functions) % 26]
        self.functions[node.name] = new
        node.name = new
        self.scopes.append({})
        self.generic_visit(node)
        self.scopes.pop()
        return node

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id in self.functions:
            node.func.id = self.functions[node.func.id]
        self.generic_visit(node)
        return node

    def visit_Name(self, node):
        if node.id in _MMOS_KEEP:
            return node
        if isinstance(node.ctx, ast.Store):
            if node.id not in self.scopes[-1]:
                self.scopes[-1][node.id] = string.ascii_uppercase[self.counter % 26]
                self.counter += 1
                node.id = self.scopes[-1][node.id]
            return node
        for scope in reversed(self.scopes):
            if node.id in scope:
                node.id = scope[node.id]
                break
        return node


def segments(text: str) -> list[tuple[str, str | None]]:
    """Each ```python block with the ```output block recorded right after it (None when there is none)."""
    pairs = []
    for match in _BLOCK.finditer(text):
        after = text[match.end():].lstrip("\n")
        recorded = None
        if after.startswith("```output\n"):
            output = _OUTPUT.match(after)
            recorded = output.group(1).strip("\n") if output else None
        pairs.append((match.group(1), recorded))
    return pairs
