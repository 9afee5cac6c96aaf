# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image_description role: every supported switch combination renders a description KIWI accepts (the role
validates it with kiwi_validate, and the test loads it again with KIWI independently), and broken inputs are
refused with a message naming the input before anything is written. No builds here: KIWI's loader only."""
import gzip
import json
import os
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET

import pytest

from kiwi_testlib import run_playbook_text
from ansible_collections.attestable.ami.plugins.module_utils._kiwi import description as kd

HERE = os.path.dirname(os.path.abspath(__file__))
PLAYBOOKS = os.path.join(HERE, "playbooks")
ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "roles", "image_description")

pytest.importorskip("kiwi")

UNATTESTABLE = {"allow_unattestable": True}
# name -> (role variables, attestation findings expected by kd.attestation_findings (substrings))
COMBINATIONS = {
    "defaults": ({}, []),
    "readonly-root-off": (dict(UNATTESTABLE, readonly_root=False, verity=False),
                          ["read-only root", "erofs", "dm-verity", "panic on verity"]),
    "verity-off": (dict(UNATTESTABLE, verity=False), ["dm-verity", "panic on verity"]),
    "uki-off": (dict(UNATTESTABLE, uki=False), ["UKI"]),
    "verity-panic-off": (dict(UNATTESTABLE, verity_panic=False), ["panic on verity"]),
    "initrd-shell-on": (dict(UNATTESTABLE, initrd_shell=True), ["no shell"]),
    "everything-off": (dict(UNATTESTABLE, readonly_root=False, verity=False, uki=False, verity_panic=False,
                            initrd_shell=True), ["read-only root", "erofs", "dm-verity", "UKI", "panic", "no shell"]),
    "customized": ({
        "releasever": "2023.6.20250107",
        "packages_add": ["jq", "nginx"],
        "packages_remove": ["binutils"],
        "packages_ignore": ["sudo"],
        "package_lists": [{"type": "delete", "packages": ["dnf"]}, {"type": "bootstrap", "packages": ["tzdata"]}],
        "repositories": [{"alias": "extras", "url": "https://example.invalid/repo/", "gpgkey": "https://example.invalid/key",
                          "priority": 50}],
        "systemd_units": ["set-hostname-imds.service", "nginx.service"],
        "kernel_args": ["quiet", "nvme_core.io_timeout=4294967295"],
        "disk_size": 4096,
        "erofs_compression": "zstd,level=3",
    }, []),
    "no-compression": ({"erofs_compression": "none"}, []),
}


# The Debian flavour: name -> (role variables, expected findings); rendered for both architectures.
DEBIAN_COMBINATIONS = {
    "debian-defaults": ({"distribution": "debian"}, []),
    "debian-uki-off": ({"distribution": "debian", "allow_unattestable": True, "uki": False}, ["UKI"]),
    "debian-verity-off": ({"distribution": "debian", "allow_unattestable": True, "verity": False},
                          ["dm-verity", "panic on verity"]),
}
SCHEMAS = os.path.join(HERE, "schema")


def host_vars(combo):
    return {"image_description_" + key: value for key, value in combo.items()}


def render(tmp_path, combos):
    """Render each combination (a dict of role variables without prefix, plus dest) as one inventory host."""
    inventory = {"combo%02d" % index: host_vars(combo) for index, combo in enumerate(combos)}
    proc, results, data = run_playbook_text(os.path.join(PLAYBOOKS, "render_all.yml"), tmp_path, inventory=inventory)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    records = {}
    for result in results["Report the rendering"]:
        record = result["image_description_result"]
        records[record["path"]] = record
    return results, data, records


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("descriptions")
    overlay_file = tmp_path / "motd"
    overlay_file.write_text("attestable\n")
    template = tmp_path / "app.conf.j2"
    template.write_text("arch={{ image_description_architecture }}\n")
    combos = []
    for arch in ("x86_64", "arm64"):
        for name, (variables, _expected) in list(COMBINATIONS.items()) + list(DEBIAN_COMBINATIONS.items()):
            combo = dict(variables, architecture=arch, dest=str(tmp_path / arch / name))
            if name == "customized":
                combo["overlay_files"] = [{"src": str(overlay_file), "dest": "/etc/motd"}]
                combo["overlay_templates"] = [{"src": str(template), "dest": "/etc/app/app.conf", "mode": "0600"}]
            combos.append(combo)
    results, data, records = render(tmp_path, combos)
    return {"combos": combos, "records": records, "data": data, "results": results, "tmp": tmp_path}


