# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiwi_build helpers: reading KIWI's results and log, the veritytab, the idempotence marker, target directory
safety, and the process runner (with real processes; the real kiwi-ng runs in tests/integration/kiwi).

The log excerpts below are lines copied from a real kiwi-ng 11.1.6 build of tests/integration/kiwi's
debian-oem-verity description, so the parsers are checked against KIWI's actual wording.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import build as kb

REAL_LOG = """\
[ INFO    ]: 04:59:27 | --> Creating dm verity hash (all blocks)...
[ DEBUG   ]: 04:59:27 | EXEC: [veritysetup format /var/tmp/kiwi_y55unteb /var/tmp/kiwi_y55unteb --hash-offset=192655360 --hash-block-size=4096]
[ DEBUG   ]: 04:59:27 | --> dm verity metadata: {'UUID': '1d748b6f-1f26-44d2-89f5-55da3184558a', 'Hashtype': '1', \
'Datablocks': '47035', 'Datablocksize': '4096', 'Hashblocks': '372', 'Hashblocksize': '4096', 'Hashalgorithm': 'sha256', \
'Salt': '4de8be972447d7c14b849b4b19f0e45daaddc978fca9fe30609215bf4852914f', \
'Roothash': '00d430f4714ccfc80bd43279acdb4e823bba9b1d04fcd0f220519a402fe0db4c'}
[ INFO    ]: 04:59:30 | Creating generic boot image etc/veritytab
"""
ROOT_HASH = "00d430f4714ccfc80bd43279acdb4e823bba9b1d04fcd0f220519a402fe0db4c"
VERITYTAB = ("verityroot UUID=80dc5411-876d-474a-9fc5-645aa7537316 UUID=80dc5411-876d-474a-9fc5-645aa7537316 "
             + ROOT_HASH + " hash-offset=192655360,hash-block-size=4096\n")


def test_verity_from_log_reads_root_hash_and_hash_offset(tmp_path):
    log = tmp_path / "kiwi.log"
    log.write_text("[ INFO    ]: 04:59:00 | earlier\n" + REAL_LOG)
    verity = kb.verity_from_log(str(log))
    assert verity["root_hash"] == ROOT_HASH
    assert verity["hash_offset"] == 192655360 and verity["hash_block_size"] == 4096
    assert verity["data_blocks"] * verity["data_block_size"] == verity["hash_offset"]  # verity_blocks="all"
    assert verity["salt"].startswith("4de8be97")


def test_verity_from_log_takes_the_last_format(tmp_path):
    log = tmp_path / "kiwi.log"
    log.write_text(REAL_LOG + REAL_LOG.replace(ROOT_HASH, "ab" * 32).replace("192655360", "4096"))
    verity = kb.verity_from_log(str(log))
    assert verity["root_hash"] == "ab" * 32 and verity["hash_offset"] == 4096


def test_verity_from_log_without_verity(tmp_path):
    log = tmp_path / "kiwi.log"
    log.write_text("[ INFO    ]: 04:59:00 | Creating erofs image\n")
    assert kb.verity_from_log(str(log)) is None
    assert kb.verity_from_log(str(tmp_path / "missing.log")) is None


def test_parse_veritytab():
    entry = kb.parse_veritytab("# comment\n" + VERITYTAB)
    assert entry["root_hash"] == ROOT_HASH and entry["name"] == "verityroot"
    assert entry["hash_offset"] == 192655360 and entry["hash_block_size"] == 4096
    assert entry["data_device"].startswith("UUID=")
    assert kb.parse_veritytab("verityroot a b not-hex\n") is None
    assert kb.parse_veritytab("") is None


def test_parse_packages(tmp_path):
    path = tmp_path / "image.packages"
    path.write_text("adduser|None|3.134|None|all|None|None\n"
                    "kernel|0|6.1.119|129.201.amzn2023|x86_64|(none)|GPLv2\n"
                    "bash|1|5.2|None|amd64|None|None\n\n")
    assert kb.parse_packages(str(path)) == [
        {"name": "adduser", "version": "3.134", "arch": "all"},
        {"name": "kernel", "version": "6.1.119-129.201.amzn2023", "arch": "x86_64"},
        {"name": "bash", "version": "1:5.2", "arch": "amd64"},
    ]
    assert kb.parse_packages(None) == []


