#!/usr/bin/python3
"""The installed tree, as an application developer and a GStreamer user get it.

    test_installed.py --build BUILD --source SRC --model TINY.safetensors

`meson install --destdir` into a temporary root, then:
- libfaprompt.so.0 exports exactly the functions of the installed fap.h, the
  CUDA module (where built) only its entry point; neither the core, the plugin
  nor the tools link a CUDA library;
- docs/examples/demo.c builds with `cc demo.c $(pkg-config --cflags --libs
  faprompt)` against the installed tree and runs;
- the installed plugin loads (gst-inspect-1.0 faprompt) and a pipeline runs on
  the CPU when the CUDA module is missing, and, where it was built, when its
  CUDA libraries cannot be found (a copy whose libcudart name is changed);
  backend=auto says why it chose the CPU, backend=cuda fails with a message
  that says which of the two is missing and what to install.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

failures = 0


def check(cond, what, detail=""):
    global failures
    print(f"{'ok' if cond else 'FAIL':4} {what}", flush=True)
    if not cond:
        failures += 1
        if detail:
            print("     " + detail.strip().replace("\n", "\n     "), flush=True)


def run(cmd, env=None, **kw):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=300, **kw)
    return p.returncode, p.stdout


def exported(lib):
    rc, out = run(["nm", "-D", "--defined-only", lib])
    return {line.split()[-1] for line in out.splitlines() if line.strip()} if rc == 0 else None


def needed(path):
    rc, out = run(["readelf", "-d", path])
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="faprompt-install-")
    try:
        rc, out = run(["meson", "install", "-C", a.build, "--no-rebuild", "--quiet",
                       "--destdir", root])
        check(rc == 0, "meson install --destdir", out)
        if rc:
            return
        libs = glob.glob(os.path.join(root, "**", "libfaprompt.so.0"), recursive=True)
        check(len(libs) == 1, "libfaprompt.so.0 installed", str(libs))
        if len(libs) != 1:
            return
        libdir = os.path.dirname(libs[0])
        headers = glob.glob(os.path.join(root, "**", "faprompt", "fap.h"), recursive=True)
        check(len(headers) == 1, "fap.h installed under include/faprompt/", str(headers))
        pcs = glob.glob(os.path.join(root, "**", "pkgconfig", "faprompt.pc"), recursive=True)
        check(len(pcs) == 1, "faprompt.pc installed", str(pcs))
        soname = re.search(r"SONAME\)\s+Library soname: \[([^\]]+)\]",
                           run(["readelf", "-d", libs[0]])[1])
        check(soname and soname.group(1) == "libfaprompt.so.0", "soname libfaprompt.so.0")

        # the ABI is fap.h and nothing else
        api = set(re.findall(r"^FAP_API [^(]*?\b(fap_\w+)\(", open(headers[0]).read(), re.M))
        ex = exported(libs[0])
        check(ex == api, f"libfaprompt exports the {len(api)} functions of fap.h, nothing else",
              f"extra: {sorted((ex or set()) - api)}\nmissing: {sorted(api - (ex or set()))}")
        module = os.path.join(libdir, "faprompt", "libfaprompt-cuda.so")  # private folder
        have_module = os.path.exists(module)
        print(f"#    CUDA module {'installed' if have_module else 'not built here'}", flush=True)
        if have_module:
            check(exported(module) == {"fap_backend_module_entry"},
                  "libfaprompt-cuda.so exports its entry point only", str(exported(module)))
        plugin = glob.glob(os.path.join(root, "**", "gstreamer-1.0", "libgstfaprompt.so"),
                           recursive=True)
        tools = glob.glob(os.path.join(root, "**", "bin", "faprompt-infer"), recursive=True)
        for path in [libs[0]] + plugin + tools:
            cuda = [n for n in needed(path) if re.match(r"lib(cuda|cudart|cublas)", n)]
            check(not cuda, f"{os.path.basename(path)} links no CUDA library", str(cuda))

        env = dict(os.environ, LD_LIBRARY_PATH=libdir)
        env.pop("FAPROMPT_BACKEND_PATH", None)

        # an application: the example from the docs, built against the installed tree
        pkg_env = dict(env, PKG_CONFIG_PATH=os.path.dirname(pcs[0]), PKG_CONFIG_SYSROOT_DIR=root)
        rc, flags = run(["pkg-config", "--cflags", "--libs", "faprompt"], env=pkg_env)
        check(rc == 0 and "-lfaprompt" in flags, "pkg-config --cflags --libs faprompt", flags)
        demo = os.path.join(root, "demo")
        cc = os.environ.get("CC", "cc")
        rc, out = run(f"{cc} {os.path.join(a.source, 'docs/examples/demo.c')} {flags.strip()} "
                      f"-o {demo}", env=pkg_env, shell=True)
        check(rc == 0, "cc demo.c $(pkg-config --cflags --libs faprompt)", out)
        if rc == 0:
            rc, out = run([demo, a.model], env=env)
            check(rc == 0 and re.search(r"backend cpu, S=\d+: score 0\.\d+", out),
                  "the example runs on the installed library", out)

        if tools:
            infer = tools[0]
            img = os.path.join(root, "frame.ppm")
            with open(img, "wb") as f:  # a 40x30 RGB frame, no decoder needed
                f.write(b"P6 40 30 255\n" + bytes((x * 7 + y * 3) % 256 for y in range(30)
                                                  for x in range(40) for _ in range(3)))

        def gst(env_, backend, what):
            """The installed plugin with this environment: inspect, then a pipeline."""
            genv = dict(env_, GST_PLUGIN_PATH=os.path.dirname(plugin[0]),
                        GST_REGISTRY=os.path.join(root, "registry.bin"),
                        GST_DEBUG="faprompt:4", GST_DEBUG_NO_COLOR="1")
            rc, out = run(["gst-inspect-1.0", "faprompt"], env=genv)
            check(rc == 0 and plugin[0] in out, f"{what}: gst-inspect-1.0 faprompt",
                  out[-2000:])
            rc, out = run(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=3", "!",
                           "video/x-raw,width=64,height=48", "!", "faprompt",
                           f"model-file={a.model}", f"backend={backend}", "!", "fakesink"],
                          env=genv)
            return rc, out

        def scenario(what, env_, cause, remedy):
            rc, out = gst(env_, "auto", what)
            check(rc == 0 and re.search(r"backend auto: cpu, because .*" + cause, out),
                  f"{what}: backend=auto runs on the CPU and says why", out[-3000:])
            rc, out = gst(env_, "cuda", what)
            check(rc != 0 and re.search(cause + ".*" + remedy, out),
                  f"{what}: backend=cuda fails, naming what is missing and what to install",
                  out[-3000:])
            if tools:
                rc, out = run([infer, "--backend", "cuda", a.model, img], env=env_)
                check(rc != 0 and re.search(cause + ".*" + remedy, out),
                      f"{what}: faprompt-infer --backend cuda says the same", out[-2000:])
                rc, out = run([infer, a.model, img], env=env_)
                check(rc == 0 and "cpu backend" in out, f"{what}: faprompt-infer runs on the CPU",
                      out[-2000:])

        if plugin and have_module:
            # the CUDA runtime hidden: a copy of the module whose libcudart name
            # no library answers to, found through FAPROMPT_BACKEND_PATH
            hidden = os.path.join(root, "hidden")
            os.mkdir(hidden)
            data = open(module, "rb").read()
            check(b"libcudart.so.13\0" in data, "the module needs libcudart.so.13")
            open(os.path.join(hidden, "libfaprompt-cuda.so"), "wb").write(
                data.replace(b"libcudart.so.13\0", b"libcudaXt.so.13\0"))
            scenario("CUDA runtime missing", dict(env, FAPROMPT_BACKEND_PATH=hidden),
                     r"is there but cannot load: .*libcudaXt\.so\.13", r"install the CUDA runtime")
            os.remove(module)
        if plugin:
            scenario("CUDA module missing", env, r"libfaprompt-cuda\.so was not found",
                     r"install the faprompt-cuda package")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
    print(f"# {failures} failure(s)")
    sys.exit(1 if failures else 0)
