# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 8 §1 and issue 13 item 10 through the module process, against a real moto server over HTTP (with the
recording proxy where a request must be seen or an AWS answer moto never gives must be injected).

Each test failed on the code before the fix: tags were trusted and stated the boot mode by PCR7 inference,
strict saw only unconditional statements of the principals, hand edits in the owned namespace were replaced or
rolled off, principals were never looked up, and a MalformedPolicyDocumentException surfaced as a raw AWS error.
"""
import json
import threading

from aws_proxy import RecordingProxy

from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as meas

from authorize_helpers import APP_ROLE, SAFE_POLICY, STANDARD_PCR7, ZERO, measurements
from test_kms_attestation_policy import play

KEY = "kms:RecipientAttestation:NitroTPMPCR"
A = measurements("a" * 96)


def task(name, **args):
    base = {"key_id": "{{ key_id }}", "principals": ["{{ role }}"]}
    base.update(args)
    return "- name: %s\n  attestable.ami.kms_attestation_policy: %s\n  ignore_errors: true\n  register: r\n" % (
        name, json.dumps(base))


class TargetFaultProxy(RecordingProxy):
    """The recording proxy, also matching a JSON-protocol call's X-Amz-Target (e.g. TrentService.PutKeyPolicy),
    which the shared proxy's fault rules do not see ("POST /" is all the line says for KMS)."""

    def __init__(self, *args, **kwargs):
        self._local = threading.local()
        RecordingProxy.__init__(self, *args, **kwargs)

    def _record(self, method, path, headers, body):
        self._local.target = headers.get("X-Amz-Target", "")
        return RecordingProxy._record(self, method, path, headers, body)

    def _fault_for(self, method, path, action=None):
        return RecordingProxy._fault_for(self, method, path + " Target=" + getattr(self._local, "target", ""), action)


def test_measurements_from_tags_are_cross_checked_and_never_state_the_boot_mode(aws, run_playbook):
    key = aws.create_key(SAFE_POLICY)
    before = aws.policy_text(key["KeyId"])
    tags = measurements("d" * 96, boot_mode=None)
    ami = aws.tagged_ami("attestable-tags", dict(tags, boot_mode="standard"))  # a boot_mode tag is ignored
    digest = meas.measurements_digest(ami, tags)
    forged = aws.tagged_ami("attestable-forged", dict(tags, MeasurementsSHA384="f" * 96))
    uki = "ab" * 32
    run = run_playbook(play("".join([
        task("No boot mode", image=ami),
        task("Wrong digest", image=ami, boot_mode="standard", expected_measurements_digest="e" * 96),
        task("Digest tag contradicts the PCR tags", image=forged, boot_mode="standard"),
        task("UKI without a tag", image=ami, boot_mode="standard", expected_uki_sha256=uki),
        task("Checked against the digest", image=ami, boot_mode="standard", expected_measurements_digest=digest),
    ])), {"endpoint": aws.url, "key_id": key["Arn"], "role": APP_ROLE})
    assert run.rc == 0, run.stdout + run.stderr
    assert "boot mode of the image is unknown" in run.task("No boot mode")["msg"]
    assert "tags never state the boot mode" in run.task("No boot mode")["msg"]
    wrong = run.task("Wrong digest")
    assert wrong["failed"] and "not to the expected_measurements_digest" in wrong["msg"] and digest in wrong["msg"]
    assert "tags were edited" in run.task("Digest tag contradicts the PCR tags")["msg"]
    assert "no attestable:UkiSHA256 tag" in run.task("UKI without a tag")["msg"]
    good = run.task("Checked against the digest")
    assert good["changed"] and good["measurements_source"] == "ami_tags" and good["measurements_digest"] == digest
    assert any("anyone with ec2:CreateTags" in w and "match expected_measurements_digest" in w
               for w in good["warnings"])
    assert json.loads(before)["Statement"] == aws.policy(key["KeyId"])["Statement"][:2]


