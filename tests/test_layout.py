"""The shape of the code and of the pipeline: dvc.yaml and each method's pipeline file (from
pipelines/method.yaml) list exactly the code each stage runs and the files lure.paths says it
reads and writes; no import cycles; the library never imports a stage.

A stage's code is the static closure of its module's imports within lure/ and stages/, imports
inside functions included (a missing dependency would let DVC serve stale results), imports only
for type checkers excluded. Importing a module runs the __init__ of the packages that hold it; a
package that loads every module of its folder (lure.methods) makes a stage that imports it depend
on the folder, which the pipeline files list as one entry (lure/methods)."""

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from lure import paths
from lure.pipelines import METHOD_TEMPLATE
from tests.conftest import ROOT, run_stage

LOCAL = ("lure", "stages")


def module_file(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def runtime_nodes(tree: ast.AST):
    """Every node of the file but those under `if TYPE_CHECKING:`, which never run."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *runtime_nodes(child)])
            continue
        yield node
        yield from runtime_nodes(node)


def loads_its_folder(module: str) -> bool:
    """A package whose __init__ imports every module beside it (pkgutil.iter_modules(__path__))."""
    file = module_file(module)
    return file is not None and file.name == "__init__.py" and "iter_modules(__path__)" in file.read_text()


@cache
def imports_of(module: str) -> frozenset[str]:
    """The local modules that `module` names in its import statements, anywhere in its file (a
    package that loads its folder names every module in it)."""
    file = module_file(module)
    found: set[str] = set()
    for node in runtime_nodes(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{file}: a relative import; the project imports absolutely")
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from lure import paths` imports lure.paths; `from lure.config import X` imports lure.config
            names = [f"{node.module}.{alias.name}" if module_file(f"{node.module}.{alias.name}") else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in LOCAL and module_file(name))
    if loads_its_folder(module):
        found.update(f"{module}.{f.stem}" for f in file.parent.glob("*.py") if f.name != "__init__.py")
    return frozenset(found - {module})


def runs_on_import(module: str, imported: str) -> list[str]:
    """What `module` importing `imported` runs: it and the packages that hold it, but those that hold
    `module` too (already running when `module` runs)."""
    own = set(with_parents(module))
    return [m for m in with_parents(imported) if m not in own or m == imported]


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
    """Module files as dvc.yaml lists them: a package that loads its folder as the folder."""
    folders = {m for m in modules if loads_its_folder(m)}
    deps = set()
    for module in modules:
        folder = next((f for f in folders if module == f or module.startswith(f + ".")), None)
        deps.add(folder.replace(".", "/") if folder else str(module_file(module).relative_to(ROOT)))
    return deps


def local_modules() -> list[str]:
    return sorted(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for package in LOCAL for f in (ROOT / package).rglob("*.py"))


@pytest.fixture(scope="module")
def rendered_stages(tmp_path_factory, params_dict_module):
    """Every stage of dvc.yaml and of the methods' pipeline files (`lure pipelines`) as DVC lays
    them out for 2 methods, 2 seeds and 3 chunks: name -> (cmd, deps, outs)."""
    root = tmp_path_factory.mktemp("layout")
    params = params_dict_module
    params["methods"] = {"warm": {}, "lure": {}}
    params["seeds"] = [0, 3]
    params["chunks"] = [{"k": 2, "prev": 1}, {"k": 3, "prev": 2}]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    (root / METHOD_TEMPLATE).parent.mkdir()
    (root / METHOD_TEMPLATE).write_text((ROOT / METHOD_TEMPLATE).read_text())
    assert run_stage("lure.cli", "pipelines", cwd=root).returncode == 0
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
    assert len(rendered_stages) == paths.stage_count(methods=2, seeds=2, later_chunks=2)  # what `lure check` says
    assert {"learn@3", "pipelines/lure/dvc.yaml:branch@3", "pipelines/lure/dvc.yaml:relearn@3-chunk1",
            "pipelines/warm/dvc.yaml:evaluate@0"} <= set(rendered_stages)
    for name, (cmd, deps, _) in rendered_stages.items():
        kind, _ = stage_item(name, cmd)
        code = {d for d in deps if d.startswith(("lure/", "stages/"))}
        expected = as_dvc_deps(closure(f"stages.{kind}"))
        assert code == expected, (f"{name}: its pipeline file lacks {sorted(expected - code)}, "
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

    acyclic: set[str] = set()  # modules from which no cycle is reachable

    def cycle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for imported in imports_of(module):
            for runs in runs_on_import(module, imported):
                if runs in path:
                    return path[path.index(runs):] + (runs,)
                found = None if runs in acyclic else cycle_from(runs, path + (runs,))
                if found:
                    return found
        acyclic.add(module)
        return None

    for module in library:
        cycle = cycle_from(module, (module,))
        assert cycle is None, " -> ".join(cycle)


def fake_project(tmp_path, monkeypatch, files: dict[str, str]) -> None:
    """Point the analysis at a project of these files (lure/...)."""
    for name, text in {"lure/__init__.py": "", **files}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    imports_of.cache_clear()


@pytest.mark.parametrize("files, cycle", [
    ({"lure/a.py": "def f():\n    from lure.b import g\n", "lure/b.py": "from lure import a\n"},
     "lure.a -> lure.b -> lure.a"),
    # importing lure.pkg.leaf runs lure/pkg/__init__.py, which imports lure.d back
    ({"lure/d.py": "from lure.pkg.leaf import x\n", "lure/pkg/__init__.py": "import lure.d\n",
      "lure/pkg/leaf.py": "x = 1\n"}, "lure.d -> lure.pkg -> lure.d"),
])
def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch, files, cycle):
    fake_project(tmp_path, monkeypatch, files)
    try:
        with pytest.raises(AssertionError, match=re.escape(cycle)):
            test_no_import_cycles_and_no_library_module_imports_a_stage()
    finally:
        imports_of.cache_clear()


def test_the_analysis_skips_type_checking_imports_and_refuses_relative_ones(tmp_path, monkeypatch):
    fake_project(tmp_path, monkeypatch, {
        "lure/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import lure.b\nelse:\n"
                     "    import lure.c\n",
        "lure/b.py": "", "lure/c.py": "", "lure/r.py": "from .c import x\n"})
    try:
        assert imports_of("lure.a") == {"lure.c"}
        with pytest.raises(AssertionError, match="relative import"):
            imports_of("lure.r")
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
