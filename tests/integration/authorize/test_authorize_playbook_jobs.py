# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The authorize playbook as AWX runs it: a fresh working directory, the manifest passed as a variable
(attestable_manifest, from the build job's set_stats), the result passed on with set_stats; and a manifest path
that cannot be written stops the run before any key policy changes."""
import json
import os

from authorize_helpers import APP_ROLE, SAFE_POLICY, measurements

import playbook_runner

PLAYBOOK = os.path.join(playbook_runner.ROOT, "playbooks", "authorize.yml")
A = measurements("a" * 96)


def run_job(tmp_path, extra_vars):
    """ansible-playbook attestable.ami.authorize from an empty working directory (an AWX job's fresh checkout)."""
    workdir = tmp_path / "job"
    workdir.mkdir(exist_ok=True)
    return playbook_runner.run(PLAYBOOK, tmp_path, extra_vars=extra_vars,
                               env={"PWD": str(workdir), "ANSIBLE_SHOW_CUSTOM_STATS": "true"})


def job_vars(aws, key, **extra):
    base = {"kms_authorize_aws_endpoint_url": aws.url, "kms_authorize_aws_region": "us-east-1",
            "kms_authorize_principals": [APP_ROLE], "kms_authorize_keys": [{"key_id": key["KeyId"]}]}
    base.update(extra)
    return base


def test_manifest_as_a_variable_in_a_fresh_directory(aws, tmp_path):
    key = aws.create_key(SAFE_POLICY)
    ami = aws.tagged_ami("attestable-awx", {})
    build_stats = {"schema_version": 1, "amis": {"us-east-1": ami}, "measurements": dict(A, engines=["python"])}

    proc, results, data = run_job(tmp_path, job_vars(aws, key, attestable_manifest=build_stats))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not os.listdir(str(tmp_path / "job")), "the job wrote into its working directory"
    policy = aws.policy(key["KeyId"])
    assert [s["Sid"] for s in policy["Statement"]][-1] == "AttestableAMI-" + ami

    stats = data["global_custom_stats"]
    assert stats["attestable_manifest"]["amis"] == {"us-east-1": ami}
    assert stats["attestable_manifest"]["measurements"]["PCR4"] == A["PCR4"]
    assert [(e["key_arn"], e["statement_id"]) for e in stats["attestable_manifest"]["kms"]] == [
        (key["Arn"], "AttestableAMI-" + ami)]
    assert stats["attestable_kms"] == [{"key_arn": key["Arn"], "region": "us-east-1", "image": ami,
                                        "statement_id": "AttestableAMI-" + ami, "changed": True}]

    # The next job (retire) gets only the stats: it finds the key in the manifest it is passed.
    proc, _results, data = run_job(tmp_path, {"attestable_manifest": stats["attestable_manifest"],
                                              "kms_authorize_state": "absent",
                                              "kms_authorize_aws_endpoint_url": aws.url,
                                              "kms_authorize_aws_region": "us-east-1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "AttestableAMI-" + ami not in [s.get("Sid") for s in aws.policy(key["KeyId"])["Statement"]]
    assert data["global_custom_stats"]["attestable_manifest"].get("kms", []) == []


def test_an_invalid_manifest_variable_changes_nothing(aws, tmp_path):
    key = aws.create_key(SAFE_POLICY)
    before = aws.policy_text(key["KeyId"])
    bad = {"schema_version": 1, "amis": {"us-east-1": "ami-0123456789abcdef0"},
           "measurements": dict(A, PCR4="not-a-digest")}
    proc, _results, _data = run_job(tmp_path, job_vars(aws, key, attestable_manifest=bad))
    assert proc.returncode != 0
    assert "measurements.PCR4" in proc.stdout
    assert aws.policy_text(key["KeyId"]) == before


def test_a_manifest_path_that_cannot_be_written_stops_the_run_before_any_change(aws, tmp_path):
    key = aws.create_key(SAFE_POLICY)
    before = aws.policy_text(key["KeyId"])
    ami = aws.tagged_ami("attestable-ro", {})
    stats = {"schema_version": 1, "amis": {"us-east-1": ami}, "measurements": dict(A, engines=["python"])}
    for target in (tmp_path / "missing-dir" / "manifest.json", tmp_path):  # no directory; a directory
        proc, _results, _data = run_job(tmp_path, job_vars(aws, key, attestable_manifest=stats,
                                                           attestable_manifest_path=str(target)))
        assert proc.returncode != 0
        assert "cannot be written" in proc.stdout and "nothing was changed" in proc.stdout
        assert aws.policy_text(key["KeyId"]) == before


def test_an_existing_artifacts_manifest_is_read_and_recorded(aws, tmp_path):
    key = aws.create_key(SAFE_POLICY)
    ami = aws.tagged_ami("attestable-file", {})
    artifacts = tmp_path / "job" / "artifacts"
    artifacts.mkdir(parents=True)
    (artifacts / "manifest.json").write_text(json.dumps(
        {"schema_version": 1, "amis": {"us-east-1": ami}, "measurements": dict(A, engines=["python"])}))
    proc, _results, _data = run_job(tmp_path, job_vars(aws, key))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = json.loads((artifacts / "manifest.json").read_text())["kms"]
    assert [e["statement_id"] for e in recorded] == ["AttestableAMI-" + ami]


VERIFY = os.path.join(playbook_runner.ROOT, "playbooks", "verify.yml")


def test_verify_passes_on_the_binding_and_fails_on_tampering(aws, tmp_path):
    key = aws.create_key(SAFE_POLICY)
    ami = aws.tagged_ami("attestable-verify", {k: v for k, v in A.items() if k != "boot_mode"})
    build_stats = {"schema_version": 1, "amis": {"us-east-1": ami}, "measurements": dict(A, engines=["python"])}
    proc, _results, data = run_job(tmp_path, job_vars(aws, key, attestable_manifest=build_stats))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = data["global_custom_stats"]["attestable_manifest"]
    verify_vars = {"attestable_manifest": manifest, "verify_principals": [APP_ROLE],
                   "attestable_aws_endpoint_url": aws.url}

    proc, _results, _data = playbook_runner.run(VERIFY, tmp_path, extra_vars=verify_vars)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # Someone drops PCR12 from the statement: an injected command line would now decrypt.
    policy = aws.policy(key["KeyId"])
    statement = [s for s in policy["Statement"] if s.get("Sid") == "AttestableAMI-" + ami][0]
    for operator in statement["Condition"].values():
        operator.pop("kms:RecipientAttestation:NitroTPMPCR12", None)
    aws.client("kms").put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=json.dumps(policy))
    proc, _results, _data = playbook_runner.run(VERIFY, tmp_path, extra_vars=verify_vars)
    assert proc.returncode != 0
    assert "PCR12" in proc.stdout

    # Someone rewrites the AMI's PCR4 tag.
    aws.client("kms").put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=json.dumps(
        dict(policy, Statement=[s for s in policy["Statement"] if s.get("Sid") != statement["Sid"]])))
    aws.client("ec2").create_tags(Resources=[ami], Tags=[{"Key": "attestable:PCR4", "Value": "b" * 96}])
    proc, _results, _data = playbook_runner.run(VERIFY, tmp_path, extra_vars=dict(
        verify_vars, verify_principals=[], attestable_manifest=dict(manifest, kms=[])))
    assert proc.returncode != 0
    assert "differ from the manifest" in proc.stdout


def test_manifest_kept_in_s3_is_read_and_written_back(aws, tmp_path):
    key = aws.create_key(SAFE_POLICY)
    ami = aws.tagged_ami("attestable-s3", {})
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="attestable-manifests")
    s3.put_object(Bucket="attestable-manifests", Key="team/app/manifest.json", Body=json.dumps(
        {"schema_version": 1, "amis": {"us-east-1": ami}, "measurements": dict(A, engines=["python"])}))
    proc, _results, _data = run_job(tmp_path, job_vars(aws, key, attestable_manifest_s3="s3://attestable-manifests/team/app"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s["Sid"] for s in aws.policy(key["KeyId"])["Statement"]][-1] == "AttestableAMI-" + ami
    stored = json.loads(s3.get_object(Bucket="attestable-manifests", Key="team/app/manifest.json")["Body"].read())
    assert [e["statement_id"] for e in stored["kms"]] == ["AttestableAMI-" + ami]
    assert not os.listdir(str(tmp_path / "job"))

    proc, _results, _data = run_job(tmp_path, job_vars(aws, key, attestable_manifest_s3="https://not-s3/x"))
    assert proc.returncode != 0 and "must look like s3://bucket/prefix" in proc.stdout
