"""An answer that delegates to gankit's own reference implementation counts as not done.

The student copy of gankit keeps its reference models (the notebooks train with them), so
``from gankit.models.dcgan import discriminator_loss`` in the cell that asks for
``discriminator_loss`` would pass every test. Nothing can hide the kit; the grader detects it.

The *graded names* of a notebook are the functions and classes defined at the top level of its
solution cells (nbgrader ``solution: true``), read from the release stubs nbgrader keeps in the
gradebook, so a student who deleted a ``def`` cannot shrink the list. Every student-editable code
cell (not the instructor's locked cells, not the test cells nbgrader restores) is parsed with
``ast`` and flagged when it

- imports a graded name from a gankit module (``from gankit.models.dcgan import discriminator_loss``,
  also ``... import d_loss as discriminator_loss``: a graded name rebound to a gankit object),
- reaches a graded name as an attribute of a gankit module, however that module was bound
  (``import gankit.models.dcgan as d`` + ``d.generator_block``, ``from gankit.models import dcgan``
  + ``dcgan.discriminator_loss(...)``, ``gankit.models.dcgan.train_step(...)``,
  ``importlib.import_module("gankit.models.dcgan")`` or ``__import__``, ``getattr(module,
  "discriminator_loss")`` with the name as a constant string), through any chain of ``as`` names
  and plain assignments (``m = dcgan``),
- assigns to a graded name an expression that uses anything from gankit
  (``discriminator_loss = dcgan.d_loss``),
- star-imports a gankit module (``from gankit.models.dcgan import *``), which may bind graded names.

Module bindings are followed through the whole notebook, including the locked cells (the setup
cell's ``import gankit`` makes ``gankit.models.dcgan.train_step`` a reference use in a student cell).

What a flagged cell becomes (``FlagReferenceAnswers``, before execution, and
``NoteReferenceAnswers``, after it):

- a solution cell is run as its release stub, so the tests that use it fail as for an answer not
  written; afterwards the student's source is put back (the feedback shows what they wrote) with a
  ``ReferenceImplementation`` error output that says why;
- any other student cell (one the student added, say, holding only the import) is not run at all:
  removing only the offending statement could leave half of a statement behind, and running the
  rest would still bind the graded name from gankit for every later cell. It gets the same error
  output; other code the student put in that cell is lost to grading, and the note says so.

Limits (static analysis cannot see everything; the README says the same): code built at run time
is not followed: ``exec``/``eval`` of a computed string, ``getattr`` with a computed name,
``importlib.import_module`` of a computed module name, ``sys.modules[...]`` lookups,
``globals()[...] = ...``, a module the student writes to disk and imports, pickled functions, or
copying the reference's source text by hand. Those remain a matter for the TA reading the code.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, List, Unicode

KIT = "gankit"
ENAME = "ReferenceImplementation"
NOTE_KEY = "gankit_reference"       # cell metadata carrying the note from before to after execution
ORIGINAL_KEY = "gankit_reference_source"
IMPORTER = "<import_module>"        # a name bound to importlib.import_module, in the scanner's bindings


def _is_kit(module: str | None) -> bool:
    return module is not None and (module == KIT or module.startswith(KIT + "."))


@dataclass(frozen=True)
class Finding:
    """One use of the kit's reference: ``origin`` is the gankit path, ``name`` the graded name."""

    name: str
    origin: str
    line: int

    def message(self) -> str:
        if self.name == "?":
            return (f"this cell uses {self.origin}, so whether it calls the kit's own reference of a function "
                    "you are asked to write cannot be checked, and it counts as not done")
        if self.name == "*":
            return (f"this cell star-imports {self.origin}, which may bind the kit's own reference of the "
                    "functions you are asked to write, so it counts as not done")
        return (f"this answer uses {self.origin}, the kit's own reference of the function you are asked "
                f"to write ({self.name}), so it counts as not done")


