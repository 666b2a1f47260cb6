"""What every end-to-end test of faprompt-serve beside test_serve.py does
around its case: the command line (--serve, --model, and the test's own
options), test_serve's globals, a temporary folder (kept when something
failed), every faprompt-serve it started killed if the case left one
running (an exception midway), the summary line and the exit status."""
import argparse
import os
import shutil
import sys
import tempfile

import test_serve as ts


class _Tracked(ts.Serve):
    started = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _Tracked.started.append(self)


def main(doc, prefix, case, extra=()):
    """@case(args) runs the checks; @extra: (flag, help) options it needs."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--serve", required=True)
    ap.add_argument("--model", required=True)
    for flag, text in extra:
        ap.add_argument(flag, required=True, help=text)
    a = ap.parse_args()
    ts.SERVE = os.path.abspath(a.serve)
    ts.MODEL = os.path.realpath(a.model)
    ts.TMP = tempfile.mkdtemp(prefix=f"fap-serve-{prefix}-")
    ts.Serve = _Tracked
    try:
        case(a)
    finally:
        for s in _Tracked.started:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
        if ts.R.failures:
            ts.R.note(f"logs kept in {ts.TMP}")
        else:
            shutil.rmtree(ts.TMP, ignore_errors=True)
    print(f"# {ts.R.failures} failure(s)", flush=True)
    sys.exit(1 if ts.R.failures else 0)