def make_build(target, with_hook=False, log_text=REAL_LOG):
    """A target directory laid out as kiwi-ng 11 leaves it (names as in a real build)."""
    target.mkdir(exist_ok=True)
    disk = target / "img.x86_64-1.0.0.raw"
    disk.write_bytes(b"\0" * 1024)
    packages = target / "img.x86_64-1.0.0.packages"
    packages.write_text("kernel|None|6.1|1|x86_64|None|None\n")
    result = {
        "disk_image": {"compress": True, "filename": str(disk), "shasum": True, "use_for_bundle": True},
        "image_packages": {"compress": False, "filename": str(packages), "shasum": False, "use_for_bundle": True},
    }
    (target / "kiwi.result.json").write_text(json.dumps(result))
    log = target / "kiwi-build.log"
    log.write_text(log_text)
    if with_hook:
        (target / "img.x86_64-1.0.0.efi").write_bytes(b"MZ")
        (target / "img.x86_64-1.0.0.veritytab").write_text(VERITYTAB)
        (target / "pcr_measurements.json").write_text(json.dumps(
            {"Measurements": {"HashAlgorithm": "SHA384", "PCR4": "a" * 96, "PCR7": "b" * 96, "PCR12": "0" * 96}}))
    return result, str(log)


def test_collect_without_hook_uses_the_log(tmp_path):
    result, log = make_build(tmp_path / "t")
    collected = kb.collect(str(tmp_path / "t"), log)
    assert collected["disk"] == result["disk_image"]["filename"] == collected["image"]
    assert collected["uki"] is None and collected["pcr_measurements"] is None
    assert collected["veritytab"]["source"] == "log" and collected["root_hash"] == ROOT_HASH
    assert collected["result"] == result
    assert collected["packages"] == [{"name": "kernel", "version": "6.1-1", "arch": "x86_64"}]


def test_collect_with_hook_files(tmp_path):
    make_build(tmp_path / "t", with_hook=True)
    collected = kb.collect(str(tmp_path / "t"), str(tmp_path / "t" / "kiwi-build.log"))
    assert collected["uki"].endswith("img.x86_64-1.0.0.efi")
    assert collected["veritytab"]["source"] == "initrd"
    assert collected["veritytab"]["path"].endswith(".veritytab")
    assert collected["veritytab"]["salt"].startswith("4de8be97")  # completed from the log
    assert collected["pcr_measurements"]["PCR12"] == "0" * 96


def test_collect_refuses_a_uki_whose_root_hash_differs_from_the_log(tmp_path):
    make_build(tmp_path / "t", with_hook=True, log_text=REAL_LOG.replace(ROOT_HASH, "cd" * 32))
    with pytest.raises(kb.KiwiBuildError, match="do not belong together"):
        kb.collect(str(tmp_path / "t"), str(tmp_path / "t" / "kiwi-build.log"))


def test_collect_without_result_json_is_an_error(tmp_path):
    with pytest.raises(kb.KiwiBuildError, match="kiwi.result.json"):
        kb.collect(str(tmp_path), str(tmp_path / "log"))


def test_marker_round_trip_and_mismatches(tmp_path):
    target = tmp_path / "t"
    make_build(target)
    key = kb.build_key("sha256:" + "1" * 64, ["b", "a"], ["--x"], None)
    assert kb.up_to_date(str(target), key)[0] is False
    collected = kb.collect(str(target), str(target / "kiwi-build.log"))
    kb.write_marker(str(target), key, collected)
    ok, previous = kb.up_to_date(str(target), kb.build_key("sha256:" + "1" * 64, ["a", "b"], ["--x"], None))
    assert ok is True and previous["root_hash"] == ROOT_HASH
    ok, reason = kb.up_to_date(str(target), kb.build_key("sha256:" + "2" * 64, ["a", "b"], ["--x"], None))
    assert ok is False and "description_digest" in reason
    ok, reason = kb.up_to_date(str(target), kb.build_key("sha256:" + "1" * 64, ["a", "b"], [], None))
    assert ok is False and "kiwi_args" in reason
    os.remove(collected["disk"])
    ok, reason = kb.up_to_date(str(target), key)
    assert ok is False and "gone" in reason


