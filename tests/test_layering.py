"""Dependencies point down (docs/design-decisions.md): every import of a package module, read with ast,
against the table of what each part may import.

    main, cli, demo, bench, stages, finetune, report  ->  train, score  ->  models, labels,
    store, pipeline, convert, datasets, curate  ->  video, prompt, config, sharding, runtime,
    progress, tables, workdir, multihost, hub

Inside a layer only the edges listed here: convert reads models' configs, the
pipeline joins pair tables (labels) with the store, prepare (store) runs SlowFast
(models), and so on. One module may reach further than its part (MODULE_EXTRA):
score.student_source reads a training checkpoint (train.checkpoint), and no module of
train imports it back. Imports inside functions count like any other. Inside a
subpackage, modules import the sibling that holds a name, never the package's face (its
__init__.py), which only re-exports.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "w2s_vqa")

BASE = {"video", "prompt", "config", "sharding", "runtime", "progress", "tables", "workdir", "multihost", "hub"}
MIDDLE = {"models", "labels", "store", "pipeline", "convert", "datasets", "curate"}
UPPER = {"train", "score"}
# part -> the parts it may import (besides itself). A part is a top-level module or subpackage.
ALLOWED = {
    "runtime": set(),
    "workdir": set(),  # run plumbing (atomic writes, digests, one run per directory): the bottom
    "multihost": set(),  # joining processes, barriers, broadcasts, gathers: JAX alone
    "hub": {"workdir"},  # Hugging Face hub ids and bucket directories -> local directories
    "progress": set(),
    "tables": set(),  # reading user-made text tables
    "prompt": set(),
    "config": set(),  # free of JAX: the PyTorch-only install reads its defaults
    "sharding": {"config"},  # the default rules table is a config default
    "video": set(),
    "models": BASE,  # never train/ or convert/
    "store": BASE | {"models"},  # prepare runs the frozen SlowFast motion network (models.slowfast)
    "labels": BASE,
    "pipeline": BASE | {"labels", "store"},
    "convert": BASE | {"models", "store"},  # an export records store.settings (only that module)
    "datasets": BASE | {"labels", "store"},
    "curate": BASE | {"store"},  # pools are read as prepare reads them (folders, manifests, stores)
    "train": BASE | MIDDLE | {"score"},  # training validates through score.predict
    "score": BASE | MIDDLE,
    "stages": BASE | MIDDLE | UPPER,
    "finetune": BASE | MIDDLE | UPPER,  # fine-tuning trains (train) and scores (score); beside stages, not in it
    "demo": BASE | MIDDLE | UPPER | {"stages", "report"},  # the demo runs `stages` and writes its report
    # reads runs by their files; frames through the store's reader, the paper's rows from score.evaluate
    "report": BASE | {"store", "score"},
    "bench": BASE | MIDDLE | UPPER,
    "main": BASE | MIDDLE | UPPER | {"demo", "stages", "finetune", "bench", "report"},
    "launch": set(),  # runs where the package is not installed: the standard library only
    "cli": {"runtime", "workdir"},  # reaches w2s_vqa.main through importlib, by verb name; keeps JAX off an idle libtpu
}
# module -> parts it may import besides its part's row. score.student_source loads a student
# for scoring from a training checkpoint (train.checkpoint.load_checkpoint_student); train
# imports score (score.predict) but never this module (test_the_extra_edges_make_no_cycle).
MODULE_EXTRA = {
    "w2s_vqa.score.student_source": {"train"},
}


def part_of(module: str) -> str:
    """'w2s_vqa.models.config' -> 'models'; 'w2s_vqa' -> ''."""
    return module.split(".")[1] if module.count(".") else ""


def package_imports(path: str, module: str) -> set[str]:
    """Every w2s_vqa module `path` imports (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . / .. import: relative to the module's package
                package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            # `from w2s_vqa import video` imports the module w2s_vqa.video.
            found.update(f"{base}.{a.name}" if base == "w2s_vqa" else base for a in node.names)
    return {m for m in found if m == "w2s_vqa" or m.startswith("w2s_vqa.")}


def modules():
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[: -len(".py")].replace(os.sep, ".")
                yield path, rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def test_every_part_is_in_the_table():
    parts = {part_of(module) for _, module in modules()} - {""}
    assert parts <= set(ALLOWED), f"add {sorted(parts - set(ALLOWED))} to ALLOWED (and to docs/design-decisions.md's layers)"


@pytest.mark.parametrize("path,module", sorted(modules()), ids=lambda v: v if "." in v and "/" not in v else "")
def test_imports_point_down(path, module):
    part = part_of(module)
    if not part:
        return
    allowed = ALLOWED.get(part, set()) | MODULE_EXTRA.get(module, set())
    wrong = sorted(m for m in package_imports(path, module)
                   if part_of(m) and part_of(m) != part and part_of(m) not in allowed)
    assert not wrong, f"{module} ({part}) imports {wrong}: not allowed by the layering"


def test_the_extra_edges_make_no_cycle():
    found = {module for _, module in modules()}
    assert set(MODULE_EXTRA) <= found, f"MODULE_EXTRA names modules that are gone: {sorted(set(MODULE_EXTRA) - found)}"
    for path, module in modules():
        back = sorted(m for m in package_imports(path, module) if m in MODULE_EXTRA
                      and part_of(module) in MODULE_EXTRA[m])
        assert not back, f"{module} imports {back}, which imports its part {part_of(module)}: a cycle"


def face_imports(path: str, module: str) -> set[str]:
    """The package faces (w2s_vqa.X for a folder X with __init__.py) that `path` imports a name
    from, or imports as a whole; `from w2s_vqa.video import distort` names the submodule, not
    the face."""
    found = set()
    package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - (node.level - 1)] + ([base] if base else []))
            folder = os.path.join(os.path.dirname(PACKAGE), *base.split("."))
            if base == "w2s_vqa":  # `from w2s_vqa import video` imports the face of w2s_vqa.video
                found.update(f"w2s_vqa.{a.name}" for a in node.names
                             if os.path.isfile(os.path.join(PACKAGE, a.name, "__init__.py")))
                continue
            if not base.startswith("w2s_vqa.") or not os.path.isfile(os.path.join(folder, "__init__.py")):
                continue
            submodule = [os.path.isfile(os.path.join(folder, f"{a.name}.py"))
                         or os.path.isdir(os.path.join(folder, a.name)) for a in node.names]
            if not all(submodule):
                found.add(base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names
                         if os.path.isfile(os.path.join(os.path.dirname(PACKAGE), *a.name.split("."), "__init__.py")))
    return found


