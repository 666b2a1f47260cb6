#!/usr/bin/python3
"""faprompt-serve's systemd unit and example configuration as installed.

  test_unit.py --serve BUILD/serve/faprompt-serve --unit BUILD/serve/faprompt-serve.service \
               --config SOURCE/packaging/serve.conf

- `systemd-analyze verify` finds nothing to say about the unit (every key
  known, every command there), run on a copy whose ExecStart names the built
  program and the example configuration (no running systemd needed; skipped
  when systemd-analyze is not installed);
- the unit's promises: ExecReload sends SIGHUP, a restart on failure but not
  on exit 2 (a configuration that cannot work), a StateDirectory, a user of
  its own;
- the example configuration starts the service as shipped (no camera), and
  with its commented camera groups switched on (the model and source moved
  to ones this machine has) every key is accepted; SIGHUP on it applies.

Prints `ok`/`FAIL` per check; exits 1 on any failure.
"""
import os
import re
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_case  # noqa: E402
import test_serve as ts  # noqa: E402


def case_unit(unit, config):
    R = ts.R
    with open(unit) as f:
        text = f.read()
    keys = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    R.check(keys.get("ExecReload") == "/bin/kill -HUP $MAINPID" and
            keys.get("Restart") == "on-failure" and keys.get("RestartPreventExitStatus") == "2" and
            keys.get("StateDirectory") == "faprompt" and keys.get("DynamicUser") == "yes" and
            keys.get("Type") == "exec" and
            re.search(r"/faprompt-serve \S+/faprompt/serve\.conf$", keys.get("ExecStart", "")),
            "the unit: Type=exec, SIGHUP on reload, restart on failure but not exit 2, "
            "StateDirectory, DynamicUser", keys)
    analyze = shutil.which("systemd-analyze")
    if analyze:
        copy = os.path.join(ts.TMP, "faprompt-serve.service")
        with open(copy, "w") as f:
            f.write(re.sub(r"^ExecStart=.*$", f"ExecStart={ts.SERVE} {config}", text, flags=re.M))
        r = subprocess.run([analyze, "verify", copy], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"))
        R.check(r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(),
                "systemd-analyze verify: nothing to say", r.stdout + r.stderr)
    else:
        ts.R.note("systemd-analyze not installed: the unit was not verified")

    s = ts.Serve(open(config).read().replace("listen = 127.0.0.1:8090", "listen = 127.0.0.1:0"),
                 (), name="shipped")
    ok = R.check(s.wait_listening(), "the example configuration as shipped: listening", s.text())
    if ok:
        R.check(s.cameras() == {}, "... with no camera", s.cameras())
    rc, _ = s.stop()
    R.check(rc == 0, "... SIGTERM: exit 0", s.text())

    # its commented camera groups switched on
    on = re.sub(r"^#(\[camera |source|model|inference|image|draw|publish|record)", r"\1",
                open(config).read(), flags=re.M)
    on = on.replace("listen = 127.0.0.1:8090", "listen = 127.0.0.1:0")
    on = re.sub(r"^model = .*$", f"model = {ts.MODEL}", on, flags=re.M)
    on = re.sub(r"^source = .*$", "source = " + ts.small("ball").replace("\\", "\\\\"), on,
                flags=re.M)
    s = ts.Serve(on, (), name="switched-on")
    ok = R.check(s.wait_listening() and s.wait_for(ts.running(["door", "bench"], 3)),
                 "the example's camera groups switched on: both running", s.text())
    if ok:
        with open(s.config_path, "w") as f:
            f.write(on.replace("inference-interval = 15", "inference-interval = 5"))
        s.proc.send_signal(signal.SIGHUP)
        cams = s.wait_for(lambda c: c["door"]["inference-interval"] == 5, timeout=30)
        R.check(cams is not None and cams["door"]["restarts"] == 0,
                "... SIGHUP after an edit: the new interval taken while running", s.text()[-1000:])
    rc, _ = s.stop()
    R.check(rc == 0, "... SIGTERM: exit 0", s.text()[-1000:])


if __name__ == "__main__":
    serve_case.main(__doc__, "unit",
                    lambda a: case_unit(os.path.abspath(a.unit), os.path.abspath(a.config)),
                    (("--unit", "the configured faprompt-serve.service"),
                     ("--config", "packaging/serve.conf")))
