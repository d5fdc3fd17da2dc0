"""The shape of the code and of the pipeline: dvc.yaml lists exactly the code each stage runs and
the files lure.paths says it reads and writes; no import cycles; the library never imports a stage.

A stage's code is the static closure of its module's imports within lure/ and stages/, imports
inside functions included (a missing dependency would let DVC serve stale results). Importing a
package runs its __init__; lure.methods loads every module of its folder, so a stage that
imports it depends on the folder (dvc.yaml lists lure/methods)."""

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from lure import paths
from tests.conftest import ROOT

LOCAL = ("lure", "stages")
LOADS_ITS_FOLDER = {"lure.methods"}  # packages whose __init__ imports every module beside it


def module_file(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def imports_of(module: str) -> frozenset[str]:
    """The local modules that `module` names in its import statements, anywhere in its file (a
    package that loads its folder names every module in it)."""
    file = module_file(module)
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from lure import paths` imports lure.paths; `from lure.config import X` imports lure.config
            names = [f"{node.module}.{alias.name}" if module_file(f"{node.module}.{alias.name}") else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in LOCAL and module_file(name))
    if module in LOADS_ITS_FOLDER:
        found.update(f"{module}.{f.stem}" for f in file.parent.glob("*.py") if f.name != "__init__.py")
    return frozenset(found - {module})


def closure(module: str) -> set[str]:
    """Every local module that running `module` may execute: its imports, theirs, and the packages
    that hold them (importing lure.x runs lure/__init__.py first)."""
    seen, todo = set(), with_parents(module)
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(parent for imported in imports_of(current) for parent in with_parents(imported))
    return seen


def as_dvc_deps(modules: set[str]) -> set[str]:
    """Module files as dvc.yaml lists them: lure/methods as one folder."""
    deps = set()
    for module in modules:
        file = str(module_file(module).relative_to(ROOT))
        folder = next((p.replace(".", "/") for p in LOADS_ITS_FOLDER if module.startswith(p)), None)
        deps.add(folder or file)
    return deps


def local_modules() -> list[str]:
    return sorted(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for package in LOCAL for f in (ROOT / package).rglob("*.py"))


@pytest.fixture(scope="module")
def rendered_stages(tmp_path_factory, params_dict_module):
    """Every stage of dvc.yaml as DVC lays it out for 2 methods, 2 seeds and 3 chunks:
    name -> (cmd, deps, outs)."""
    root = tmp_path_factory.mktemp("layout")
    params = params_dict_module
    params["methods"] = {"warm": {}, "lure": {}}
    params["seeds"] = [0, 3]
    params["chunks"] = [{"k": 2, "prev": 1}, {"k": 3, "prev": 2}]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    script = ("import json; from dvc.repo import Repo; from dvc.dependency.param import ParamsDependency\n"
              "stages = {s.addressing: (s.cmd, [d.def_path for d in s.deps if not isinstance(d, ParamsDependency)],"
              " [o.def_path for o in s.outs]) for s in Repo('.').index.stages}\n"
              "print(json.dumps(stages))")
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True).stdout
    import json

    return json.loads(out)


@pytest.fixture(scope="module")
def params_dict_module() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def stage_item(name: str, cmd: str) -> tuple[str, dict]:
    """The stage kind and its method, seed and chunk, from its command line."""
    kind = re.search(r"-m stages\.(\w+)", cmd).group(1)
    args = cmd.split(f"stages.{kind}", 1)[1].split()
    item = {}
    if "--seed" in args:
        item["seed"] = int(args[args.index("--seed") + 1])
    positional = [a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or args[i - 1] != "--seed")]
    if positional:
        item["method"] = positional[0]
    if len(positional) > 1:
        item["k"] = int(positional[1])
    return kind, item


def test_every_stage_depends_on_exactly_the_code_it_imports(rendered_stages):
    assert len(rendered_stages) == paths.stage_count(2, 2, 2)
    for name, (cmd, deps, _) in rendered_stages.items():
        kind, _ = stage_item(name, cmd)
        code = {d for d in deps if d.startswith(("lure/", "stages/"))}
        expected = as_dvc_deps(closure(f"stages.{kind}"))
        assert code == expected, (f"{name}: dvc.yaml lacks {sorted(expected - code)}, "
                                  f"lists unused {sorted(code - expected)}")


def test_every_stage_reads_and_writes_the_paths_lure_paths_gives(rendered_stages):
    for name, (cmd, deps, outs) in rendered_stages.items():
        kind, item = stage_item(name, cmd)
        data = {d for d in deps if not d.startswith(("lure/", "stages/"))}
        assert data == {str(p) for p in paths.stage_inputs(kind, **item)}, name
        assert set(outs) == {str(p) for p in paths.stage_outputs(kind, **item)}, name


def test_the_closure_follows_imports_inside_functions_and_packages():
    # cli imports lure.methods inside a function; the methods' folder comes with it
    modules = closure("lure.cli")
    assert {"lure", "lure.config", "lure.methods", "lure.methods.redo", "lure.methods.units"} <= modules
    # corrupting the test set runs no training code
    corrupt = closure("stages.corrupt")
    assert "lure.corruptions" in corrupt and not {"lure.train", "lure.methods", "lure.models"} & corrupt


def test_no_import_cycles_and_no_library_module_imports_a_stage():
    library = [m for m in local_modules() if m.startswith("lure")]
    for module in library:
        assert not any(m.startswith("stages") for m in closure(module)), f"{module} imports a stage"

    def cycle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for imported in imports_of(module):
            if imported in path:
                return path[path.index(imported):] + (imported,)
            found = cycle_from(imported, path + (imported,))
            if found:
                return found
        return None

    for module in library:
        assert cycle_from(module, (module,)) is None, " -> ".join(cycle_from(module, (module,)))


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check above on two modules that import each other."""
    (tmp_path / "lure").mkdir()
    (tmp_path / "lure" / "__init__.py").write_text("")
    (tmp_path / "lure" / "a.py").write_text("def f():\n    from lure.b import g\n")
    (tmp_path / "lure" / "b.py").write_text("from lure import a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    imports_of.cache_clear()
    try:
        assert imports_of("lure.a") == {"lure.b"} and imports_of("lure.b") == {"lure.a"}
        with pytest.raises(AssertionError, match="lure.a -> lure.b -> lure.a"):
            test_no_import_cycles_and_no_library_module_imports_a_stage()
    finally:
        imports_of.cache_clear()


def test_stages_are_thin():
    """Each stage parses its arguments, loads params, calls the library and writes its outputs."""
    for stage in (ROOT / "stages").glob("*.py"):
        assert len(stage.read_text().splitlines()) <= 40, stage.name


def test_the_readmes_map_of_the_library_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    named = set(re.findall(r"`(\w+)`", layout))
    modules = {f.stem for f in (ROOT / "lure").glob("*.py") if f.stem != "__init__"}
    building_blocks = {f.stem for f in (ROOT / "lure" / "methods").glob("*.py")
                       if f.stem != "__init__" and not module_defines_a_method(f)}
    assert modules | building_blocks | {"methods"} <= named
    assert named - {"lure"} <= modules | building_blocks | {"methods"}  # no module that is gone


def module_defines_a_method(file: Path) -> bool:
    return re.search(r'^    kind: Literal\["\w+"\]', file.read_text(), re.M) is not None
