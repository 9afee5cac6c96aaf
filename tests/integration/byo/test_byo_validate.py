# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring-your-own descriptions through attestable.ami.build_and_publish up to the build (real ansible-playbook,
real KIWI loader, a real moto server over HTTP as AWS where the pipeline could reach it).

This machine cannot reach AL2023's repositories, so the user-style AL2023 descriptions (tests/descriptions/*/
description, whichever exist) go as far as --check takes them: kiwi_validate on the controller reports
attestable and its findings, and the run stops before the builder. Each runs on a copy (the user's folder) that
must stay byte-for-byte, mode and mtime unchanged. test_byo_build.py builds one for real.
"""
import os
import shutil

import boto3
import pytest

import playbook_runner
from byo_testlib import copy_folder, description_id, failures, run_pipeline, tree_state, user_descriptions

pytest.importorskip("kiwi", reason="kiwi_validate needs the KIWI NG Python package")

HERE = os.path.dirname(os.path.abspath(__file__))
UEFI = os.path.join(playbook_runner.ROOT, "tests", "integration", "kiwi_modules", "descriptions", "uefi-attestable")
VALIDATED = "Validate the description on the controller before a builder is used"
REFUSED = "Refuse an unattestable description unless it is allowed"
CHECKED_SRC = "Check the description you brought"
STOPPED = "Say that --check stops here"
# What the pipeline must say of the descriptions we know (attestable, unattestable findings as (setting, value)).
EXPECTED = {
    "uefi-attestable": (True, set()),
    "ci-runner": (True, set()),
    "db-appliance": (True, set()),
    "enclave": (True, set()),
}

VALIDATE = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: validate
      attestable.ami.kiwi_validate:
        description: "{{ description }}"
"""


def _base_vars(tmp_path, folder, **more):
    extra = {"attestable_description_src": str(folder), "attestable_artifacts_dir": str(tmp_path / "artifacts"),
             "attestable_remote_dir": str(tmp_path / "builder"), "attestable_aws_region": "us-east-1"}
    extra.update(more)
    return extra


def _edit(folder, old, new, name="appliance.kiwi"):
    path = os.path.join(str(folder), name)
    with open(path) as handle:
        text = handle.read()
    assert old in text, old
    with open(path, "w") as handle:
        handle.write(text.replace(old, new))


@pytest.mark.parametrize("source", user_descriptions(), ids=description_id)
def test_a_users_description_is_validated_before_the_builder_and_left_unchanged(source, tmp_path):
    folder = copy_folder(source, str(tmp_path / "my-description"))
    before = tree_state(folder)
    proc, direct, _data = playbook_runner.run(VALIDATE, tmp_path, extra_vars={"description": folder})
    alone = direct["validate"][-1]
    assert proc.returncode == 0, alone

    # Allowed either way: --check validates and stops before the builder.
    proc, results = run_pipeline(tmp_path, _base_vars(tmp_path, folder, attestable_allow_unattestable=True), check=True)
    assert proc.returncode == 0, failures(results)
    checked = results[VALIDATED][-1]
    assert (checked["attestable"], checked["unattestable"], checked["findings"]) == \
        (alone["attestable"], alone["unattestable"], alone["findings"])
    assert checked["description_digest"] == alone["description_digest"]
    assert all(ref["exists"] is not False for ref in checked["references"])
    assert STOPPED in results
    # Nothing past the stop ran: no builder, no build, no rendering; --check created no artifact directory.
    past_the_stop = ("Provide the builder", "Check the build settings", "Render appliance.kiwi", "Copy the description")
    assert not [name for name in results if name.startswith(past_the_stop)]
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "builder").exists()
    name = description_id(source)
    if name in EXPECTED:
        attestable, flagged = EXPECTED[name]
        assert checked["attestable"] is attestable
        assert {(f["setting"], f["value"]) for f in checked["findings"] if f["severity"] == "unattestable"} == flagged

    # Not allowed (the default): an unattestable description is refused, naming why, before the builder.
    proc, results = run_pipeline(tmp_path, _base_vars(tmp_path, folder), check=True)
    if checked["attestable"]:
        assert proc.returncode == 0 and STOPPED in results, failures(results)
    else:
        refusal = results[REFUSED][-1]
        assert proc.returncode != 0 and refusal["failed"]
        assert all(line in refusal["msg"] for line in checked["unattestable"]), refusal["msg"]
        assert "attestable_allow_unattestable: true" in refusal["msg"]
        assert STOPPED not in results
    assert tree_state(folder) == before

    # Each file the folder references, missing: the run stops at the validation, naming it, before the builder.
    local = [ref for ref in checked["references"] if ref["resolved"].startswith(folder + os.sep)]
    assert local, checked["references"]
    for ref in local:
        os.rename(ref["resolved"], ref["resolved"] + ".away")
        proc, results = run_pipeline(tmp_path, _base_vars(tmp_path, folder), check=True)
        os.rename(ref["resolved"] + ".away", ref["resolved"])
        failed = results[VALIDATED][-1]
        assert proc.returncode != 0 and failed["failed"] and STOPPED not in results
        assert [line for line in failed["errors"] if ref["path"] in line and "no such" in line], failed["errors"]


