"""Run many boardgpt scripts as `python script.py args...` would, but forked from one process
that has imported torch and numpy once: most of a failing command's 3.5 s is that import, and the
error tests run dozens of them. Used by conftest.run_many; reads its jobs as JSON on stdin:
{"root": repo, "workers": N, "jobs": [[argv, stdout_path, stderr_path], ...]}, prints the exit
codes as a JSON list."""
import json
import os
import runpy
import sys

import numpy  # noqa: F401  (what every script imports first: loaded once, before the forks)
import torch

request = json.load(sys.stdin)
root, jobs = request['root'], request['jobs']


def child(argv, out_path, err_path):
    """In the forked process: become `python argv...` in the repo root, then exit with its code."""
    code = 1
    try:
        os.chdir(root)
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            f = os.open(path, flags, 0o644)
            os.dup2(f, fd)
            os.close(f)
        torch.set_num_threads(1)  # a forked OpenMP pool must not be reused; these are small jobs
        sys.argv = list(argv)
        sys.path[0] = root  # where `python script.py` puts the script's folder
        try:
            runpy.run_path(os.path.join(root, argv[0]), run_name='__main__')
            code = 0
        except SystemExit as e:  # what the interpreter does with it at exit
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: B902  the script's excepthook (one error line) or the default traceback
            sys.excepthook(*sys.exc_info())
            code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


codes, running, queue = [None] * len(jobs), {}, list(range(len(jobs)))
sys.stdout.flush()
while queue or running:
    while queue and len(running) < request['workers']:
        i = queue.pop(0)
        pid = os.fork()
        if pid == 0:
            child(*jobs[i])
        running[pid] = i
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes))