def test_corrupt_marker_means_rebuild(tmp_path):
    (tmp_path / kb.MARKER_NAME).write_text("{not json")
    assert kb.read_marker(str(tmp_path)) is None


def test_target_dir_must_be_empty_or_an_earlier_build(tmp_path):
    kb.check_target_dir(str(tmp_path / "new"))
    kb.check_target_dir(str(tmp_path))
    (tmp_path / "holiday.jpg").write_text("x")
    with pytest.raises(kb.KiwiBuildError, match="not an earlier KIWI build"):
        kb.check_target_dir(str(tmp_path))
    (tmp_path / "kiwi.result.json").write_text("{}")
    kb.check_target_dir(str(tmp_path))
    only_log = tmp_path / "logonly"
    only_log.mkdir()
    (only_log / "kiwi-build.log").write_text("")
    kb.check_target_dir(str(only_log), str(only_log / "kiwi-build.log"))


def test_clean_previous_build_removes_build_tree_and_results(tmp_path):
    make_build(tmp_path)
    (tmp_path / "build" / "image-root" / "etc").mkdir(parents=True)
    (tmp_path / kb.MARKER_NAME).write_text("{}")
    kb.clean_previous_build(str(tmp_path))
    assert not (tmp_path / "build").exists()
    assert not (tmp_path / kb.MARKER_NAME).exists() and not (tmp_path / "kiwi.result.json").exists()


def test_clean_previous_build_never_crosses_a_mount(tmp_path, monkeypatch):
    """A crashed KIWI leaves /proc, /dev bound into build/image-root: rmtree there would be a disaster."""
    (tmp_path / "build" / "image-root" / "proc").mkdir(parents=True)
    mounted = str(tmp_path / "build" / "image-root" / "proc")
    # mountinfo is the kernel's; pretend one bind mount is left (mounting needs privileges tests do not assume).
    monkeypatch.setattr(kb, "mounts_under", lambda path: [mounted] if path.endswith("build") else [])
    with pytest.raises(kb.KiwiBuildError, match="umount"):
        kb.clean_previous_build(str(tmp_path))
    assert os.path.isdir(mounted)


def test_mounts_under_reads_mountinfo():
    assert "/" in kb.mounts_under("/")
    assert kb.mounts_under("/nonexistent-attestable-path") == []


def test_build_command():
    command = kb.build_command("/usr/bin/kiwi-ng", "/d", "/t", "/t/log", ["p1"], ["--set-type-attr", "a=b"], "/c.yml")
    assert command == ["/usr/bin/kiwi-ng", "--logfile", "/t/log", "--config", "/c.yml", "--profile", "p1",
                       "system", "build", "--description", "/d", "--target-dir", "/t", "--set-type-attr", "a=b"]


def test_run_build_streams_the_log_and_returns_the_exit_code(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("stale line from an earlier build\n")
    script = "import sys; open(sys.argv[1], 'a').write('[ ERROR   ]: 00:00:01 | KiwiError: boom\\n'); sys.exit(3)"
    rc = kb.run_build([sys.executable, "-c", script, str(log)], str(log), timeout=60)
    assert rc == 3
    assert "stale line" not in log.read_text()
    assert kb.error_lines(str(log)) == ["[ ERROR   ]: 00:00:01 | KiwiError: boom"]


def test_run_build_stops_a_build_that_takes_too_long(tmp_path):
    log = tmp_path / "build.log"
    start = time.time()
    with pytest.raises(kb.KiwiBuildError, match="did not finish within 1 seconds"):
        kb.run_build([sys.executable, "-c", "import time; time.sleep(60)"], str(log), timeout=1)
    assert time.time() - start < 30


def test_error_lines_keep_continuations_and_skip_debug_noise(tmp_path):
    log = tmp_path / "log"
    log.write_text("[ DEBUG   ]: 01:00:00 | EXEC: [apt-get install foo]\n"
                   "[ ERROR   ]: 01:00:01 | KiwiInstallPhaseFailed: System package installation failed:\n"
                   "E: Unable to locate package no-such-package\n"
                   "[ DEBUG   ]: 01:00:02 | cleanup\n")
    assert kb.error_lines(str(log)) == [
        "[ ERROR   ]: 01:00:01 | KiwiInstallPhaseFailed: System package installation failed:",
        "E: Unable to locate package no-such-package",
    ]
    quiet = tmp_path / "quiet"
    quiet.write_text("".join("[ INFO    ]: 01:00:%02d | step %d\n" % (i, i) for i in range(30)))
    assert kb.error_lines(str(quiet))[-1].endswith("step 29") and len(kb.error_lines(str(quiet))) == 15


def test_find_kiwi_ng(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    assert kb.find_kiwi_ng(str(fake_bin / "kiwi-ng")) is None
    exe = fake_bin / "kiwi-ng"
    exe.write_text("#!/bin/sh\n")
    os.chmod(str(exe), 0o755)
    assert kb.find_kiwi_ng(str(exe)) == str(exe)
    found = kb.find_kiwi_ng(search_path=str(fake_bin))
    assert found and found.endswith("kiwi-ng")


# --- the UKI from the disk's ESP, and kiwi-ng's environment ----------------------------------------------------

ESP_TOOLS = ("mkfs.vfat", "mmd", "mcopy", "sgdisk", "objcopy")
STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
SYSTEMD_BOOT = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
needs_esp_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in ESP_TOOLS) or not os.path.isfile(STUB),
                                     reason="dosfstools, mtools, gdisk, binutils or systemd-boot-efi not installed")