def task_results(results, name):
    return results["attestable.ami.image_description : " + name]


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_every_combination_is_accepted_by_kiwi(rendered, arch, name):
    dest = str(rendered["tmp"] / arch / name)
    record = rendered["records"][dest]
    _variables, expected = COMBINATIONS[name]
    # The role's own validation ran (kiwi_validate returned a digest of exactly these files)...
    assert record["description_digest"] == kd.description_digest(dest)
    # ...and KIWI loads the description again here, independently of the role.
    summary = kd.load_description(dest)
    findings = kd.attestation_findings(summary)
    assert len(findings) == len(expected), findings
    for part in expected:
        assert any(part in finding for finding in findings), (part, findings)
    assert record["attestable"] is (not expected)
    repo = summary["repositories"][0]
    kiwi_arch = {"x86_64": "x86_64", "arm64": "aarch64"}[arch]
    assert repo["source"].endswith("/%s/mirror.list" % kiwi_arch) and repo["package_gpgcheck"] is True
    efi_name = {"x86_64": "BOOTX64.EFI", "arm64": "BOOTAA64.EFI"}[arch]
    hook = os.path.join(dest, "edit_boot_install.sh")
    if summary["bootloader"] == "systemd_boot":
        with open(hook) as handle:
            assert "efi_boot_file=%s" % efi_name in handle.read()
        assert os.stat(hook).st_mode & stat.S_IXUSR
        assert summary["build_type"]["editbootinstall"] == "edit_boot_install.sh"
    else:
        assert not os.path.exists(hook)


def test_defaults_reproduce_the_aws_sample(rendered):
    summary = kd.load_description(str(rendered["tmp"] / "x86_64" / "defaults"))
    build = summary["build_type"]
    assert build["image"] == "oem" and build["firmware"] == "uefi" and build["filesystem"] == "xfs"
    assert build["overlayroot"] is True and build["overlayroot_write_partition"] is False
    assert build["overlayroot_readonly_filesystem"] == "erofs" and build["erofscompression"] == "lz4hc,level=12"
    assert build["overlayroot_readonly_partsize"] == 2048 and build["efipartsize"] == 200
    assert build["verity_blocks"] == "all" and build["eficsm"] is False and build["bootpartition"] is False
    assert build["kernelcmdline"].split() == ["console=ttyS0", "rd.shell=0", "systemd.getty_auto=false",
                                              "rd.kiwi.verity_options=panic-on-corruption"]
    assert summary["bootloader"] == "systemd_boot" and summary["dracut_uefi"] is True
    assert summary["collections"] == ["ami-minimal", "core"]
    assert {"dracut-kiwi-verity", "dracut-kiwi-overlay", "veritysetup", "systemd-boot", "aws-nitro-tpm-tools",
            "binutils"} <= set(summary["packages"])
    assert {"openssh-server", "amazon-ssm-agent", "cloud-init", "ec2-instance-connect", "grub2-*",
            "grubby"} <= set(summary["ignored_packages"])
    assert "/latest/x86_64/mirror.list" in summary["repositories"][0]["source"]
    with open(str(rendered["tmp"] / "x86_64" / "defaults" / "config.sh")) as handle:
        assert "systemctl enable set-hostname-imds.service" in handle.read()
    assert os.path.exists(str(rendered["tmp"] / "x86_64" / "defaults" / "root" / "usr" / "local" / "sbin"
                              / "set-hostname-imds"))


