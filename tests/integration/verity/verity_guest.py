# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A guest that opens a real dm-verity root: build-uki.sh's UKI with an initrd holding busybox, veritysetup (with
the host's shared libraries: same Debian release), the kernel's dm-verity and erofs modules (from the same
Debian kernel package as the UKI's kernel, apt-get download, cached under .cache/verity-guest/) and the
/etc/veritytab KIWI would write. Its /init opens partition 2 of the NVMe disk with --panic-on-corruption,
mounts the erofs, reads every file, prints the marker. With a flipped byte the kernel panics "dm-verity device
corrupted", as KIWI's Debian image does.
"""
import glob
import os
import platform
import re
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
UKI_CACHE = os.environ.get("UKI_CACHE") or os.path.join(ROOT, ".cache", "uki-parts")
MODULE_CACHE = os.path.join(ROOT, ".cache", "verity-guest")
MODULES = ("dm-verity", "erofs")

VERITY_INIT = """
mkdir -p /run /mnt
for m in $(cat /modules.load); do insmod /modules/$m.ko || echo "guest-init: insmod $m failed"; done
n=0
while [ ! -b /dev/nvme0n1p2 ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
read name data hash root options < /etc/veritytab
offset=${options#hash-offset=}
offset=${offset%%,*}
echo "guest-init: veritysetup open $root hash-offset=$offset"
veritysetup open /dev/nvme0n1p2 "$name" /dev/nvme0n1p2 "$root" --hash-offset="$offset" --panic-on-corruption \\
  || echo "guest-init: veritysetup open failed"
mount -t erofs -o ro "/dev/mapper/$name" /mnt || echo "guest-init: mount failed"
echo "guest-root: $(cat /mnt/etc/os-release)"
find /mnt -type f -exec sha256sum {} + | sed 's/^/guest-file: /'
echo ATTESTABLE-USERSPACE-REACHED
while :; do sleep 60; done
"""


def _kernel_version():
    # The cache also holds the arm64 kernel once the aarch64 boot test has run: take the host's architecture's.
    deb_arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    kernels = sorted(glob.glob(os.path.join(UKI_CACHE, "vmlinuz-*-%s" % deb_arch)))
    if not kernels:
        raise RuntimeError("no %s kernel in %s: build a UKI with scripts/build-uki.sh first" % (deb_arch, UKI_CACHE))
    return os.path.basename(kernels[-1])[len("vmlinuz-"):]


def _depends(path):
    with open(path, "rb") as handle:
        match = re.search(rb"\0depends=([A-Za-z0-9_,-]*)\0", handle.read())
    return [d for d in match.group(1).decode().split(",") if d] if match else []


def kernel_modules(version):
    """{name: .ko path} of MODULES and their dependencies, from linux-image-<version> (downloaded once)."""
    cache = os.path.join(MODULE_CACHE, version)
    if not os.path.isdir(cache):
        work = tempfile.mkdtemp(prefix="verity-guest-")
        try:
            subprocess.run(["apt-get", "download", "linux-image-%s" % version], cwd=work, check=True,
                           capture_output=True)
            subprocess.run(["dpkg-deb", "-x"] + glob.glob(os.path.join(work, "*.deb")) + [os.path.join(work, "x")],
                           check=True)
            tree = os.path.join(work, "x", "lib", "modules", version, "kernel")
            found = {}
            for dirpath, _dirs, files in os.walk(tree):
                for name in files:
                    if name.endswith(".ko"):
                        found[name[:-3]] = os.path.join(dirpath, name)
            os.makedirs(cache + ".tmp", exist_ok=True)
            wanted = list(MODULES)
            while wanted:
                name = wanted.pop()
                if os.path.exists(os.path.join(cache + ".tmp", name + ".ko")):
                    continue
                source = found.get(name) or found[name.replace("_", "-")]
                shutil.copy(source, os.path.join(cache + ".tmp", name + ".ko"))
                wanted.extend(_depends(source))
            os.rename(cache + ".tmp", cache)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dict((os.path.basename(p)[:-3], p) for p in glob.glob(os.path.join(cache, "*.ko")))


def load_order(modules):
    order = []

    def visit(name):
        if name in order:
            return
        for dep in _depends(modules[name]):
            visit(dep if dep in modules else dep.replace("_", "-"))
        order.append(name)

    for name in sorted(modules):
        visit(name)
    return order


def _binary_with_libraries(path):
    """{initrd path: bytes} of an executable and the shared libraries ldd lists (and the dynamic loader)."""
    files = {}
    with open(path, "rb") as handle:
        files["sbin/" + os.path.basename(path)] = handle.read()
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    for lib in re.findall(r"(/\S+\.so[.\d]*)", out):
        with open(os.path.realpath(lib), "rb") as handle:
            files[lib.lstrip("/")] = handle.read()
    return files


def initrd_files(veritytab):
    """Files for uki_with_init: modules, their load order, veritysetup with its libraries, /etc/veritytab."""
    modules = kernel_modules(_kernel_version())
    files = {"modules.load": "\n".join(load_order(modules)).encode() + b"\n",
             "etc/veritytab": veritytab.encode()}
    for name, path in modules.items():
        with open(path, "rb") as handle:
            files["modules/%s.ko" % name] = handle.read()
    files.update(_binary_with_libraries(shutil.which("veritysetup")))
    return files
