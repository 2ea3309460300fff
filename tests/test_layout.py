"""The house: library modules below, scripts above. The library imports nothing above it, no
script imports another script, and the library's imports have no cycles."""
import ast
import glob
import os

from conftest import ROOT

LIBRARY = {'routes', 'model', 'engine', 'metrics', 'draw', 'lights', 'trainer', 'configurator'}
SCRIPTS = {'prepare', 'train_gen', 'train_grade', 'sample', 'grade', 'evaluate', 'bench', 'serve'}


def project_imports(path):
    """The project modules a file imports (top-level modules of this repo only)."""
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        if isinstance(node, ast.Import):
            names |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names & (LIBRARY | SCRIPTS | {'config'})


def graph():
    files = {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, '*.py'))}
    return {name: project_imports(path) for name, path in files.items()}


def test_every_file_has_a_floor():
    assert set(graph()) <= LIBRARY | SCRIPTS, set(graph()) - LIBRARY - SCRIPTS
    assert LIBRARY <= set(graph())


def test_library_imports_only_library_and_scripts_import_no_script():
    for name, imports in graph().items():
        if name in LIBRARY:
            assert imports <= LIBRARY, f'{name}.py imports {imports - LIBRARY}'
        else:
            assert not imports & SCRIPTS, f'{name}.py imports the script(s) {imports & SCRIPTS}'


def test_library_has_no_cycles():
    edges = {name: imports & LIBRARY for name, imports in graph().items() if name in LIBRARY}
    done, visiting = set(), []

    def visit(name):
        assert name not in visiting, f"import cycle: {' -> '.join(visiting + [name])}"
        if name in done:
            return
        visiting.append(name)
        for other in edges[name]:
            visit(other)
        visiting.pop()
        done.add(name)
    for name in edges:
        visit(name)
    assert done == LIBRARY