@pytest.mark.parametrize("path,module", sorted(modules()), ids=lambda v: v if "." in v and "/" not in v else "")
def test_modules_inside_a_package_import_their_siblings_not_its_face(path, module):
    """A package's __init__.py re-exports its modules for the callers outside; a module inside
    the package imports the sibling that holds a name, so the face can import them all."""
    if path.endswith("__init__.py") or module.count(".") < 2:
        return
    own_face = module.rsplit(".", 1)[0]
    assert own_face not in face_imports(path, module), f"{module} imports from its package's face {own_face}"


# Inside train: the planner's parts (hardware, cost model, the compiler's text) and the
# trainer's guests (signals, fingerprints) sit below the planner and the loop: module ->
# the train modules it may import.
TRAIN_INSIDE = {
    "w2s_vqa.train.hardware": set(),
    "w2s_vqa.train.hlo_text": set(),
    "w2s_vqa.train.cost_model": {"w2s_vqa.train.hardware"},
    "w2s_vqa.train.signals": set(),
    "w2s_vqa.train.fingerprint": set(),
    "w2s_vqa.train.plan": {"w2s_vqa.train.hardware", "w2s_vqa.train.cost_model", "w2s_vqa.train.hlo_text",
                           "w2s_vqa.train.step"},
}


@pytest.mark.parametrize("module", sorted(TRAIN_INSIDE))
def test_the_planners_and_trainers_parts_point_down(module):
    path = os.path.join(PACKAGE, *module.split(".")[1:]) + ".py"
    inside = {m for m in package_imports(path, module) if m.startswith("w2s_vqa.train.")}
    assert inside <= TRAIN_INSIDE[module], f"{module} imports {sorted(inside - TRAIN_INSIDE[module])}"
