# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What users get from Galaxy and from an execution environment build: the collection tarball and the EE context.

Real tools: ansible-galaxy collection build/install and ansible-builder create/introspect. Building the EE image
itself needs a container engine, which this machine does not have; `create` writes the complete build context.
"""
import json
import os
import subprocess
import sys
import tarfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)

# What `make demo` and `make test` leave in a checkout; none of it is the collection.
LOCAL_STATE = {
    "artifacts/demo/disk.raw": 69 * 1024 * 1024,
    "artifacts/manifest.json": 10,
    ".venv39/bin/python": 10,
    ".venv/pyvenv.cfg": 10,
    ".hypothesis/examples/abc": 10,
    ".pytest_cache/v/cache/lastfailed": 10,
    ".build/collections/marker": 10,
    ".cache/kiwi/marker": 10,
    "tests/output/junit.xml": 10,
    "attestable-ami-0.0.1.tar.gz": 10,
    "plugins/modules/__pycache__/pcr_compute.cpython-311.pyc": 10,
}
LOCAL_TOP_DIRS = {".venv", ".venv39", "artifacts", ".hypothesis", ".pytest_cache", ".build", ".cache"}


def _tool(name):
    return os.path.join(BIN, name)


def _run(cmd, cwd=None):
    # Outside the checkout, so that its ansible.cfg (collections_path = the checkout itself) plays no part.
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or os.path.dirname(ROOT), check=False)
    assert proc.returncode == 0, "%s failed:\n%s\n%s" % (" ".join(cmd), proc.stdout, proc.stderr)
    return proc.stdout


def _checkout_copy(tmp_path):
    """The tracked files of this checkout plus the local state a demo/test run leaves behind."""
    src = tmp_path / "src" / "ansible_collections" / "attestable" / "ami"
    files = _run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).split("\0")
    for rel in filter(None, files):
        if not os.path.isfile(os.path.join(ROOT, rel)):
            continue
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(os.path.join(ROOT, rel), "rb") as handle:
            dest.write_bytes(handle.read())
    for rel, size in LOCAL_STATE.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(path), "wb") as handle:
            handle.truncate(size)
    return src


def _build(tmp_path):
    src = _checkout_copy(tmp_path)
    out = tmp_path / "out"
    _run([_tool("ansible-galaxy"), "collection", "build", "--output-path", str(out), str(src)])
    tarballs = list(out.glob("attestable-ami-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    return src, tarballs[0]


def test_tarball_holds_the_collection_and_nothing_local(tmp_path):
    src, tarball = _build(tmp_path)
    with tarfile.open(str(tarball)) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    leaked = [n for n in names if n in LOCAL_STATE or n.endswith((".pyc", ".raw", ".tar.gz"))
              or n.split("/")[0] in LOCAL_TOP_DIRS or n.startswith("tests/output")]
    assert not leaked, "local state packed into the collection: %s" % sorted(set(leaked))
    for needed in ("LICENSE", "README.md", "meta/runtime.yml", "meta/execution-environment.yml",
                   "meta/ee-requirements.txt", "meta/ee-bindep.txt", "plugins/modules/pcr_compute.py",
                   "roles/kms_authorize/meta/argument_specs.yml", "ee/execution-environment.yml"):
        assert needed in names, "%s missing from the tarball" % needed
    assert manifest["collection_info"]["license_file"] == "LICENSE"
    with open(str(src / "LICENSE")) as handle:
        assert "GNU GENERAL PUBLIC LICENSE" in handle.read(2000)
    # The collection is text: a megabyte is far above what it holds, and far below a leaked disk image.
    assert os.path.getsize(str(tarball)) < 1024 * 1024, "tarball is %d bytes" % os.path.getsize(str(tarball))


def test_execution_environment_lists_the_collection_requirements(tmp_path):
    src, tarball = _build(tmp_path)
    installed = tmp_path / "collections"
    _run([_tool("ansible-galaxy"), "collection", "install", "--no-deps", "--force", "-p", str(installed), str(tarball)])

    report = yaml.safe_load(_run([_tool("ansible-builder"), "introspect", "--sanitize", str(installed)]))
    python = " ".join(report["python"]) if isinstance(report["python"], list) else json.dumps(report["python"])
    system = " ".join(report["system"]) if isinstance(report["system"], list) else json.dumps(report["system"])
    for package in ("boto3", "botocore", "pefile", "cryptography", "kiwi"):
        assert package in python, "%s not in the introspected Python requirements: %s" % (package, python)
    for package in ("swtpm", "edk2-ovmf", "cpio", "binutils", "mtools", "cryptsetup"):
        assert package in system, "%s not in the introspected system requirements: %s" % (package, system)

    context = tmp_path / "context"
    _run([_tool("ansible-builder"), "create", "-f", str(src / "ee" / "execution-environment.yml"),
          "-c", str(context), "--output-filename", "Containerfile"])
    containerfile = (context / "Containerfile").read_text()
    assert "install-from-bindep" in containerfile and "introspect" in containerfile
    assert "quay.io/fedora/fedora" in containerfile
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert [c["name"] for c in requirements["collections"]][:1] == ["attestable.ami"]