def uki_bytes(tmp_path, size=300000):
    """A UKI as dracut and ukify make one: systemd's stub with a .linux section (random bytes stand for the kernel)."""
    kernel = tmp_path / ("kernel-%d" % size)
    kernel.write_bytes(os.urandom(size))
    out = tmp_path / ("uki-%d.efi" % size)
    subprocess.run(["objcopy", "--add-section", ".linux=%s" % kernel, "--change-section-vma", ".linux=0x2000000",
                    STUB, str(out)], check=True)
    data = out.read_bytes()
    assert kb.is_uki(str(out))
    os.unlink(str(out))
    os.unlink(str(kernel))
    return data


def put_gpt_disk(target, uki_bytes, loader="EFI/BOOT/BOOTX64.EFI"):
    """Replace make_build's placeholder disk with a real GPT disk whose ESP boots uki_bytes (as uki-to-disk.py)."""
    from ansible_collections.attestable.ami.plugins.module_utils._boot import esp as esp_image

    uki = target / "made.efi"
    uki.write_bytes(uki_bytes)
    esp = esp_image.make_esp(str(target / "esp.img"), {loader: str(uki), "loader/loader.conf": str(uki)})
    esp_image.make_gpt_disk(str(target / "img.x86_64-1.0.0.raw"), esp)
    os.unlink(str(uki))
    os.unlink(esp)


@needs_esp_tools
def test_collect_reads_the_uki_from_the_esp_when_the_hook_did_not_copy_it(tmp_path):
    target = tmp_path / "t"
    make_build(target)
    uki = uki_bytes(tmp_path, 1500000)
    put_gpt_disk(target, uki)
    collected = kb.collect(str(target), str(target / "kiwi-build.log"))
    assert collected["uki_source"] == "esp"
    assert collected["uki"] == str(target / "img.x86_64-1.0.0.efi")
    assert open(collected["uki"], "rb").read() == uki
    assert sorted(os.listdir(str(target))) == sorted(["img.x86_64-1.0.0.raw", "img.x86_64-1.0.0.efi",
                                                      "img.x86_64-1.0.0.packages", "kiwi.result.json",
                                                      "kiwi-build.log"])


@needs_esp_tools
def test_collect_keeps_the_hook_copy_when_it_is_what_the_esp_boots(tmp_path):
    target = tmp_path / "t"
    make_build(target, with_hook=True)
    uki = uki_bytes(tmp_path)
    put_gpt_disk(target, uki)
    (target / "img.x86_64-1.0.0.efi").write_bytes(uki)
    collected = kb.collect(str(target), str(target / "kiwi-build.log"))
    assert collected["uki_source"] == "hook" and open(collected["uki"], "rb").read() == uki
    assert not [n for n in os.listdir(str(target)) if n.endswith(".esp")]


@needs_esp_tools
def test_collect_refuses_a_hook_copy_that_is_not_what_the_esp_boots(tmp_path):
    target = tmp_path / "t"
    make_build(target, with_hook=True)
    put_gpt_disk(target, uki_bytes(tmp_path))
    with pytest.raises(kb.KiwiBuildError, match="differs from the one the disk's ESP boots"):
        kb.collect(str(target), str(target / "kiwi-build.log"))


