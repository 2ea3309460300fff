"""configurator.py: config files and --key=value overrides, with clear errors."""
import ast
import glob
import os

import pytest

from configurator import configure
from conftest import ROOT


def test_overrides_and_types(tmp_path, capsys):
    conf = tmp_path / 'c.py'
    conf.write_text("batch_size = 8\nlr = 1\nmax_iters = 3\n_private = 4\n")  # max_iters: another script's
    config = dict(batch_size=32, lr=3e-4, compile=True, name='x', nothing=None, angles=[40])
    configure(config, [str(conf), '--compile=False', '--name=kilter v2', '--nothing=5', '--angles=[30,40]'])
    assert config == dict(batch_size=8, lr=1.0, compile=False, name='kilter v2', nothing=5, angles=[30, 40])
    configure(config, ['--compile', '--name=20'])
    assert config['compile'] is True and config['name'] == '20'
    assert isinstance(config['lr'], float)


@pytest.mark.parametrize('args, message', [
    (['--batch_sise=8'], "unknown config key 'batch_sise'"),
    (['--batch_size=eight'], 'batch_size must be int, got str'),
    (['--compile=1'], 'compile must be bool, got int'),
    (['--batch_size'], 'expected --key=value'),
    (['config/nope.py'], 'config file config/nope.py not found'),
])
def test_bad_overrides_stop_with_one_line(args, message):
    config = dict(batch_size=32, compile=True)
    with pytest.raises(SystemExit) as e:
        configure(config, args)
    assert message in str(e.value) and '\n' not in str(e.value)


def script_settings(path):
    """Module-level names a script assigns: its config keys."""
    tree = ast.parse(open(path).read())
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def test_every_config_key_is_used_by_some_script():
    """Scripts skip config-file keys they do not use, so a typo in config/ would go unnoticed
    there; this catches it."""
    known = set()
    for script in glob.glob(os.path.join(ROOT, '*.py')):
        known |= script_settings(script)
    for conf in glob.glob(os.path.join(ROOT, 'config', '*.py')):
        keys = {k for k in script_settings(conf) if not k.startswith('_')}
        assert keys and keys <= known, f'{conf}: unknown keys {sorted(keys - known)}'
