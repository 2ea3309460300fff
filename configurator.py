"""
Config overrides in the nanoGPT manner. A script keeps its config as module-level globals and calls

    configure(globals())

which reads sys.argv in order: `config/<name>.py` files (plain Python that sets variables) and
`--key=value` overrides (a bare `--flag` sets a boolean to True). Values are parsed as Python
literals where they can be (`--lr=3e-4`, `--compile=False`, `--angles=[30,40]`), else kept as
strings (`--db=~/kilter.db`).

A config file serves every script (prepare, train_gen, train_grade, sample, evaluate, ...), so a
key this script does not use is skipped here, but a key that no script uses (a typo such as
`max_itres`) stops it, as does an unknown --key, a value whose type differs from the default, or
a config file that is not valid Python: each with one line, `error: ...`.

configure() also makes the script print any routes.InputError that reaches the top as one line,
`error: <message>`, and exit with status 1, instead of a traceback: a mistake in what the user
gave is theirs to fix, and the message says how. Any other exception is a bug in boardgpt and
keeps its traceback.
"""

import ast
import difflib
import glob
import os
import sys
from ast import literal_eval

from routes import InputError

HERE = os.path.dirname(os.path.abspath(__file__))


def configure(config, argv=None):
    _one_line_errors()
    argv = sys.argv[1:] if argv is None else argv
    known = {k for k, v in config.items() if _is_setting(k, v)}
    for arg in argv:
        if not arg.startswith('--'):
            for key, value in _read_config_file(arg, known).items():
                if key in known and _is_setting(key, value):
                    config[key] = _checked(key, value, config[key], arg)
            continue
        key, sep, text = arg[2:].partition('=')
        if not sep and isinstance(config.get(key), bool):
            sep, text = '=', 'True'  # a bare --flag switches a boolean on
        if not sep:
            sys.exit(f"error: expected --key=value, got {arg}")
        if key not in known:
            script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'this script'
            sys.exit(f"error: unknown config key {key!r} for {script}{_did_you_mean(key, known)}")
        try:
            value = literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = text
        if isinstance(config[key], str) and not isinstance(value, str):
            value = text  # a text setting takes the text as typed: --grade=20, --name=2024
        config[key] = _checked(key, value, config[key], f'--{key}')
        print(f"config: {key} = {config[key]!r}", file=sys.stderr)


def _read_config_file(path, known):
    """A config file's settings, refusing keys no script knows and files that do not run."""
    if not os.path.isfile(path):
        sys.exit(f"error: config file {path} not found (expected e.g. config/kilter.py, or --key=value)")
    print(f"config: {path}", file=sys.stderr)
    try:
        with open(path, encoding='utf-8') as f:
            code = compile(f.read(), path, 'exec')
        values = {}
        exec(code, values)  # a config file is the user's own Python, as in nanoGPT
    except SyntaxError as e:
        sys.exit(f"error: config file {path}, line {e.lineno}: {e.msg}")
    except (UnicodeDecodeError, ValueError) as e:
        sys.exit(f"error: config file {path} is not readable Python text ({e})")
    except Exception as e:  # noqa: BLE001  (whatever the file's own code raised: report it, one line)
        sys.exit(f"error: config file {path} failed: {type(e).__name__}: {e}")
    settings = {k: v for k, v in values.items() if _is_setting(k, v) and k != '__builtins__'}
    everyone = script_settings() | known
    for key in settings:
        if key not in everyone:
            sys.exit(f"error: config file {path} sets {key!r}, which no boardgpt script reads{_did_you_mean(key, everyone)}")
    return settings


def script_settings():
    """Every config key some script reads: the settings of each top-level script that calls
    configure()."""
    keys = set()
    for path in glob.glob(os.path.join(HERE, '*.py')):
        keys |= set(script_defaults(path) or ())
    return keys


def script_defaults(path):
    """A script's settings without running it: the module-level names it assigns before its
    configure(globals()) call, each with its default where that is a literal (None where it is
    computed, which configure() then takes any value for); None if the script never calls
    configure(). configure(script_defaults(path), argv) checks a command line as the script would."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    defaults = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                getattr(node.value.func, 'id', None) == 'configure':
            return defaults
        if isinstance(node, ast.Assign):
            try:
                value = literal_eval(node.value)
            except (ValueError, TypeError):  # computed, not a literal
                value = None
            defaults.update((t.id, value) for t in node.targets if isinstance(t, ast.Name))
    return None


def _did_you_mean(key, known):
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ''


def _one_line_errors():
    def hook(kind, value, tb):  # the interpreter then exits with status 1, as after any uncaught error
        if issubclass(kind, InputError):
            print(f"error: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)
    previous = sys.excepthook if sys.excepthook is not None else sys.__excepthook__
    if getattr(previous, 'boardgpt', False):
        return
    hook.boardgpt = True
    sys.excepthook = hook


def _is_setting(key, value):
    return not key.startswith('_') and isinstance(value, (bool, int, float, str, list, tuple, dict, type(None)))


def _checked(key, value, default, source):
    """The value if it fits the default's type (ints fit floats, anything fits a None default)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        sys.exit(f"error: {source}: {key} must be {type(default).__name__}, "
                 f"got {type(value).__name__} {value!r}")
    return value
