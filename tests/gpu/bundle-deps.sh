#!/usr/bin/env bash
# Prepares .gpu-deps/: the Debian 12 build dependencies of faprompt (GLib,
# json-glib, OpenBLAS with OpenMP, pkg-config) unpacked into a folder with
# relocatable .pc files, for a GPU machine that has CUDA, a C compiler and
# PyTorch but none of these and no package registry. tests/gpu/run.sh uses the bundle where pkg-config does not find
# the system's own copies.
#
#   bash tests/gpu/bundle-deps.sh        # here, with apt-get download (~20 MB)
#   then copy .gpu-deps.tar.xz (or the .gpu-deps folder) next to the tree on
#   the GPU machine and run tests/gpu/run.sh there (both are git-ignored
#   through .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.gpu-deps
arch=x86_64-linux-gnu
pkgs=(libglib2.0-0 libglib2.0-dev libjson-glib-1.0-0 libjson-glib-dev libpcre2-8-0 libffi8
      zlib1g libmount1 libblkid1 libselinux1 pkgconf-bin libpkgconf3
      libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libquadmath0)

grep -qx '/.gpu-deps/' .git/info/exclude 2>/dev/null || echo '/.gpu-deps/' >> .git/info/exclude
rm -rf "$dest"
mkdir -p "$dest/debs" "$dest/root" "$dest/pkgconfig" "$dest/bin"
(cd "$dest/debs" && apt-get download "${pkgs[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
for d in "$dest"/debs/*.deb; do dpkg-deb -x "$d" "$dest/root"; done
version() { dpkg-deb -f "$dest"/debs/"$1"_*.deb Version | sed 's/[-+~].*//'; }
glib_v=$(version libglib2.0-dev)
json_v=$(version libjson-glib-dev)
blas_v=$(version libopenblas-openmp-dev)
rm -rf "$dest/debs" "$dest"/root/usr/share "$dest"/root/usr/lib/$arch/installed-tests
find "$dest/root" \( -name '*.a' -o -name 'liblapack*' -o -name cmake -o -name 'libgthread*' \) \
  -prune -exec rm -rf {} +

# .pc files relative to their own folder, without the Requires.private chains
# of the Debian ones (their targets are not bundled: nothing links statically)
pc() { cat > "$dest/pkgconfig/$1.pc"; }
head='prefix=${pcfiledir}/../root/usr
libdir=${prefix}/lib/'$arch'
includedir=${prefix}/include'
pc glib-2.0 <<EOF
$head
Name: glib-2.0
Description: GLib (bundled)
Version: $glib_v
Cflags: -I\${includedir}/glib-2.0 -I\${libdir}/glib-2.0/include
Libs: -L\${libdir} -lglib-2.0
EOF
pc gobject-2.0 <<EOF
$head
Name: gobject-2.0
Description: GObject (bundled)
Version: $glib_v
Requires: glib-2.0
Libs: -L\${libdir} -lgobject-2.0
EOF
pc gio-2.0 <<EOF
$head
Name: gio-2.0
Description: GIO (bundled)
Version: $glib_v
Requires: gobject-2.0
Libs: -L\${libdir} -lgio-2.0
EOF
pc json-glib-1.0 <<EOF
$head
Name: json-glib-1.0
Description: json-glib (bundled)
Version: $json_v
Requires: gio-2.0 gobject-2.0 glib-2.0
Cflags: -I\${includedir}/json-glib-1.0
Libs: -L\${libdir} -ljson-glib-1.0
EOF
pc openblas <<EOF
$head
Name: openblas
Description: OpenBLAS, OpenMP build (bundled)
Version: $blas_v
Cflags: -I\${includedir}/$arch/openblas-openmp
Libs: -L\${libdir}/openblas-openmp -lopenblas
EOF

cat > "$dest/env.sh" <<'EOF'
# sourced by tests/gpu/run.sh
_fap_deps=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_fap_lib=$_fap_deps/root/usr/lib/x86_64-linux-gnu
export PATH="$_fap_deps/bin:$PATH"
export PKG_CONFIG_PATH="$_fap_deps/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$_fap_lib:$_fap_lib/openblas-openmp:$_fap_deps/root/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
EOF
cat > "$dest/bin/pkg-config" <<'EOF'
#!/bin/sh
# the bundled pkgconf, run with its own library
here=$(cd "$(dirname "$0")/.." && pwd)
LD_LIBRARY_PATH="$here/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  exec "$here/root/usr/bin/pkgconf" "$@"
EOF
chmod +x "$dest/bin/pkg-config"
# one compressed file (~7 MB) is the easiest thing to copy to the GPU machine
tar -C "$dest" -cJf .gpu-deps.tar.xz .
grep -qx '/.gpu-deps.tar.xz' .git/info/exclude || echo '/.gpu-deps.tar.xz' >> .git/info/exclude
echo "bundle-deps: $(du -sh "$dest" | cut -f1) in $dest, $(du -h .gpu-deps.tar.xz | cut -f1) as" \
  ".gpu-deps.tar.xz (glib $glib_v, json-glib $json_v, openblas $blas_v)"