class _Scanner(ast.NodeVisitor):
    """Walk one cell in source order; ``modules`` (name -> gankit path) is shared by all cells."""

    def __init__(self, graded: set[str], modules: dict[str, str]):
        self.graded = graded
        self.modules = modules
        self.findings: list[Finding] = []

    def _flag(self, name: str, origin: str, node: ast.AST) -> None:
        finding = Finding(name, origin, getattr(node, "lineno", 0))
        if finding not in self.findings:
            self.findings.append(finding)

    def _bind(self, name: str, path: str | None) -> None:
        if path is None:
            self.modules.pop(name, None)      # rebound to something else: no longer the kit
        else:
            self.modules[name] = path

    def kit_path(self, node: ast.AST) -> str | None:
        """The gankit path an expression evaluates to, when that can be seen statically."""
        if isinstance(node, ast.Name):
            path = self.modules.get(node.id)
            return None if path == IMPORTER else path
        if isinstance(node, ast.Attribute):
            base = self.kit_path(node.value)
            return None if base is None else f"{base}.{node.attr}"
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if isinstance(func, ast.Name) and self.modules.get(func.id) == IMPORTER:
                fname = "import_module"     # from importlib import import_module as im
            first = node.args[0] if node.args else None
            text = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
            if fname == "import_module" and _is_kit(text):
                return text
            if fname == "__import__" and _is_kit(text):
                fromlist = node.args[3] if len(node.args) > 3 else next(
                    (k.value for k in node.keywords if k.arg == "fromlist"), None)
                has_fromlist = isinstance(fromlist, (ast.List, ast.Tuple)) and fromlist.elts
                return text if has_fromlist else KIT
            if fname == "getattr" and len(node.args) >= 2:
                base = self.kit_path(node.args[0])
                attr = node.args[1]
                if base is not None and isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                    return f"{base}.{attr.value}"
        return None

    def _uses_kit(self, node: ast.AST) -> str | None:
        for sub in ast.walk(node):
            path = self.kit_path(sub)
            if path is not None:
                return path
        return None

    # -- bindings
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _is_kit(alias.name):
                if alias.asname:
                    self._bind(alias.asname, alias.name)
                else:
                    self._bind(alias.name.split(".")[0], KIT)
            else:
                self._bind(alias.asname or alias.name.split(".")[0], None)
            bound = alias.asname or alias.name.split(".")[0]
            if bound in self.graded and _is_kit(alias.name):
                self._flag(bound, alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        kit = node.level == 0 and _is_kit(node.module)
        for alias in node.names:
            if alias.name == "*":
                if kit:
                    self._flag("*", node.module, node)
                continue
            bound = alias.asname or alias.name
            path = f"{node.module}.{alias.name}" if kit else None
            if kit and (alias.name in self.graded or bound in self.graded):
                self._flag(alias.name if alias.name in self.graded else bound, path, node)
            self._bind(bound, path)
            if node.module == "importlib" and alias.name == "import_module":
                self.modules[bound] = IMPORTER

    def _assign(self, targets: list[ast.AST], value: ast.AST | None) -> None:
        path = None if value is None else self.kit_path(value)
        used = None if value is None else self._uses_kit(value)
        for target in targets:
            if isinstance(target, ast.Name):
                if target.id in self.graded and used is not None:
                    self._flag(target.id, used, target)
                self._bind(target.id, path)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        targets = []
        for target in node.targets:
            targets += target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
        self._assign(targets, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self._assign([node.target], node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._assign([node.target], node.value)

    # -- uses
    def visit_Attribute(self, node: ast.Attribute) -> None:
        path = self.kit_path(node)
        if path is not None and node.attr in self.graded:
            self._flag(node.attr, path, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        path = self.kit_path(node)
        if path is not None and path.rsplit(".", 1)[-1] in self.graded:
            self._flag(path.rsplit(".", 1)[-1], path, node)
        self.generic_visit(node)


def graded_names(sources: list[str]) -> set[str]:
    """Functions and classes defined at the top level of these (solution cell) sources."""
    names = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        names |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return names


def is_student_cell(cell: NotebookNode) -> bool:
    """A cell the student may edit: not locked, and not a test cell (nbgrader restores both)."""
    if cell.cell_type != "code":
        return False
    return not (utils.is_locked(cell) or (utils.is_grade(cell) and not utils.is_solution(cell)))


def scan_notebook(nb: NotebookNode, graded: set[str], instructor_ids: set[str] | None = None) -> dict[int, list[Finding]]:
    """{cell index: findings} for the student-editable code cells that use the kit's reference.

    ``instructor_ids``: grade_ids of the instructor's locked and test cells, from the gradebook.
    Given, a cell counts as the instructor's only when its grade_id is one of them, whatever its
    metadata claims (a student can mark a new cell ``locked``); without it, the metadata decides.
    """
    modules: dict[str, str] = {}
    found: dict[int, list[Finding]] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        # IPython magics and shell escapes are not Python: drop those lines, keep the rest.
        source = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in cell.source.splitlines())
        scanner = _Scanner(graded, modules)
        try:
            scanner.visit(ast.parse(source))
        except (SyntaxError, ValueError):
            continue    # the kernel reports it; a cell that does not compile binds nothing
        except (RecursionError, MemoryError):
            # Nesting too deep to analyse: no answer needs it, so a cell that also names the kit is
            # taken as hiding a use of it rather than waved through.
            if KIT in source:
                scanner.findings.append(Finding("?", f"{KIT} (in code nested too deeply to check)", 0))
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        student = is_student_cell(cell) if instructor_ids is None else grade_id not in instructor_ids
        if scanner.findings and student:
            found[index] = scanner.findings
    return found


def _error(message: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ENAME, evalue=message,
                        traceback=[f"\x1b[0;31m{ENAME}\x1b[0m: {message}"])


class FlagReferenceAnswers(NbGraderPreprocessor):
    """Before execution: a student cell that uses gankit's reference of a graded name is neutralised.

    A solution cell runs as its release stub; another student cell does not run. The reason is kept
    in the cell's metadata for ``NoteReferenceAnswers``. See the module docstring for what is caught.
    """

    enabled = Bool(True, help="Detect answers that delegate to gankit's reference implementation").tag(config=True)
    extra_graded_names = List(Unicode(), help="Names treated as graded besides those the solution cells "
                              "define").tag(config=True)

    def _from_gradebook(self, resources) -> tuple[dict[str, str], set[str] | None]:
        """({grade_id: release source} of the solution code cells, grade_ids of the instructor's
        locked and test cells), from the gradebook; ({}, None) without one."""
        from nbgrader.api import Gradebook, MissingEntry

        info = resources.get("nbgrader", {})
        if not info.get("db_url"):
            return {}, None
        try:
            with Gradebook(info["db_url"]) as gb:
                notebook = gb.find_notebook(info["notebook"], info["assignment"])
                solutions = {c.name for c in notebook.solution_cells}
                tests = {c.name for c in notebook.grade_cells} - solutions
                stubs = {c.name: c.source or "" for c in notebook.source_cells
                         if c.name in solutions and c.cell_type == "code"}
                return stubs, tests | {c.name for c in notebook.source_cells if c.locked}
        except MissingEntry:
            return {}, None

    def preprocess(self, nb, resources):
        if not self.enabled:
            return nb, resources
        stubs, instructor_ids = self._from_gradebook(resources)
        if stubs:
            graded = graded_names(list(stubs.values()))
        else:   # no gradebook (a notebook graded outside a course): the submission's own solution cells
            graded = graded_names([c.source for c in nb.cells if c.cell_type == "code" and utils.is_solution(c)])
        graded |= set(self.extra_graded_names)
        if not graded:
            return nb, resources
        for index, findings in scan_notebook(nb, graded, instructor_ids).items():
            cell = nb.cells[index]
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            note = "; ".join(f.message() for f in findings)
            cell.metadata[ORIGINAL_KEY] = cell.source
            if utils.is_solution(cell) and grade_id in stubs:
                cell.source = stubs[grade_id]
                note += ". It was graded as the unanswered stub."
            else:
                cell.source = "# not run by the grader: it uses gankit's reference implementation of a graded function\n"
                note += ". The grader did not run this cell (other code in it was not run either)."
            cell.metadata[NOTE_KEY] = note
            self.log.warning("cell %d uses gankit's reference: %s", index, note)
        return nb, resources


class NoteReferenceAnswers(NbGraderPreprocessor):
    """After execution: put the student's source back and say, as an error output, why it was not graded."""

    def preprocess_cell(self, cell, resources, cell_index):
        note = cell.metadata.pop(NOTE_KEY, None)
        original = cell.metadata.pop(ORIGINAL_KEY, None)
        if note is not None:
            if original is not None:
                cell.source = original
            cell.outputs = [_error(note)] + list(cell.get("outputs", []))
        return cell, resources
