"""
Config overrides in the nanoGPT manner. A script keeps its config as module-level globals and calls

    configure(globals())

which reads sys.argv in order: `config/<name>.py` files (plain Python that sets variables) and
`--key=value` overrides (a bare `--flag` sets a boolean to True). Values are parsed as Python literals where they can be (`--lr=3e-4`,
`--compile=False`, `--angles=[30,40]`), else kept as strings (`--db=~/kilter.db`).

A config file serves every script (prepare, train_gen, train_grade, sample, evaluate), so keys a
script does not use are skipped there; tests/test_config.py checks that every key in config/ is
used by some script. On the command line an unknown key, or a value whose type differs from the
default, stops the script with a one-line error.
"""

import os
import sys
from ast import literal_eval


def configure(config, argv=None):
    argv = sys.argv[1:] if argv is None else argv
    known = {k for k, v in config.items() if _is_setting(k, v)}
    for arg in argv:
        if not arg.startswith('--'):
            if not os.path.isfile(arg):
                sys.exit(f"error: config file {arg} not found")
            print(f"config: {arg}", file=sys.stderr)
            values = {}
            exec(compile(open(arg).read(), arg, 'exec'), values)
            for key, value in values.items():
                if key in known and _is_setting(key, value):
                    config[key] = _checked(key, value, config[key], arg)
            continue
        key, sep, text = arg[2:].partition('=')
        if not sep and isinstance(config.get(key), bool):
            sep, text = '=', 'True'  # a bare --flag switches a boolean on
        if not sep:
            sys.exit(f"error: expected --key=value, got {arg}")
        if key not in known:
            script = os.path.basename(sys.argv[0]) if sys.argv else 'this script'
            sys.exit(f"error: unknown config key {key!r} for {script}")
        try:
            value = literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if isinstance(config[key], str) and not isinstance(value, str):
            value = text  # a text setting takes the text as typed: --grade=20, --name=2024
        config[key] = _checked(key, value, config[key], f'--{key}')
        print(f"config: {key} = {config[key]!r}", file=sys.stderr)


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