def test_strict_reports_what_the_old_check_could_not_see(aws, run_playbook):
    org_wide = {"Sid": "Everyone in the organisation", "Effect": "Allow", "Principal": "*",
                "Action": ["kms:Decrypt"], "Resource": "*",
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}}
    any_attested = {"Sid": "Any attested instance", "Effect": "Allow", "Principal": {"AWS": APP_ROLE},
                    "Action": "kms:GenerateDataKey", "Resource": "*", "Condition": {"Null": {KEY + "4": "false"}}}
    if_exists = {"Sid": "Attested if attested", "Effect": "Allow", "Principal": {"AWS": APP_ROLE},
                 "Action": "kms:Decrypt", "Resource": "*",
                 "Condition": {"StringEqualsIgnoreCaseIfExists": {KEY + "4": "a" * 96, KEY + "12": ZERO}}}
    policy = dict(SAFE_POLICY, Statement=SAFE_POLICY["Statement"] + [org_wide, any_attested, if_exists])
    key = aws.create_key(policy)
    before = aws.policy_text(key["KeyId"])
    run = run_playbook(play(task("Strict", image="ami-0aaaaaaaaaaaaaaa1", measurements=A, strict=True)),
                       {"endpoint": aws.url, "key_id": key["Arn"], "role": APP_ROLE})
    result = run.task("Strict")
    assert result["failed"] and result["msg"].startswith("key_id")
    assert "'Everyone in the organisation'" in result["msg"] and "to every principal" in result["msg"]
    assert "'Any attested instance'" in result["msg"] and "with the attestation of any image" in result["msg"]
    assert "'Attested if attested'" in result["msg"] and "without attestation" in result["msg"]
    assert aws.policy_text(key["KeyId"]) == before


def test_hand_edits_in_the_owned_namespace_are_kept_unless_forced(aws, run_playbook):
    narrowed = {"Sid": "AttestableAMI-ami-0aaaaaaaaaaaaaaa1", "Effect": "Allow", "Principal": {"AWS": APP_ROLE},
                "Action": ["kms:Decrypt"], "Resource": "*",
                "Condition": {"StringEqualsIgnoreCase": {KEY + "4": "a" * 96, KEY + "12": ZERO},
                              "StringEquals": {"aws:SourceVpc": "vpc-0123"}}}
    deny = {"Sid": "AttestableAMI-ami-0ccccccccccccccc3", "Effect": "Deny", "Principal": "*",
            "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringNotEqualsIgnoreCase": {KEY + "12": ZERO}}}
    policy = dict(SAFE_POLICY, Statement=SAFE_POLICY["Statement"] + [deny, narrowed])
    key = aws.create_key(policy)
    run = run_playbook(play(
        task("Re-authorize A", image="ami-0aaaaaaaaaaaaaaa1", measurements=A, keep=1)
        + task("Authorize B, keep one", image="ami-0bbbbbbbbbbbbbbb2", measurements=measurements("b" * 96), keep=1)
        + task("Retire A", image="ami-0aaaaaaaaaaaaaaa1", state="absent")),
        {"endpoint": aws.url, "key_id": key["Arn"], "role": APP_ROLE})
    assert run.rc == 0, run.stdout + run.stderr
    first = run.task("Re-authorize A")
    assert first["changed"] is False and set(first["kept_hand_edits"]) == {narrowed["Sid"], deny["Sid"]}
    assert any("edited by hand" in w and "force=true" in w for w in first["warnings"])
    second = run.task("Authorize B, keep one")
    assert second["changed"] is True and second["removed_statement_ids"] == []
    assert run.task("Retire A")["changed"] is False
    stored = aws.policy(key["KeyId"])
    assert deny in stored["Statement"] and narrowed in stored["Statement"]

    forced = run_playbook(play(task("Force", image="ami-0aaaaaaaaaaaaaaa1", measurements=A, keep=1, force=True)),
                          {"endpoint": aws.url, "key_id": key["Arn"], "role": APP_ROLE})
    result = forced.task("Force")
    assert result["changed"] is True and result.get("failed") is not True
    stored = aws.policy(key["KeyId"])
    sids = [s["Sid"] for s in stored["Statement"] if s["Sid"].startswith("AttestableAMI-")]
    assert sids == ["AttestableAMI-ami-0aaaaaaaaaaaaaaa1"]
    assert stored["Statement"][-1]["Condition"] == {"StringEqualsIgnoreCase": {KEY + "4": "a" * 96, KEY + "12": ZERO}}


