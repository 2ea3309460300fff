"""The README tells the truth: every command in its code blocks (and in docs/'s) names a script
and a config file that exist and only keys that script accepts, checked by the configurator
itself (configure() on the script's own defaults, read without running it); every link from the
README or docs/ to a page of ours lands on a file, and on a heading of it that exists."""
import glob
import os
import re
import shlex

import pytest

from configurator import configure, script_defaults
from conftest import ROOT

PAGES = ['README.md'] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs', '*.md')))
STOP = {'>', '>>', '2>', '2>&1', '&', '&&', '|', '||', ';'}  # the shell's: the command ends there


def code_lines(text):
    """(line number, command line) of every line in a fenced code block, continuations joined."""
    fenced, pending = False, ''
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith('```'):
            fenced, pending = not fenced, ''
            continue
        if not fenced:
            continue
        pending += line
        if pending.endswith('\\'):
            pending = pending[:-1] + ' '
            continue
        yield n, pending
        pending = ''


def command(line):
    """A code line -> (script, args) where it runs one of our scripts with python or torchrun, else None."""
    line = line.strip()
    line = line[2:] if line.startswith('$ ') else line  # a shell prompt before pasted output
    words = shlex.split(line, comments=True)
    for i, w in enumerate(words):
        if w in STOP or w.startswith('>'):
            words = words[:i]
            break
    while words and (re.fullmatch(r'[A-Z_]+=\S*', words[0]) or words[0] in ('time', '/usr/bin/time')):
        words = words[1:]  # OMP_NUM_THREADS=1 python ..., /usr/bin/time python ...
    if not words or words[0] not in ('python', 'python3', 'torchrun'):
        return None
    if words[0] == 'torchrun':  # its own --flags, then the script
        scripts = [i for i, w in enumerate(words) if w.endswith('.py')]
        return (words[scripts[0]], words[scripts[0] + 1:]) if scripts else ('', words[1:])
    if len(words) < 2 or words[1].startswith('-'):
        return None  # python -m pytest, python -c ...: not one of ours
    return words[1], words[2:]


def problems(text):
    """What is wrong with the commands of a page's text: [(line number, what)]."""
    found = []
    for n, line in code_lines(text):
        try:
            cmd = command(line)
        except ValueError as e:  # unbalanced quotes
            found.append((n, f'{line!r}: {e}'))
            continue
        if cmd is None:
            continue
        script, args = cmd
        path = os.path.join(ROOT, script)
        defaults = script_defaults(path) if os.path.isfile(path) else None
        if defaults is None:
            found.append((n, f'{script!r} is not a boardgpt script'))
            continue
        missing = [a for a in args if not a.startswith('--') and not os.path.isfile(os.path.join(ROOT, a))]
        if missing:
            found.append((n, f'{script}: no config file {missing[0]}'))
            continue
        try:
            configure(defaults, [a if a.startswith('--') else os.path.join(ROOT, a) for a in args])
        except SystemExit as e:  # the configurator's one error line, as the script would print it
            found.append((n, f'{script}: {e.code}'))
    return found


def anchors(text):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens,
    a repeated heading numbered -1, -2, ..."""
    seen, out = {}, set()
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith('```'):
            fenced = not fenced
        m = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if fenced or not m:
            continue
        slug = re.sub(r'[^\w\- ]', '', m.group(1).lower()).replace(' ', '-')
        k = seen.get(slug, 0)
        seen[slug] = k + 1
        out.add(slug if k == 0 else f'{slug}-{k}')
    return out


def bad_links(page, text):
    """Links of a page to our own files that land nowhere: [(target, why)]."""
    found = []
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+:', target):
            continue  # http:, https:, mailto:: outside the repo, not checked here
        path, _, anchor = target.partition('#')
        file = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else os.path.join(ROOT, page)
        if not os.path.exists(file):
            found.append((target, 'no such file'))
        elif anchor and file.endswith('.md'):
            with open(file, encoding='utf-8') as f:
                if anchor not in anchors(f.read()):
                    found.append((target, f'no heading #{anchor} in {os.path.relpath(file, ROOT)}'))
    return found


def read(page):
    with open(os.path.join(ROOT, page), encoding='utf-8') as f:
        return f.read()


@pytest.mark.parametrize('page', PAGES)
def test_commands_run_as_written(page, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = read(page)
    assert [c for _, c in code_lines(text) if command(c)], f'{page} shows no command'
    assert problems(text) == []


@pytest.mark.parametrize('page', PAGES)
def test_links_land(page):
    assert bad_links(page, read(page)) == []


def test_readme_is_short_and_links_to_docs():
    text = read('README.md')
    assert len(text.splitlines()) <= 250
    assert any(t.startswith('docs/') and '#' in t for t in re.findall(r'\]\(([^)\s]+)\)', text))


def test_the_check_catches_a_wrong_command(monkeypatch):
    monkeypatch.chdir(ROOT)
    good = '```sh\nOMP_NUM_THREADS=1 python train_gen.py config/kilter.py --max_iters=10 > gen.log &\n```\n'
    assert problems(good) == []
    bad = {  # each line alone, so that each one's own error is the one found
        'python train_gen.py config/kilter.py --max_itres=10': "unknown config key 'max_itres' for",
        'python train_gen.py config/kilter.py --compile=maybe': 'compile must be bool',
        'python sample.py config/kilter.py --epochs=3': "unknown config key 'epochs'",
        'python train_gen.py config/nowhere.py': 'no config file config/nowhere.py',
        'python train.py config/kilter.py': "'train.py' is not a boardgpt script",
        'torchrun --standalone --nproc_per_node=2 train_gen.py config/kilter.py --n_layr=2': "'n_layr'",
        "python sample.py config/kilter.py --size='7 x 10": 'No closing quotation',
    }
    for line, why in bad.items():
        found = problems(f'```sh\n{line}\n```\n')
        assert len(found) == 1 and found[0][0] == 2 and why in found[0][1], (line, found)
    assert problems(f'```sh\n{list(bad)[0]}\n```\n') and not problems(f'text, not code: {list(bad)[0]}\n')


def test_the_check_catches_a_broken_link(tmp_path):
    page = os.path.relpath(os.path.join(ROOT, 'docs', 'nowhere.md'), ROOT)
    assert anchors('# Speed and scale\n## At 27x: the `bench.py` table\n## At 27x: the `bench.py` table\n') == \
        {'speed-and-scale', 'at-27x-the-benchpy-table', 'at-27x-the-benchpy-table-1'}
    assert bad_links('README.md', '[x](docs/no-such-page.md#a)') == [('docs/no-such-page.md#a', 'no such file')]
    assert bad_links(page, '[x](../README.md#no-such-heading)')[0][1].startswith('no heading #no-such-heading')
    assert bad_links(page, '[x](../README.md#set-up) [y](https://example.org/#z)') == []