def test_customized_inputs_reach_the_description(rendered):
    dest = rendered["tmp"] / "arm64" / "customized"
    summary = kd.load_description(str(dest))
    assert {"jq", "nginx"} <= set(summary["packages"]) and "binutils" not in summary["packages"]
    assert "sudo" in summary["ignored_packages"]
    assert "dnf" in summary["deleted_packages"] and "tzdata" in summary["bootstrap_packages"]
    assert "/2023.6.20250107/aarch64/mirror.list" in summary["repositories"][0]["source"]
    assert summary["repositories"][1]["source"] == "https://example.invalid/repo/"
    assert summary["build_type"]["erofscompression"] == "zstd,level=3"
    assert summary["build_type"]["kernelcmdline"].endswith("quiet nvme_core.io_timeout=4294967295")
    assert (dest / "root" / "etc" / "motd").read_text() == "attestable\n"
    assert (dest / "root" / "etc" / "app" / "app.conf").read_text() == "arch=arm64\n"
    assert stat.S_IMODE(os.stat(str(dest / "root" / "etc" / "app" / "app.conf")).st_mode) == 0o600
    with open(str(dest / "config.sh")) as handle:
        assert "systemctl enable nginx.service" in handle.read()
    assert "<size unit=\"M\">4096</size>" in (dest / "appliance.kiwi").read_text()


def test_readonly_root_disk_is_sized_for_its_partitions(rendered):
    """KIWI estimates a disk from the unpacked root and ignores overlayroot_readonly_partsize: the role sizes it."""
    defaults = (rendered["tmp"] / "x86_64" / "defaults" / "appliance.kiwi").read_text()
    assert '<size unit="M">2250</size>' in defaults  # 200 MiB ESP + 2048 MiB read-only partition + 2 MiB GPT
    writable = (rendered["tmp"] / "x86_64" / "readonly-root-off" / "appliance.kiwi").read_text()
    assert "<size" not in writable


def test_no_compression_leaves_the_attribute_out(rendered):
    summary = kd.load_description(str(rendered["tmp"] / "x86_64" / "no-compression"))
    assert "erofscompression" not in summary["build_type"]


def test_unattestable_renderings_warn(rendered):
    validations = task_results(rendered["results"], "Validate the description with KIWI")
    warned = [v for v in validations if v.get("warnings")]
    assert len(warned) == 2 * sum(1 for _v, expected in list(COMBINATIONS.values()) + list(DEBIAN_COMBINATIONS.values())
                                  if expected)
    assert any("not attestable" in w for v in warned for w in v["warnings"])
    printed = [r for r in task_results(rendered["results"], "Warn that the described image is not attestable")
               if not r.get("skipped")]
    assert printed and all("WARNING" in r["msg"] for r in printed)


def test_second_rendering_changes_nothing(rendered):
    combos_again = [c for c in rendered["combos"] if c["dest"].endswith(("defaults", "customized"))]
    _results, data, again = render(rendered["tmp"], combos_again)
    assert all(stats["changed"] == 0 for stats in data["stats"].values()), data["stats"]
    for combo in combos_again:
        assert again[combo["dest"]]["description_digest"] == rendered["records"][combo["dest"]]["description_digest"]


def test_stale_overlay_files_are_removed(rendered, tmp_path):
    dest = rendered["tmp"] / "x86_64" / "defaults"
    stray = dest / "root" / "etc" / "left-over.conf"
    stray.write_text("from an earlier rendering\n")
    render(tmp_path, [c for c in rendered["combos"] if c["dest"] == str(dest)])
    assert not stray.exists()
    assert (dest / "root" / "usr" / "local" / "sbin" / "set-hostname-imds").exists()


