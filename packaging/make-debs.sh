#!/usr/bin/env bash
# Builds the Debian packages from this tree:
#   faprompt          libfaprompt.so.0, the GStreamer plugin + GstFAPromptMeta library,
#                     the tools, the converter and the model generator, faprompt-serve
#                     with its systemd unit and /etc/faprompt/serve.conf (a conffile)
#   python3-faprompt  the Python module (ctypes over libfaprompt)
#   libfaprompt-dev   fap.h, gstfapromptmeta.h, the .so links, faprompt.pc, faprompt-1.0.pc
#   faprompt-cuda     libfaprompt-cuda.so, the run-time CUDA module (where a toolkit is found)
# into OUT (default ./build-deb/debs), then runs lintian on them (errors fail).
#
#   bash packaging/make-debs.sh [OUT]
#
# A script around `meson install` + dpkg-deb rather than debian/ + dpkg-buildpackage:
# the CUDA toolkit the module is built with is not a Debian package (NVIDIA's
# runfile or repository), so debhelper's build-dependency and shlibs machinery
# cannot describe it; here the split, the CUDA dependency and everything else
# are spelled out in one place, and the build needs nothing beyond dpkg-dev.
# Dependencies on Debian libraries still come from dpkg-shlibdeps.
set -euo pipefail
trap 'echo "make-debs: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/build-deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$src/meson.build" | head -1)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
maint="faprompt developers <maintainers@faprompt.org>"
build=$out/build stage=$out/stage debs=$out/debs
rm -rf "$stage" "$debs"
mkdir -p "$stage" "$debs"

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$src" --prefix=/usr --libdir="lib/$multiarch" --buildtype=release \
    -Dtests=disabled -Dinstall_rpath=false -Dcuda="${FAP_CUDA:-auto}" -Dpython=/usr/bin/python3 \
    > "$out/meson-setup.log" 2>&1 || { cat "$out/meson-setup.log" >&2; exit 1; }
fi
ninja -C "$build" > "$out/ninja.log" 2>&1 || { tail -40 "$out/ninja.log" >&2; exit 1; }
DESTDIR="$stage/all" meson install -C "$build" --no-rebuild --quiet

