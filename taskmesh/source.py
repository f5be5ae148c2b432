"""Source capture: a function becomes ``function_code`` (its own source plus the imports it uses), never pickle.

A function may read builtins, itself, and names its module binds with an import statement; any
other global, a closure variable, a lambda or a method is refused here, at decoration time.
"""

from __future__ import annotations

import ast
import builtins
import dis
import inspect
import linecache
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import CodeType
from typing import Any

from taskmesh.errors import FunctionNotPortable

HEADER = "from __future__ import annotations  # annotations stay text: their names need not exist remotely\n"
"""Added first, so a signature such as ``def f(df: pd.DataFrame)`` does not need ``pd`` at definition time."""
SANDBOX_GLOBALS = frozenset({"__name__", "__file__"})
"""Globals the sandbox defines for the task's module (a class body reads ``__name__``)."""
GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"})


@dataclass(frozen=True)
class CapturedSource:
    """What a code task carries: the code (imports + the function) and the function's name."""

    function_name: str
    function_code: str


def capture(function: Callable[..., Any]) -> CapturedSource:
    """The function as source, or FunctionNotPortable saying which name is in the way and how to fix it."""
    name = getattr(function, "__name__", repr(function))
    if not inspect.isfunction(function):
        raise _refuse(
            name,
            f"{name!r} is not a plain function (it is {type(function).__name__}); "
            "decorate a function defined with `def` at the top level of a module",
        )
    if name == "<lambda>":
        raise _refuse(
            name, "a lambda has no source of its own to send; define it with `def` at the top level of a module"
        )
    outer = function.__qualname__.rsplit(".", 1)[0] if "." in function.__qualname__ else ""
    if outer and not outer.endswith("<locals>"):
        raise _refuse(
            name,
            f"{function.__qualname__} is a method; tasks are module-level functions: "
            "move it out of the class and pass what it needs as arguments",
        )
    if function.__code__.co_freevars:
        variable = function.__code__.co_freevars[0]
        raise _refuse(
            name,
            f"{name} uses {variable!r} from the function around it (a closure variable); "
            f"move {variable!r} inside {name}, or pass it as an argument",
        )
    node, text = _definition(function)
    imports = _module_imports(function)
    lines = []
    for used in sorted(_globals_read(function.__code__) | _names_in_defaults(node)):
        if used == name or used in SANDBOX_GLOBALS or (used in vars(builtins) and used not in function.__globals__):
            continue
        if used not in imports:
            kind = type(function.__globals__[used]).__name__ if used in function.__globals__ else "undefined"
            raise _refuse(
                name,
                f"{name} uses the global {used!r} ({kind}); a task carries only its own source "
                f"and the module's import statements: move {used!r} inside {name}, "
                "or pass it as an argument",
            )
        lines.append(imports[used])
    code = HEADER + "".join(f"{line}\n" for line in dict.fromkeys(lines)) + "\n\n" + text
    return CapturedSource(function_name=name, function_code=code)


def _refuse(name: str, message: str) -> FunctionNotPortable:
    return FunctionNotPortable(f"cannot send {name} as a task: {message}")


def _definition(function: Callable[..., Any]) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]:
    """The ``def`` node and its text, dedented, from the ``def`` line on (decorators stripped)."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as exc:
        raise _refuse(function.__name__, f"its source cannot be read ({exc}); define it in a .py file") from None
    tree = ast.parse(source)
    node = tree.body[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise _refuse(function.__name__, "its source is not a `def` statement")
    lines = source.splitlines(keepends=True)
    return node, "".join(lines[node.lineno - 1 : node.end_lineno])


def _globals_read(code: CodeType) -> set[str]:
    """Global names the code (and the functions and comprehensions inside it) reads or writes."""
    instructions = list(dis.get_instructions(code))
    # STORE_NAME binds a name of a class body defined inside the function: reading it back is local
    local = {ins.argval for ins in instructions if ins.opname == "STORE_NAME"}
    names = {ins.argval for ins in instructions if ins.opname in GLOBAL_OPS} - local
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            names |= _globals_read(constant)
    return names


def _names_in_defaults(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names read by default values: they are evaluated where the function is defined, remotely."""
    defaults = [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
    return {n.id for d in defaults for n in ast.walk(d) if isinstance(n, ast.Name)}


def _module_imports(function: Callable[..., Any]) -> dict[str, str]:
    """Each name the function's module binds by an absolute import, with that import as one statement."""
    try:
        filename = inspect.getsourcefile(function) or ""
        tree = ast.parse("".join(linecache.getlines(filename, function.__globals__)))
    except (OSError, TypeError, SyntaxError, ValueError):
        return {}
    found: dict[str, str] = {}
    for statement in _module_statements(tree.body):
        if isinstance(statement, ast.ImportFrom) and statement.level:
            continue  # a relative import names a package the sandbox does not have
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                if alias.name == "*":
                    continue
                bound = (alias.asname or alias.name).split(".")[0]
                single = (
                    ast.Import(names=[alias])
                    if isinstance(statement, ast.Import)
                    else ast.ImportFrom(module=statement.module, names=[alias], level=0)
                )
                found.setdefault(bound, ast.unparse(single))
    return found


def _module_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import time: the module's, and those in its if/try/with blocks (not in defs)."""
    for statement in body:
        yield statement
        if isinstance(statement, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(statement, block, []):
                    yield from _module_statements(child.body if isinstance(child, ast.ExceptHandler) else [child])
