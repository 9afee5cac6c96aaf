# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kms_authorize role against a real moto server: several keys incl. a multi-Region replica, from a manifest
and from an AMI id, retire, manifest records, and a bad key that stops the run before any policy changes."""
import json

from authorize_helpers import APP_ROLE, SAFE_POLICY, measurements

from ansible_collections.attestable.ami.plugins.module_utils._aws.kms_policy_simulator import allows

ROLE_PLAY = """
- name: Run kms_authorize
  hosts: localhost
  gather_facts: false
  roles:
    - role: attestable.ami.kms_authorize
"""

PREFIX = "attestable.ami.kms_authorize : "
A, B = measurements("a" * 96), measurements("b" * 96)


def owned(policy):
    return [s["Sid"] for s in policy["Statement"] if s.get("Sid", "").startswith("AttestableAMI-")]


def role_vars(aws, **extra):
    base = {"kms_authorize_aws_endpoint_url": aws.url, "kms_authorize_aws_region": "us-east-1",
            "kms_authorize_principals": [APP_ROLE]}
    base.update(extra)
    return base


def test_authorize_from_manifest_and_ami_then_retire(aws, run_playbook, tmp_path):
    single = aws.create_key(SAFE_POLICY)
    primary = aws.create_key(SAFE_POLICY, multi_region=True)
    replica = aws.replicate(primary["KeyId"], "us-east-1", "eu-west-1", SAFE_POLICY)
    keys = [{"key_id": single["KeyId"]}, {"key_id": primary["KeyId"], "region": "us-east-1"},
            {"key_id": primary["KeyId"], "region": "eu-west-1"}]
    where = [(single["KeyId"], "us-east-1"), (primary["KeyId"], "us-east-1"), (primary["KeyId"], "eu-west-1")]

    ami_a = aws.tagged_ami("attestable-a", {})  # its measurements travel in the manifest
    manifest_a = tmp_path / "a.json"
    manifest_a.write_text(json.dumps({"schema_version": 1, "amis": {"us-east-1": ami_a},
                                      "measurements": dict(A, boot_mode="standard", engines=["python"])}))
    run = run_playbook(ROLE_PLAY, role_vars(aws, kms_authorize_keys=keys,
                                            kms_authorize_manifest_path=str(manifest_a)))
    assert run.rc == 0, run.stdout + run.stderr
    for key_id, region in where:
        policy = aws.policy(key_id, region)
        assert owned(policy) == ["AttestableAMI-" + ami_a]
        assert allows(policy, APP_ROLE, "kms:Decrypt", A)
    recorded = json.loads(manifest_a.read_text())["kms"]
    assert sorted((e["key_id"], e["region"]) for e in recorded) == sorted(where)
    assert {e["statement_id"] for e in recorded} == {"AttestableAMI-" + ami_a}
    assert {e["key_arn"] for e in recorded} == {single["Arn"], primary["Arn"], replica["Arn"]}

    # From an AMI id alone (measurements from its tags), recorded in a new manifest.
    ami_b = aws.tagged_ami("attestable-b", B)
    manifest_b = tmp_path / "b.json"
    run = run_playbook(ROLE_PLAY, role_vars(aws, kms_authorize_keys=keys, kms_authorize_ami_id=ami_b,
                                            kms_authorize_manifest_path=str(manifest_b),
                                            kms_authorize_boot_mode="standard"))
    assert run.rc == 0, run.stdout + run.stderr
    for key_id, region in where:
        policy = aws.policy(key_id, region)
        assert owned(policy) == ["AttestableAMI-" + ami_a, "AttestableAMI-" + ami_b]
        assert allows(policy, APP_ROLE, "kms:Decrypt", B)
    assert len(json.loads(manifest_b.read_text())["kms"]) == 3

    # A second identical run changes nothing.
    run = run_playbook(ROLE_PLAY, role_vars(aws, kms_authorize_keys=keys, kms_authorize_ami_id=ami_b,
                                            kms_authorize_manifest_path=str(manifest_b),
                                            kms_authorize_boot_mode="standard"))
    assert run.rc == 0
    assert not any(r["changed"] for r in run.task(PREFIX + "Write the image's statement into every key policy")["results"])

    # Retire A: no keys given, the manifest knows them all (including the replica's region).
    run = run_playbook(ROLE_PLAY, role_vars(aws, kms_authorize_state="absent",
                                            kms_authorize_manifest_path=str(manifest_a)))
    assert run.rc == 0, run.stdout + run.stderr
    for key_id, region in where:
        policy = aws.policy(key_id, region)
        assert owned(policy) == ["AttestableAMI-" + ami_b]
        assert not allows(policy, APP_ROLE, "kms:Decrypt", A) and allows(policy, APP_ROLE, "kms:Decrypt", B)
        assert policy["Statement"][:2] == SAFE_POLICY["Statement"]
    assert json.loads(manifest_a.read_text())["kms"] == []


def test_a_bad_key_stops_the_run_before_any_policy_changes(aws, run_playbook):
    good = aws.create_key(SAFE_POLICY)
    before = aws.policy_text(good["KeyId"])
    ami = aws.tagged_ami("attestable-c", measurements("c" * 96))
    run = run_playbook(ROLE_PLAY, role_vars(aws, kms_authorize_ami_id=ami, kms_authorize_boot_mode="standard",
                                            kms_authorize_keys=[{"key_id": good["KeyId"]},
                                                                {"key_id": "alias/missing-key"}]))
    assert run.rc != 0
    failed = run.task(PREFIX + "Check every key before changing any")
    assert failed["failed"] and "alias/missing-key" in json.dumps(failed)
    assert aws.policy_text(good["KeyId"]) == before


def test_an_explicit_ami_wins_over_a_stale_manifest(aws, run_playbook, tmp_path):
    """authorize -e kms_authorize_ami_id=<new> beside an older build's manifest bound the old measurements under
    the new AMI's Sid, and the post-check passed. Now the manifest that does not list the AMI stops the run."""
    key = aws.create_key(SAFE_POLICY)
    before = aws.policy_text(key["KeyId"])
    old_ami = aws.tagged_ami("attestable-old", {})
    new_ami = aws.tagged_ami("attestable-new", measurements("b" * 96, boot_mode=None))
    stale = tmp_path / "manifest.json"
    stale.write_text(json.dumps({"schema_version": 1, "amis": {"us-east-1": old_ami}, "measurements": A}))
    keys = [{"key_id": key["KeyId"]}]
    run = run_playbook(ROLE_PLAY, role_vars(aws, kms_authorize_keys=keys, kms_authorize_ami_id=new_ami,
                                            kms_authorize_manifest_path=str(stale)))
    assert run.rc != 0
    refused = run.task(PREFIX + "Refuse a manifest that does not list the AMI given")
    assert refused["failed"] and "does not list AMI %s" % new_ami in refused["msg"] and old_ami in refused["msg"]
    assert aws.policy_text(key["KeyId"]) == before
    assert "kms" not in json.loads(stale.read_text())

    # Without the manifest, the new AMI's own tags are the source (the boot mode must then be stated).
    run = run_playbook(ROLE_PLAY, role_vars(aws, kms_authorize_keys=keys, kms_authorize_ami_id=new_ami,
                                            kms_authorize_manifest_path="", kms_authorize_boot_mode="standard"))
    assert run.rc == 0, run.stdout + run.stderr
    policy = aws.policy(key["KeyId"])
    assert owned(policy) == ["AttestableAMI-" + new_ami]
    assert allows(policy, APP_ROLE, "kms:Decrypt", measurements("b" * 96))
    assert not allows(policy, APP_ROLE, "kms:Decrypt", A)