# ---- split ------------------------------------------------------------------
lib=usr/lib/$multiarch
move() { # PACKAGE PATH...: moves staged paths into the package's tree
  local pkg=$1; shift
  for p in "$@"; do
    for f in "$stage"/all/$p; do
      [ -e "$f" ] || [ -L "$f" ] || continue
      local rel=${f#"$stage"/all/}
      mkdir -p "$stage/$pkg/$(dirname "$rel")"
      mv "$f" "$stage/$pkg/$rel"
    done
  done
}
move libfaprompt-dev usr/include "$lib/pkgconfig" "$lib/libfaprompt.so" "$lib/libgstfapromptmeta-1.0.so"
move faprompt-cuda "$lib/faprompt" usr/bin/faprompt-bench-gpu
move python3-faprompt usr/lib/python3
move faprompt usr etc
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
packages=(faprompt python3-faprompt libfaprompt-dev)
[ -e "$stage/faprompt-cuda/$lib/faprompt/libfaprompt-cuda.so" ] && packages+=(faprompt-cuda)
left=$(find "$stage/all" -type f -o -type l)
if [ -n "$left" ]; then echo "make-debs: files in no package: $left" >&2; exit 1; fi

# ---- per package: docs, strip, control -----------------------------------------
shlibs_local=$out/shlibs.local
printf 'libfaprompt 0 faprompt (>= %s)\nlibgstfapromptmeta-1.0 0 faprompt (>= %s)\n' \
  "$version" "$version" > "$shlibs_local"
# dpkg-shlibdeps reads debian/control of the "source": a minimal one
mkdir -p "$out/src/debian"
printf 'Source: faprompt\nMaintainer: %s\n\nPackage: faprompt\nArchitecture: any\n' "$maint" \
  > "$out/src/debian/control"
changelog_date=$(date -R -d "@$(git -C "$src" log -1 --format=%ct 2>/dev/null || date +%s)")

for pkg in "${packages[@]}"; do
  root=$stage/$pkg
  doc=$root/usr/share/doc/$pkg
  mkdir -p "$doc" "$root/DEBIAN"
  cat > "$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: faprompt
Source: https://github.com/faprompt/faprompt

Files: *
Copyright: 2026 The faprompt authors
License: MIT
$(sed -n '3,$p' "$src/LICENSE" | sed 's/^$/./; s/^/ /')
COPYRIGHT
  printf 'faprompt (%s) unstable; urgency=medium\n\n  * Package built from the source tree (packaging/make-debs.sh).\n\n -- %s  %s\n' \
    "$version" "$maint" "$changelog_date" | gzip -9n > "$doc/changelog.gz"
  find "$root" -type d -exec chmod 0755 {} +
  find "$root" -type f -exec chmod go-w {} +
  # ELF files: stripped (debug info is not shipped), checked for dependencies
  elfs=()
  while IFS= read -r f; do
    if [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then
      case $f in *.so*) strip --strip-unneeded --remove-section=.comment --remove-section=.note "$f"; chmod 0644 "$f" ;;
                 *) strip --remove-section=.comment --remove-section=.note "$f" ;; esac
      elfs+=("$f")
    fi
  done < <(find "$root" -type f ! -path '*/DEBIAN/*')
  depends=
  if [ ${#elfs[@]} -gt 0 ]; then
    # the CUDA toolkit's folder, where its libraries are (no package owns
    # them: --ignore-missing-info; faprompt-cuda names them by hand below)
    search=(-l"$stage/faprompt/$lib")
    cuda_lib="${CUDA_PATH:-/usr/local/cuda}/lib64"
    [ -d "$cuda_lib" ] && search+=(-l"$cuda_lib")
    if ! (cd "$out/src" && dpkg-shlibdeps -O -S"$stage/faprompt" -L"$shlibs_local" \
          --ignore-missing-info "${search[@]}" "${elfs[@]}" > "$out/shlibdeps-$pkg.txt" \
          2> "$out/shlibdeps-$pkg.log"); then
      echo "make-debs: dpkg-shlibdeps failed for $pkg:" >&2
      cat "$out/shlibdeps-$pkg.log" >&2
      exit 1
    fi
    depends=$(sed -n 's/^shlibs:Depends=//p' "$out/shlibdeps-$pkg.txt")
  fi
  # dpkg-shlibdeps names faprompt for libfaprompt; the packages below name it exactly
  # and libopenblas0 for libopenblas.so.0, a metapackage that apt satisfies with
  # the pthread build, which outranks the OpenMP one as the system's
  # libopenblas.so.0 and halves the speed: the OpenMP build by name instead
  depends=$(echo "$depends" | tr ',' '\n' | sed 's/^ *//' | grep -v "^faprompt\( \|$\)" |
    sed 's/^libopenblas0\( \|$\)/libopenblas0-openmp\1/' | paste -sd, - | sed 's/,/, /g')
  extra= suggests=
  case $pkg in
    faprompt)
      extra="python3, gstreamer1.0-plugins-base"
      recommends="gstreamer1.0-tools, gstreamer1.0-plugins-good"
      suggests="python3-torch, python3-numpy"   # faprompt-convert, -gen-random (2 GB: not pulled in)
      description="zero-shot visual anomaly detection for video (FAPrompt)
 FAPrompt (ICCV 2025: fine-grained abnormality prompts on a frozen CLIP
 ViT-L/14@336px) as a C inference core (libfaprompt), the GStreamer element
 faprompt, which attaches an anomaly score and map to every frame and draws a
 heatmap, and tools: faprompt-infer, faprompt-eval, faprompt-calibrate,
 faprompt-bench. faprompt-convert turns the authors' checkpoint and OpenAI's
 CLIP weights into the model file; faprompt-gen-random writes random models
 for tests (both need python3-torch). faprompt-serve keeps cameras running
 through the element with Prometheus metrics and a JSON API (systemd unit
 faprompt-serve.service, installed disabled). The CUDA backend is in
 faprompt-cuda."
      printf 'activate-noawait ldconfig\n' > "$root/DEBIAN/triggers"
      printf 'libfaprompt 0 faprompt (>= %s)\nlibgstfapromptmeta-1.0 0 faprompt (>= %s)\n' \
        "$version" "$version" > "$root/DEBIAN/shlibs"
      ;;
    faprompt-cuda)
      # NVIDIA's repository packages (Debian itself ships no CUDA 13)
      extra="faprompt (= $version), cuda-cudart-13-0 | libcudart13, libcublas-13-0 | libcublaslt13"
      recommends=
      description="zero-shot visual anomaly detection for video: CUDA backend
 libfaprompt-cuda.so, the module libfaprompt loads at run time when asked for
 the CUDA backend (backend=auto picks it when a GPU answers). Needs the CUDA 13
 runtime and cuBLASLt and an NVIDIA driver; without them libfaprompt runs on
 the CPU and says which part is missing."
      ;;
    python3-faprompt)
      extra="faprompt (= $version), python3, python3-numpy"
      recommends=
      description="zero-shot visual anomaly detection for video: Python module
 The faprompt module: faprompt.Model, faprompt.Detector and det.run() on numpy
 images (score, decision, anomaly map), through ctypes over libfaprompt."
      ;;
    libfaprompt-dev)
      extra="faprompt (= $version), libgstreamer1.0-dev, libgstreamer-plugins-base1.0-dev"
      recommends=
      description="zero-shot visual anomaly detection for video: development files
 fap.h and faprompt.pc for programs on the inference core, and
 gstfapromptmeta.h with faprompt-1.0.pc for applications that read the
 element's GstFAPromptMeta."
      ;;
  esac
  depends=$(printf '%s\n' "$depends" "$extra" | sed '/^$/d' | paste -sd, - | sed 's/,\([^ ]\)/, \1/g')
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  pkg_arch=$arch; [ "$pkg" = python3-faprompt ] && pkg_arch=all   # pure Python
  section=video; [ "$pkg" = libfaprompt-dev ] && section=libdevel; [ "$pkg" = python3-faprompt ] && section=python
  {
    echo "Package: $pkg"
    echo "Version: $version"
    echo "Architecture: $pkg_arch"
    echo "Maintainer: $maint"
    echo "Installed-Size: $size"
    [ -n "$depends" ] && echo "Depends: $depends"
    [ -n "$recommends" ] && echo "Recommends: $recommends"
    [ -n "$suggests" ] && echo "Suggests: $suggests"
    echo "Section: $section"
    echo "Priority: optional"
    echo "Multi-Arch: no"
    echo "Homepage: https://github.com/faprompt/faprompt"
    echo "Description: $description"
  } > "$root/DEBIAN/control"
  # files under /etc are conffiles (an edited one is kept on upgrade); as
  # dh_md5sums does, they are not in md5sums (dpkg keeps their sums itself)
  if [ -d "$root/etc" ]; then
    (cd "$root" && find etc -type f -printf '/%p\n' | sort) > "$root/DEBIAN/conffiles"
  fi
  (cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z |
    xargs -0 md5sum) > "$root/DEBIAN/md5sums"
  dpkg-deb --root-owner-group -Zxz --build "$root" "$debs/${pkg}_${version}_${pkg_arch}.deb" >/dev/null
done

echo "make-debs: packages in $debs"
for d in "$debs"/*.deb; do
  printf '  %-44s %7s KiB  installed %s KiB\n' "$(basename "$d")" "$(( $(stat -c %s "$d") / 1024 ))" \
    "$(dpkg-deb -f "$d" Installed-Size)"
done
if command -v lintian >/dev/null; then
  # errors fail the build; warnings are printed (see packaging/README.md)
  lintian --fail-on error \
    "$debs"/*.deb | tee "$out/lintian.log"
  echo "make-debs: lintian: $(grep -c '^E:' "$out/lintian.log" || true) error(s), $(grep -c '^W:' "$out/lintian.log" || true) warning(s)"
else
  echo "make-debs: lintian not installed (apt-get install lintian): not checked" >&2
fi