def test_a_principal_that_does_not_exist_fails_before_anything_is_written(aws, run_playbook):
    key = aws.create_key(SAFE_POLICY)
    before = aws.policy_text(key["KeyId"])
    ghost = "arn:aws:iam::123456789012:role/NoSuchRole"
    user = "arn:aws:iam::123456789012:user/nobody"
    proxy = RecordingProxy(aws.url)
    try:
        tasks = task("Check mode", image="ami-0aaaaaaaaaaaaaaa1", measurements=A,
                     principals=[APP_ROLE, ghost, user, "arn:aws:iam::123456789012:root",
                                 "arn:aws:iam::444455556666:role/Elsewhere"])
        tasks = tasks.replace("  ignore_errors: true\n", "  ignore_errors: true\n  check_mode: true\n")
        tasks += task("Write", image="ami-0aaaaaaaaaaaaaaa1", measurements=A, principals=[APP_ROLE, ghost])
        run = run_playbook(play(tasks), {"endpoint": proxy.url, "key_id": key["Arn"], "role": APP_ROLE})
        calls = [r["params"].get("Action") or r["target"] for r in proxy.requests]
    finally:
        proxy.close()
    assert run.rc == 0, run.stdout + run.stderr
    checked = run.task("Check mode")
    assert checked["failed"] and ghost in checked["msg"] and "IAM has no role named NoSuchRole" in checked["msg"]
    assert "IAM has no user named nobody" in checked["msg"] and "MalformedPolicyDocumentException" in checked["msg"]
    statuses = dict((c["principal"], c["status"]) for c in checked["principal_checks"])
    assert statuses == {APP_ROLE: "exists", ghost: "missing", user: "missing",
                        "arn:aws:iam::123456789012:root": "skipped",
                        "arn:aws:iam::444455556666:role/Elsewhere": "skipped"}
    assert run.task("Write")["failed"] and ghost in run.task("Write")["msg"]
    assert "GetRole" in calls and "GetUser" in calls
    assert not any(c.endswith("PutKeyPolicy") for c in calls)
    assert aws.policy_text(key["KeyId"]) == before


def test_iam_access_denied_warns_and_goes_on(aws, run_playbook):
    key = aws.create_key(SAFE_POLICY)
    proxy = RecordingProxy(aws.url)
    proxy.inject(r"Action=GetRole$", [(403, "AccessDenied")], forever=True)
    try:
        run = run_playbook(play(task("Authorize", image="ami-0aaaaaaaaaaaaaaa1", measurements=A)),
                           {"endpoint": proxy.url, "key_id": key["Arn"], "role": APP_ROLE})
    finally:
        proxy.close()
    result = run.task("Authorize")
    assert result.get("failed") is not True and result["changed"] is True, result
    assert any(APP_ROLE in w and "could not check that it exists (IAM answered AccessDenied)" in w
               for w in result["warnings"])
    assert result["principal_checks"][0]["status"] == "unchecked"


def test_malformed_policy_document_from_put_key_policy_is_a_clear_error(aws, run_playbook):
    key = aws.create_key(SAFE_POLICY)
    before = aws.policy_text(key["KeyId"])
    proxy = TargetFaultProxy(aws.url)
    proxy.inject(r"Target=TrentService\.PutKeyPolicy$", [(400, "MalformedPolicyDocumentException")], forever=True)
    try:
        run = run_playbook(play(task("Authorize", image="ami-0aaaaaaaaaaaaaaa1", measurements=A)),
                           {"endpoint": proxy.url, "key_id": key["Arn"], "role": APP_ROLE})
    finally:
        proxy.close()
    result = run.task("Authorize")
    assert result["failed"]
    assert "KMS refused the key policy as malformed (MalformedPolicyDocumentException: injected by the test proxy)" \
        in result["msg"]
    assert APP_ROLE in result["msg"] and "The key policy was not changed" in result["msg"]
    assert "Traceback" not in json.dumps(result) and "boto3_version" not in result
    assert aws.policy_text(key["KeyId"]) == before


def test_secure_boot_binding_with_the_standard_pcr7_is_refused_through_the_module(aws, run_playbook):
    """The old code bound PCR7 alone here: every standard-boot instance of any image would have matched."""
    key = aws.create_key(SAFE_POLICY)
    before = aws.policy_text(key["KeyId"])
    standard_but_said_secure = measurements("a" * 96, pcr7=STANDARD_PCR7, boot_mode="secure_boot")
    run = run_playbook(play(task("Secure Boot", image="ami-0aaaaaaaaaaaaaaa1", measurements=standard_but_said_secure)),
                       {"endpoint": aws.url, "key_id": key["Arn"], "role": APP_ROLE})
    result = run.task("Secure Boot")
    assert result["failed"] and STANDARD_PCR7 in result["msg"] and "equals the standard-boot value" in result["msg"]
    assert aws.policy_text(key["KeyId"]) == before