BROKEN = {
    "unknown package list type": ({"image_description_package_lists": [{"type": "imagez", "packages": ["jq"]}]},
                                  ["image_description_package_lists", "imagez"]),
    "invalid compression": ({"image_description_erofs_compression": "lz5"},
                            ["image_description_erofs_compression", "lz5"]),
    "too high a compression level": ({"image_description_erofs_compression": "lz4hc,level=13"},
                                     ["image_description_erofs_compression"]),
    "verity without a read-only root": ({"image_description_readonly_root": False,
                                         "image_description_allow_unattestable": True},
                                        ["image_description_verity", "image_description_readonly_root"]),
    "unattestable without consent": ({"image_description_verity": False},
                                     ["image_description_verity", "image_description_allow_unattestable"]),
    "initrd shell by kernel argument": ({"image_description_kernel_args": ["rd.shell=1"]},
                                        ["image_description_kernel_args: rd.shell=1",
                                         "image_description_allow_unattestable"]),
    "removing a verity package": ({"image_description_packages_remove": ["dracut-kiwi-verity"]},
                                  ["dracut-kiwi-verity", "image_description_allow_unattestable"]),
    "removing a package that is not a default": ({"image_description_packages_remove": ["emacs"]},
                                                 ["image_description_packages_remove", "emacs"]),
    "unknown architecture": ({"image_description_architecture": "riscv64"},
                             ["image_description_architecture", "riscv64"]),
    "bad release version": ({"image_description_releasever": "2023-latest"}, ["image_description_releasever"]),
    "relative overlay destination": ({"image_description_overlay_files": [{"src": "/etc/hostname", "dest": "etc/x"}]},
                                     ["dest must be an absolute", "etc/x"]),
    "overlay destination climbing out": ({"image_description_overlay_templates": [{"src": "/etc/hostname",
                                                                                  "dest": "/etc/../../x"}]},
                                         ["without '..'", "/etc/../../x"]),
}

ROLE_PLAYBOOK = """
- name: Render a description
  hosts: localhost
  gather_facts: false
  roles:
    - role: attestable.ami.image_description
"""


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_input_is_refused_before_anything_is_written(case, tmp_path):
    variables, expected = BROKEN[case]
    dest = tmp_path / "description"
    extra = dict(variables, image_description_dest=str(dest))
    proc, _results, data = run_playbook_text(ROLE_PLAYBOOK, tmp_path, extra_vars=extra)
    assert proc.returncode != 0
    failures = [task for play in data.get("plays", []) for task in play["tasks"]
                for result in task["hosts"].values() if result.get("failed")]
    assert failures, proc.stdout[-3000:]
    message = json.dumps(failures[-1]["hosts"]["localhost"].get("msg"))
    for part in expected:
        assert part in message, (part, message)
    assert "Traceback" not in message
    assert not dest.exists()


def test_rendered_scripts_are_valid_bash(rendered):
    for combo in rendered["combos"]:
        for script in ("config.sh", "edit_boot_install.sh"):
            path = os.path.join(combo["dest"], script)
            if os.path.exists(path):
                check = subprocess.run(["bash", "-n", path], capture_output=True, text=True, check=False)
                assert check.returncode == 0, (path, check.stderr)


VALIDATE_PLAYBOOK = """
- name: Validate a description
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Validate
      attestable.ami.kiwi_validate:
        description: "{{ description }}"
        require_attestable: "{{ require_attestable | default(false) }}"
        settings:
          image/preferences/type@verity_blocks: image_description_verity
"""