def test_the_post_check_refuses_altered_pcrs_for_every_action(aws, run_playbook, tmp_path):
    """A statement not owned by the role lets any attested instance run kms:GenerateDataKey (strict off, so the
    module only warns). The old post-check asked only whether the first action was allowed and passed."""
    any_attested = {"Sid": "Any attested instance", "Effect": "Allow", "Principal": {"AWS": APP_ROLE},
                    "Action": "kms:GenerateDataKey", "Resource": "*",
                    "Condition": {"Null": {"kms:RecipientAttestation:NitroTPMPCR12": "false"}}}
    key = aws.create_key(dict(SAFE_POLICY, Statement=SAFE_POLICY["Statement"] + [any_attested]))
    ami = aws.tagged_ami("attestable-d", {})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "amis": {"us-east-1": ami}, "measurements": A}))
    run = run_playbook(ROLE_PLAY, role_vars(aws, kms_authorize_keys=[{"key_id": key["KeyId"]}],
                                            kms_authorize_manifest_path=str(manifest)))
    assert run.rc != 0
    check = run.task(PREFIX + "Check with the policy simulator that the binding lets the image in and keeps "
                              "everything else out")
    message = json.dumps(check)
    assert "can run kms:GenerateDataKey with PCR4 altered" in message
    assert "can run kms:GenerateDataKey with PCR12 altered" in message
    assert "kms:Decrypt with" not in message


def test_the_results_carry_the_measurements_the_module_bound(aws, run_playbook, tmp_path):
    """The role hands on the module's measurements (from the AMI's tags here, in upper case there: the module
    lowercases them), its boot mode and PCRs; nothing is worked out again in the role's Jinja. One key without a
    region of its own takes kms_authorize_aws_region (module_defaults), one names its region."""
    key = aws.create_key(SAFE_POLICY)
    other = aws.create_key(SAFE_POLICY, region="eu-west-1")
    upper = measurements("C" * 96, boot_mode=None)
    ami = aws.tagged_ami("attestable-c", upper)
    run = run_playbook(ROLE_PLAY, role_vars(aws, kms_authorize_ami_id=ami, kms_authorize_boot_mode="standard",
                                            kms_authorize_manifest_path=str(tmp_path / "c.json"),
                                            kms_authorize_keys=[{"key_id": key["KeyId"]},
                                                                {"key_id": other["KeyId"], "region": "eu-west-1"}]))
    assert run.rc == 0, run.stdout + run.stderr
    results = run.task(PREFIX + "Collect the results per key")["ansible_facts"]["kms_authorize_results"]
    assert [r["region"] for r in results] == ["us-east-1", "eu-west-1"]
    lowered = measurements("c" * 96, boot_mode=None)
    for result in results:
        assert result["measurements"] == lowered
        assert result["boot_mode"] == "standard" and result["pcrs"] == ["PCR4", "PCR12"]
        assert result["measurements_source"] == "ami_tags"
    assert allows(aws.policy(other["KeyId"], "eu-west-1"), APP_ROLE, "kms:Decrypt", lowered)
