"""libtv-sessions.json, the read model of CONTRACT section 3: kept by the store, whoever appends."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import libtv_fsm

PACKAGE = Path(libtv_fsm.__file__).resolve().parent
LAYERED = ("snapshots", "readmodel", "legacy", "projections")


def _imports(module: str) -> Set[str]:
    """Every libtv_fsm module ``module`` imports, at the top or inside a function."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("libtv_fsm"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "libtv_fsm" and len(parts) > 1:
                inner = ".".join(parts[1:])
                while inner and not ((PACKAGE / (inner.replace(".", "/") + ".py")).exists()
                                     or (PACKAGE / inner.replace(".", "/") / "__init__.py").exists()):
                    inner = inner.rpartition(".")[0]
                if inner and inner != module:
                    found.add(inner)
    return found


def test_the_read_model_modules_import_each_other_in_one_direction_only():
    graph: Dict[str, Set[str]] = {}
    todo: List[str] = [m for m in LAYERED if (PACKAGE / f"{m}.py").exists()]
    while todo:
        module = todo.pop()
        if module in graph:
            continue
        graph[module] = _imports(module)
        todo.extend(graph[module])

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            here = stack.pop()
            for nxt in graph.get(here, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    circles = [m for m in LAYERED if (PACKAGE / f"{m}.py").exists() and reaches(m, m)]
    assert circles == [], f"import circle through {circles}: {({m: sorted(graph[m]) for m in circles})}"