def test_an_unattestable_folder_is_refused_unless_allowed(tmp_path):
    folder = copy_folder(UEFI, str(tmp_path / "my-description"))
    _edit(folder, '<package name="binutils"/>', '<package name="binutils"/><package name="openssh-server"/>')
    _edit(folder, "rd.shell=0 ", "")
    before = tree_state(folder)
    proc, results = run_pipeline(tmp_path, _base_vars(tmp_path, folder), check=True)
    refusal = results[REFUSED][-1]
    assert proc.returncode != 0 and refusal["failed"], failures(results)
    assert "openssh-server" in refusal["msg"] and "no shell in the initrd" in refusal["msg"]
    assert results[VALIDATED][-1]["attestable"] is False

    proc, results = run_pipeline(tmp_path, _base_vars(tmp_path, folder, attestable_allow_unattestable=True), check=True)
    assert proc.returncode == 0, failures(results)
    warned = results["Warn that an unattestable description is built because it is allowed"][-1]["msg"]
    assert warned.startswith("WARNING: ") and "openssh-server" in warned
    assert STOPPED in results
    assert tree_state(folder) == before


@pytest.fixture
def ec2(moto_server):
    return boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1")


def test_a_missing_referenced_script_fails_before_any_builder_exists(moto_server, ec2, tmp_path):
    folder = copy_folder(UEFI, str(tmp_path / "my-description"))
    os.remove(os.path.join(folder, "customize-repo.sh"))
    before = tree_state(folder)
    groups = ec2.describe_security_groups()["SecurityGroups"]
    # The builder role's settings for moto (tests/integration/builder/conftest.py): it could launch one here.
    extra = _base_vars(tmp_path, folder, builder_mode="ec2", attestable_aws_endpoint_url=moto_server,
                       builder_ssh_cidr="198.51.100.7", builder_wait_for_connection=False,
                       builder_install_packages=False, builder_upload_on_builder=False)
    proc, results = run_pipeline(tmp_path, extra)
    assert proc.returncode != 0
    failed = results[VALIDATED][-1]
    assert failed["failed"] and "references files that do not exist" in failed["msg"]
    assert any("customize-repo.sh" in line and "no such file" in line for line in failed["errors"]), failed["errors"]
    assert [r for r in failures(results) if r is not failed] == []
    # Nothing was launched or created on "AWS", and nothing was written into the user's folder.
    assert ec2.describe_instances()["Reservations"] == []
    assert ec2.describe_security_groups()["SecurityGroups"] == groups
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert not [name for name in results if name.startswith("Provide the builder")]
    assert tree_state(folder) == before


def test_the_deprecated_attestable_description_path_still_works(tmp_path):
    folder = copy_folder(UEFI, str(tmp_path / "my-description"))
    extra = _base_vars(tmp_path, folder)
    extra["attestable_description_path"] = extra.pop("attestable_description_src")
    proc, results = run_pipeline(tmp_path, extra, check=True)
    assert proc.returncode == 0, failures(results)
    warning = results["Warn that attestable_description_path is deprecated"][-1]["msg"]
    assert "deprecated" in warning and "attestable_description_src" in warning
    assert results[VALIDATED][-1]["description"]["config_file"] == os.path.join(folder, "appliance.kiwi")

    # Both names, naming different folders: refused rather than guessed.
    other = copy_folder(UEFI, str(tmp_path / "other"))
    proc, results = run_pipeline(tmp_path, dict(extra, attestable_description_src=other), check=True)
    assert proc.returncode != 0 and "differs from it" in results[CHECKED_SRC][-1]["msg"]