@needs_esp_tools
@pytest.mark.parametrize("loader", [SYSTEMD_BOOT, STUB])
def test_an_esp_that_boots_a_boot_loader_instead_of_the_uki_has_no_uki(tmp_path, loader):
    """A hook that leaves systemd-boot (or GRUB) as EFI/BOOT/BOOTX64.EFI: measuring that alone would give reference
    values of something other than what boots, so the build has no UKI (image_build then refuses it)."""
    if not os.path.isfile(loader):
        pytest.skip("%s not installed" % loader)
    target = tmp_path / "t"
    make_build(target)
    with open(loader, "rb") as handle:
        put_gpt_disk(target, handle.read())
    collected = kb.collect(str(target), str(target / "kiwi-build.log"))
    assert collected["uki"] is None and collected["uki_source"] is None
    assert not os.path.exists(str(target / "img.x86_64-1.0.0.efi"))


def test_collect_of_a_disk_without_gpt_has_no_uki(tmp_path):
    make_build(tmp_path / "t")  # the placeholder disk: no GPT, as a BIOS/MBR disk
    collected = kb.collect(str(tmp_path / "t"), str(tmp_path / "t" / "kiwi-build.log"))
    assert collected["uki"] is None and collected["uki_source"] is None


@pytest.mark.parametrize("filesystems, expected", [
    ("nodev\tsysfs\n\text4\nnodev\tramfs\n", {"SYSTEMD_RELAX_ESP_CHECKS": "1"}),
    ("nodev\tsysfs\n\text4\n\tvfat\n", {}),
])
def test_relax_esp_checks_only_without_vfat(tmp_path, filesystems, expected):
    proc = tmp_path / "filesystems"
    proc.write_text(filesystems)
    assert kb.build_environment({}, str(proc)) == expected
    assert kb.build_environment({"HTTPS_PROXY": "http://proxy:3128"}, str(proc)) == dict(
        expected, HTTPS_PROXY="http://proxy:3128")
    assert kb.build_environment({"SYSTEMD_RELAX_ESP_CHECKS": "0"}, str(proc)) == {"SYSTEMD_RELAX_ESP_CHECKS": "0"}
    assert kb.build_environment({}, str(tmp_path / "unreadable")) == {}


def test_environment_values_and_names(tmp_path):
    assert kb.environment_strings({"A": 1, "B": True, "C": "x"}) == {"A": "1", "B": "true", "C": "x"}
    for bad in ({"1A": "x"}, {"A-B": "x"}, {"A": None}, {"A": ["x"]}):
        with pytest.raises(kb.KiwiBuildError, match="environment"):
            kb.environment_strings(bad)


def test_run_build_passes_the_environment(tmp_path):
    log = tmp_path / "build.log"
    script = "import os, sys; open(sys.argv[1], 'a').write(os.environ.get('SYSTEMD_RELAX_ESP_CHECKS', '-'))"
    assert kb.run_build([sys.executable, "-c", script, str(log)], str(log), timeout=60,
                        environment={"SYSTEMD_RELAX_ESP_CHECKS": "1"}) == 0
    assert log.read_text() == "1"


def test_build_key_counts_the_environment_only_when_given():
    assert "environment" not in kb.build_key("sha256:x", [], [], None, {})
    assert kb.build_key("sha256:x", [], [], None, {"A": "1"}) != kb.build_key("sha256:x", [], [], None, {"A": "2"})


def test_run_build_does_not_pass_the_callers_tmpdir(tmp_path, monkeypatch):
    # KIWI's Debian bootstrap runs mktemp inside the image root, where the caller's TMPDIR does not exist.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    log = tmp_path / "kiwi.log"
    script = "import os, sys; open(sys.argv[1], 'a').write(repr(os.environ.get('TMPDIR')))"
    assert kb.run_build([sys.executable, "-c", script, str(log)], str(log), timeout=60) == 0
    assert log.read_text() == "None"
    assert kb.run_build([sys.executable, "-c", script, str(log)], str(log), timeout=60,
                        environment={"TMPDIR": "/var/tmp"}) == 0
    assert log.read_text() == "'/var/tmp'"