def test_kiwi_validate_names_the_input_of_a_broken_description(rendered, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(str(rendered["tmp"] / "x86_64" / "defaults"), str(broken))
    path = broken / "appliance.kiwi"
    path.write_text(path.read_text().replace('verity_blocks="all"', 'verity_blocks="most"'))
    proc, results, _data = run_playbook_text(VALIDATE_PLAYBOOK, tmp_path, extra_vars={"description": str(broken)})
    assert proc.returncode != 0
    failed = results["Validate"][-1]
    assert failed["failed"] is True and "schema validation" in failed["msg"]
    assert any("verity_blocks" in line and "image_description_verity" in line for line in failed["errors"]), failed


def test_kiwi_validate_require_attestable_fails_on_an_unattestable_description(rendered, tmp_path):
    proc, results, _data = run_playbook_text(
        VALIDATE_PLAYBOOK, tmp_path,
        extra_vars={"description": str(rendered["tmp"] / "arm64" / "uki-off"), "require_attestable": True})
    assert proc.returncode != 0
    failed = results["Validate"][-1]
    assert "is not attestable" in failed["msg"] and any("UKI" in line for line in failed["errors"])


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
@pytest.mark.parametrize("name", sorted(DEBIAN_COMBINATIONS))
def test_debian_flavour_is_accepted_by_kiwi(rendered, arch, name):
    dest = str(rendered["tmp"] / arch / name)
    record = rendered["records"][dest]
    _variables, expected = DEBIAN_COMBINATIONS[name]
    assert record["description_digest"] == kd.description_digest(dest) and record["distribution"] == "debian"
    summary = kd.load_description(dest)
    findings = kd.attestation_findings(summary)
    assert len(findings) == len(expected), findings
    for part in expected:
        assert any(part in finding for finding in findings), (part, findings)
    dpkg_arch = {"x86_64": "amd64", "arm64": "arm64"}[arch]
    assert "linux-image-cloud-" + dpkg_arch in summary["packages"]
    if summary["bootloader"] != "systemd_boot":
        assert "grub-efi-" + dpkg_arch in summary["packages"]


def _attestation_settings(dest):
    """What decides the image's attestation, read from the rendered XML (everything of <type> but the filesystem
    beside the erofs root), plus the boot hook and the overlay units."""
    root = ET.parse(os.path.join(dest, "appliance.kiwi")).getroot()
    build_type = root.find("preferences/type")
    attributes = dict(build_type.attrib)
    attributes.pop("filesystem")
    return {"type": attributes, "bootloader": build_type.find("bootloader").attrib,
            "setup": [(i.get("action"), [d.attrib for d in i]) for i in build_type.findall("initrd")
                      if i.get("action") == "setup"],
            "oemconfig": ET.tostring(build_type.find("oemconfig"))}


def test_debian_flavour_keeps_every_attestation_setting_of_al2023(rendered):
    for arch in ("x86_64", "arm64"):
        al2023 = str(rendered["tmp"] / arch / "defaults")
        debian = str(rendered["tmp"] / arch / "debian-defaults")
        assert _attestation_settings(debian) == _attestation_settings(al2023)
        with open(os.path.join(al2023, "edit_boot_install.sh")) as one, open(os.path.join(debian, "edit_boot_install.sh")) as two:
            assert one.read() == two.read()  # one hook template, rendered the same for both
        summary = kd.load_description(debian)
        build = summary["build_type"]
        assert build["firmware"] == "uefi" and build["filesystem"] == "ext4"
        assert build["overlayroot_readonly_filesystem"] == "erofs" and build["verity_blocks"] == "all"
        assert "rd.kiwi.verity_options=panic-on-corruption" in build["kernelcmdline"].split()
        assert "console=ttyS0" in build["kernelcmdline"].split()


def test_debian_flavour_repository_is_signed_and_initrd_carries_kiwis_modules(rendered):
    dest = rendered["tmp"] / "arm64" / "debian-defaults"
    root = ET.parse(str(dest / "appliance.kiwi")).getroot()
    assert root.find("preferences/packagemanager").text == "apt"
    assert root.find("preferences/rpm-check-signatures").text == "true"
    repos = root.findall("repository")
    assert len(repos) == 1
    repo = repos[0]
    assert repo.get("type") == "apt-deb" and repo.get("distribution") == "bookworm" and repo.get("architectures") == "arm64"
    assert repo.get("repository_gpgcheck") == "true"
    assert repo.find("source").get("path") == "https://deb.debian.org/debian"
    assert repo.find("source/signing").get("key") == "file:///usr/share/keyrings/debian-archive-keyring.gpg"
    assert root.findall("packages[@type='image']/namedCollection") == []
    added = [d.get("module") for i in root.findall("preferences/type/initrd[@action='add']") for d in i]
    assert added == ["kiwi-verity", "bash"]
    # KIWI's own modules, byte for byte as the role ships them (and their licence with them).
    shipped = os.path.join(ROLE, "files", "debian", "dracut")
    modules = (("90kiwi-overlay", ["kiwi-generator.sh", "kiwi-overlay-root.sh", "module-setup.sh", "parse-kiwi-overlay.sh"]),
               ("50kiwi-verity", ["kiwi-veritytab-setup.sh", "module-setup.sh"]))
    for module, names in modules:
        rel = os.path.join("usr", "lib", "dracut", "modules.d", module)
        assert sorted(os.listdir(str(dest / "root" / rel))) == names
        for name in names:
            with open(str(dest / "root" / rel / name), "rb") as one, open(os.path.join(shipped, rel, name), "rb") as two:
                assert one.read() == two.read()
            assert os.stat(str(dest / "root" / rel / name)).st_mode & stat.S_IXUSR
    assert os.path.exists(os.path.join(shipped, "LICENSE"))
    with open(str(dest / "config.sh")) as handle:
        config = handle.read()
    assert "openssh-server" in config and "cloud-init" in config and "exit 1" in config
    # The AL2023 rendering has none of it.
    al2023 = rendered["tmp"] / "arm64" / "defaults"
    assert not (al2023 / "root" / "usr" / "lib" / "dracut").exists()
    assert "dpkg-query" not in (al2023 / "config.sh").read_text()


def test_every_rendering_reports_userspace_on_the_console(rendered):
    for combo in rendered["combos"]:
        unit = os.path.join(combo["dest"], "root", "etc", "systemd", "system", "attestable-userspace-marker.service")
        with open(unit) as handle:
            text = handle.read()
        assert "ExecStart=/bin/echo ATTESTABLE-USERSPACE-REACHED" in text and "console" in text
        assert "WantedBy=multi-user.target" in text and "After=multi-user.target" in text
        with open(os.path.join(combo["dest"], "config.sh")) as handle:
            assert "systemctl enable attestable-userspace-marker.service" in handle.read()


def _jing(schema_gz, description, tmp_path):
    schema = tmp_path / os.path.basename(schema_gz)[:-3]
    with gzip.open(schema_gz, "rb") as source:
        schema.write_bytes(source.read())
    return subprocess.run(["jing", str(schema), os.path.join(description, "appliance.kiwi")],
                          capture_output=True, text=True, check=False)


@pytest.mark.skipif(shutil.which("jing") is None, reason="jing validates against an older KIWI's RelaxNG schema")
def test_schema_version_is_the_lowest_that_expresses_the_description(rendered, tmp_path):
    """schemaversion 8.3 (KIWI upgrades older versions, refuses newer ones); KIWI 10.2.23, the oldest the role
    claims, validates every rendering, and 10.2.22 (also 8.3) does not know <initrd> in <type> yet."""
    for combo in rendered["combos"]:
        root = ET.parse(os.path.join(combo["dest"], "appliance.kiwi")).getroot()
        assert root.get("schemaversion") == "8.3", combo["dest"]
        oldest = _jing(os.path.join(SCHEMAS, "kiwi-10.2.23.rng.gz"), combo["dest"], tmp_path)
        assert oldest.returncode == 0, (combo["dest"], oldest.stdout)
    too_old = _jing(os.path.join(SCHEMAS, "kiwi-10.2.22.rng.gz"), str(rendered["tmp"] / "x86_64" / "defaults"), tmp_path)
    assert too_old.returncode != 0 and 'element "initrd" not allowed here' in too_old.stdout


def test_debian_only_settings_are_checked(tmp_path):
    for variables, expected in (({"image_description_distribution": "fedora"}, ["image_description_distribution", "fedora"]),
                                ({"image_description_distribution": "debian", "image_description_collections": ["core", "web"]},
                                 ["image_description_collections", "apt"]),
                                ({"image_description_distribution": "debian", "image_description_debian_mirror": "deb.debian.org"},
                                 ["image_description_debian_mirror", "deb.debian.org"])):
        dest = tmp_path / "description"
        proc, _results, data = run_playbook_text(ROLE_PLAYBOOK, tmp_path, extra_vars=dict(variables, image_description_dest=str(dest)))
        assert proc.returncode != 0
        message = json.dumps([r.get("msg") for play in data.get("plays", []) for task in play["tasks"]
                              for r in task["hosts"].values() if r.get("failed")])
        for part in expected:
            assert part in message, (part, message)
        assert not dest.exists()