def test_a_folder_where_the_pipeline_writes_is_refused_and_kept(tmp_path):
    """The reported loss: a user's folder where the pipeline renders (attestable_artifacts_dir/description) lost its
    root/ files. A folder inside the artifact or builder directory is refused, before anything is written."""
    artifacts = tmp_path / "artifacts"
    folder = copy_folder(UEFI, str(artifacts / "description"))
    os.makedirs(os.path.join(folder, "root", "etc", "my-appliance"))
    with open(os.path.join(folder, "root", "etc", "my-appliance", "settings.conf"), "w") as handle:
        handle.write("role=appliance\n")
    before = tree_state(folder)
    for check in (True, False):
        proc, results = run_pipeline(tmp_path, _base_vars(tmp_path, folder), check=check)
        refusal = results[CHECKED_SRC][-1]
        assert proc.returncode != 0 and refusal["failed"]
        assert "outside attestable_artifacts_dir" in refusal["msg"] and str(artifacts) in refusal["msg"]
        assert "Render appliance.kiwi" not in results and VALIDATED not in results
        assert tree_state(folder) == before
    # The builder's directory on this machine, and a folder that holds it, are refused too.
    for remote in (os.path.join(folder, "build"), os.path.dirname(folder)):
        proc, results = run_pipeline(tmp_path, _base_vars(tmp_path, folder, attestable_artifacts_dir=str(tmp_path / "a2"),
                                                          attestable_remote_dir=remote), check=True)
        assert proc.returncode != 0 and "attestable_remote_dir" in results[CHECKED_SRC][-1]["msg"]
    assert tree_state(folder) == before
    shutil.rmtree(str(artifacts))


def test_check_mode_renders_our_description_into_a_temporary_directory_only(tmp_path):
    """Without a folder of the user's, --check renders the role's description (to validate it) where nothing stays."""
    proc, results = run_pipeline(tmp_path, {"attestable_artifacts_dir": str(tmp_path / "artifacts"),
                                            "attestable_aws_region": "us-east-1",
                                            "image_description_distribution": "debian"}, check=True)
    assert proc.returncode == 0, failures(results)
    checked = results[VALIDATED][-1]
    rendered = os.path.dirname(checked["description"]["config_file"])
    assert checked["attestable"] is True and os.path.basename(rendered).startswith("attestable-description-check.")
    assert not os.path.exists(rendered) and not (tmp_path / "artifacts").exists()
    assert STOPPED in results


def test_the_image_build_role_alone_refuses_a_folder_holding_where_it_writes(tmp_path):
    folder = copy_folder(UEFI, str(tmp_path / "my-description"))
    before = tree_state(folder)
    playbook = """
    - hosts: localhost
      gather_facts: false
      tasks:
        - name: Validate with the role
          ansible.builtin.include_role:
            name: attestable.ami.image_build
            tasks_from: validate
    """
    for artifacts, remote, refused in ((os.path.join(folder, "artifacts"), str(tmp_path / "b"), True),
                                       (str(tmp_path / "a"), os.path.join(folder, "build"), True),
                                       (str(tmp_path / "a"), str(tmp_path), True),
                                       (str(tmp_path / "a"), str(tmp_path / "b"), False)):
        proc, results, _data = playbook_runner.run(playbook, tmp_path, extra_vars={
            "image_build_description": folder, "image_build_artifacts_dir": artifacts,
            "image_build_remote_dir": remote})
        named = {name.split(" : ", 1)[-1]: r for name, r in results.items()}
        check = named["Refuse a description folder where this role writes"][-1]
        assert bool(check.get("failed")) is refused and (proc.returncode != 0) is refused, (artifacts, remote, check)
        assert (VALIDATED in named) is not refused
    assert tree_state(folder) == before
