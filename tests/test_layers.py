"""Dependencies point down only: a lower layer never imports a higher one (style.md, Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Higher number = higher layer.  A module may import from its own layer or below.
LAYERS = {
    "cli": 5,
    "octostore.api": 4,
    "octostore.coordinator": 3, "octostore.worker": 3, "octostore.launch": 3, "octostore.config_file": 3,
    "octostore.stores": 2, "octostore.protocol": 2, "octostore.job": 2, "octostore.progress": 2, "octostore.jobinfo": 2,
    "octostore.blocks": 1, "octostore.keys": 1, "octostore.config": 1, "octostore.settings": 1, "octostore.errors": 1,
    "octostore.home": 1, "octostore.failpoints": 1, "octostore": 1,
}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in LAYERS:
            return LAYERS[name]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(target)
            found += [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in LAYERS]
    return [name for name in found if name.split(".")[0] in ("octostore", "cli")]


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for path in sorted([*ROOT.glob("octostore/**/*.py"), *ROOT.glob("cli/**/*.py")]):
        module = module_name(path)
        for target in imports_of(path, module):
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_storage_and_protocol_never_import_coordinator_worker_launch_or_cli() -> None:
    for folder in ("stores", "protocol"):
        for path in (ROOT / "octostore" / folder).glob("*.py"):
            for target in imports_of(path, module_name(path)):
                assert not target.startswith(("octostore.coordinator", "octostore.worker", "octostore.launch", "cli")), (
                    f"{path.name} imports {target}"
                )
