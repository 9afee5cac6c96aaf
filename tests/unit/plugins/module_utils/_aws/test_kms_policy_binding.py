# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 8 §1: what a binding refuses, the worst-case weakness check, hand edits in the owned Sid namespace, the
role's post-check, and a property over generated inputs: whatever the module writes never lets in a request whose
bound PCRs differ, one without attestation, or the standard-boot PCR7 under a Secure Boot binding."""
import copy

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from ansible_collections.attestable.ami.plugins.module_utils._aws import kms_policy as kp
from ansible_collections.attestable.ami.plugins.module_utils._aws import kms_policy_simulator as sim

ACCOUNT = "111122223333"
ROLE = "arn:aws:iam::%s:role/App" % ACCOUNT
ADMIN = "arn:aws:iam::%s:role/KeyAdmin" % ACCOUNT
ZERO = "0" * 96
KEY = sim.PCR_KEY_PREFIX
ADMIN_STATEMENT = {"Sid": "Allow administration", "Effect": "Allow", "Principal": {"AWS": ADMIN},
                   "Action": ["kms:Create*", "kms:Describe*", "kms:Put*", "kms:Get*"], "Resource": "*"}


def measurements(pcr4="a" * 96, pcr7=kp.STANDARD_BOOT_PCR7, pcr12=ZERO, boot_mode="standard"):
    result = {"HashAlgorithm": "SHA384", "PCR4": pcr4, "PCR7": pcr7, "PCR12": pcr12}
    if boot_mode:
        result["boot_mode"] = boot_mode
    return result


def plan(m, **options):
    return kp.plan_binding("ami-0aaaaaaaaaaaaaaa1", m, [ROLE], kp.DEFAULT_ACTIONS, **options)


def with_statements(*statements):
    return {"Version": "2012-10-17", "Statement": [ADMIN_STATEMENT] + list(statements)}


# ---- binding refusals -----------------------------------------------------------------------------------

def test_secure_boot_with_the_standard_pcr7_is_refused_naming_both_values():
    with pytest.raises(kp.PolicyError) as info:
        plan(measurements("a" * 96, pcr7=kp.STANDARD_BOOT_PCR7.upper(), boot_mode="secure_boot"))
    assert "equals the standard-boot value" in str(info.value)
    assert str(info.value).count(kp.STANDARD_BOOT_PCR7) == 2  # the measured value and the constant
    with pytest.raises(kp.PolicyError, match="standard-boot value"):
        plan(measurements("a" * 96), boot_mode="secure_boot", pcrs=["PCR4", "PCR7", "PCR12"])


def test_secure_boot_binds_pcr7_and_pcr12_by_default_and_pcr4_on_request():
    statement, facts = plan(measurements("a" * 96, pcr7="e" * 96, boot_mode="secure_boot"))
    assert facts["pcrs"] == ["PCR7", "PCR12"]
    assert statement["Condition"] == {"StringEqualsIgnoreCase": {KEY + "7": "e" * 96, KEY + "12": ZERO}}
    statement, facts = plan(measurements("a" * 96, pcr7="e" * 96, boot_mode="secure_boot"),
                            pcrs=["PCR4", "PCR7", "PCR12"])
    assert facts["pcrs"] == ["PCR4", "PCR7", "PCR12"]


def test_boot_mode_from_tags_like_measurements_is_refused():
    with pytest.raises(kp.PolicyError, match="never guessed from PCR values.*boot_mode"):
        plan(measurements("a" * 96, pcr7="e" * 96, boot_mode=None))


def test_non_zero_pcr12_is_refused_unless_expected():
    m = measurements("a" * 96, pcr12="1" * 96)
    with pytest.raises(kp.PolicyError, match="PCR12 .* is not 48 zero bytes.*expect_nonzero_pcr12"):
        plan(m)
    statement, facts = plan(m, expect_nonzero_pcr12=True)
    assert statement["Condition"]["StringEqualsIgnoreCase"][KEY + "12"] == "1" * 96


# ---- weaknesses -----------------------------------------------------------------------------------------

def bound_statement(sid="AttestableAMI-ami-0aaaaaaaaaaaaaaa1", pcr4="a" * 96):
    statement, dummy = kp.plan_binding(sid[len(kp.SID_PREFIX):], measurements(pcr4), [ROLE], kp.DEFAULT_ACTIONS)
    return statement


WEAK = [
    ("Null on a PCR key", {"Sid": "Any attested", "Effect": "Allow", "Principal": {"AWS": ROLE},
                           "Action": "kms:Decrypt", "Condition": {"Null": {KEY + "4": "false"}}},
     "with the attestation of any image"),
    ("StringLike * on a PCR key", {"Sid": "Like", "Effect": "Allow", "Principal": {"AWS": ROLE},
                                   "Action": "kms:Decrypt", "Condition": {"StringLike": {KEY + "4": "*"}}},
     "with the attestation of any image"),
    ("IfExists on PCR keys", {"Sid": "If exists", "Effect": "Allow", "Principal": {"AWS": ROLE},
                              "Action": "kms:Decrypt", "Condition": {"StringEqualsIgnoreCaseIfExists": {
                                  KEY + "4": "a" * 96, KEY + "12": ZERO}}},
     "without attestation"),
    ("PCR4 only", {"Sid": "Legacy", "Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt",
                   "Condition": {"StringEqualsIgnoreCase": {KEY + "4": "b" * 96}}}, "binds PCR4 alone"),
    ("standard PCR7 without PCR4", {"Sid": "Old secure boot", "Effect": "Allow", "Principal": {"AWS": ROLE},
                                    "Action": "kms:Decrypt", "Condition": {"StringEqualsIgnoreCase": {
                                        KEY + "7": kp.STANDARD_BOOT_PCR7}}}, "binds PCR7 to the standard-boot value"),
    ("Principal * with an organisation condition", {
        "Sid": "Org", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt",
        "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}}, "to every principal"),
    ("Principal * with an account condition and a PCR binding", {
        "Sid": "Account", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:GenerateDataKey",
        "Condition": {"StringEquals": {"aws:PrincipalAccount": ACCOUNT},
                      "StringEqualsIgnoreCase": {KEY + "4": "c" * 96, KEY + "12": ZERO}}}, "to every principal"),
    ("unknown condition key", {"Sid": "Vpc", "Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt",
                               "Condition": {"StringEquals": {"aws:SourceVpc": "vpc-1"}}}, "without attestation"),
    ("owned Sid without the canonical condition", {
        "Sid": "AttestableAMI-ami-0bbbbbbbbbbbbbbb2", "Effect": "Allow", "Principal": {"AWS": ROLE},
        "Action": ["kms:Decrypt"], "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": {KEY + "4": "b" * 96, KEY + "12": ZERO},
                      "StringEquals": {"aws:SourceVpc": "vpc-1"}}}, "without the canonical condition"),
]


@pytest.mark.parametrize("name, statement, needle", WEAK, ids=[w[0] for w in WEAK])
def test_blind_spots_of_the_old_weakness_check_are_reported(name, statement, needle):
    policy = with_statements(statement, bound_statement())
    found = kp.weaknesses(policy, [ROLE], kp.DEFAULT_ACTIONS)
    assert len(found) == 1, found
    assert repr(statement["Sid"]) in found[0] and needle in found[0], found[0]


def test_a_deny_that_requires_attestation_makes_an_unconditional_allow_safe_only_for_unattested_requests():
    unconditional = {"Sid": "Open", "Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt"}
    require = {"Sid": "Require attestation", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt",
               "Condition": {"Null": {KEY + "4": "true"}}}
    found = kp.weaknesses(with_statements(unconditional, require, bound_statement()), [ROLE], kp.DEFAULT_ACTIONS)
    assert len(found) == 1 and "with the attestation of any image" in found[0]
    assert "without attestation" not in found[0]


def test_the_module_statements_and_a_safe_policy_have_no_weakness():
    policy = with_statements(bound_statement(), bound_statement("AttestableAMI-ami-0bbbbbbbbbbbbbbb2", "b" * 96))
    assert kp.weaknesses(policy, [ROLE], kp.DEFAULT_ACTIONS) == []


# ---- hand edits -----------------------------------------------------------------------------------------

def test_hand_edits_are_kept_unless_forced():
    ours = bound_statement()
    narrowed = copy.deepcopy(ours)
    narrowed["Condition"]["StringEquals"] = {"aws:SourceVpc": "vpc-1"}
    deny = {"Sid": "AttestableAMI-ami-0ccccccccccccccc3", "Effect": "Deny", "Principal": "*", "Action": "kms:*",
            "Condition": {"StringNotEqualsIgnoreCase": {KEY + "12": ZERO}}}
    policy = with_statements(narrowed, deny)
    new = bound_statement(pcr4="d" * 96)
    merged = kp.merge(policy, ours["Sid"], new, keep=1)
    assert not merged.changed and merged.policy == policy
    assert [(sid, what) for sid, dummy, what in merged.kept_edits] == [
        (ours["Sid"], "replace it"), (deny["Sid"], "roll it off (keep=1)")]
    warnings = kp.describe_kept_edits(merged)
    assert "edited by hand (its condition uses StringEquals" in warnings[0] and "force=true" in warnings[0]
    assert "(it is a Deny)" in warnings[1]
    absent = kp.merge(policy, deny["Sid"], None)
    assert not absent.changed and absent.kept_edits[0][2] == "remove it"
    forced = kp.merge(policy, ours["Sid"], new, keep=1, force=True)
    assert forced.changed and forced.removed == [deny["Sid"]]
    assert forced.policy["Statement"][-1] == new
    assert kp.is_module_form(ours) and not kp.is_module_form(narrowed) and not kp.is_module_form(deny)


# ---- the role's post-check ------------------------------------------------------------------------------

def test_binding_failures_check_every_action_and_every_bound_pcr():
    m = measurements()
    good = with_statements(bound_statement())
    assert kp.binding_failures(good, ROLE, kp.DEFAULT_ACTIONS, m, ["PCR4", "PCR12"]) == []
    any_attested = {"Sid": "Any attested", "Effect": "Allow", "Principal": {"AWS": ROLE},
                    "Action": "kms:GenerateDataKey", "Condition": {"Null": {KEY + "12": "false"}}}
    failures = kp.binding_failures(with_statements(bound_statement(), any_attested), ROLE, kp.DEFAULT_ACTIONS, m,
                                   ["PCR4", "PCR12"])
    assert failures == ["%s can run kms:GenerateDataKey with PCR4 altered" % ROLE,
                        "%s can run kms:GenerateDataKey with PCR12 altered" % ROLE]
    only_decrypt = copy.deepcopy(bound_statement())
    only_decrypt["Action"] = ["kms:Decrypt"]
    assert kp.binding_failures(with_statements(only_decrypt), ROLE, kp.DEFAULT_ACTIONS, m, ["PCR4", "PCR12"]) == [
        "%s cannot run kms:GenerateDataKey with the image's PCRs" % ROLE]
    secure = measurements(pcr7="e" * 96, boot_mode="secure_boot")
    statement, facts = kp.plan_binding("img", secure, [ROLE], kp.DEFAULT_ACTIONS)
    either = {"Sid": "Either PCR7", "Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt",
              "Condition": {"StringEqualsIgnoreCase": {KEY + "7": [kp.STANDARD_BOOT_PCR7, "e" * 96],
                                                       KEY + "12": ZERO}}}
    assert kp.binding_failures(with_statements(statement, either), ROLE, ["kms:Decrypt"], secure, facts["pcrs"]) == [
        "%s can run kms:Decrypt with the standard-boot PCR7" % ROLE]


# ---- the property ---------------------------------------------------------------------------------------

HEX96 = st.text("0123456789abcdef", min_size=96, max_size=96)
PCR_INDEXES = st.sampled_from([4, 7, 12, 0, 11])


@st.composite
def existing_policies(draw):
    """Key policies with an administrator, earlier owned statements, hand edits and foreign statements."""
    statements = [ADMIN_STATEMENT]
    for i in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["owned", "narrowed", "deny", "foreign-bound", "other-principal"]))
        sid = "AttestableAMI-ami-0%015x" % draw(st.integers(0, 3))
        pcrs = {KEY + "4": draw(HEX96), KEY + "12": draw(st.sampled_from([ZERO, draw(HEX96)]))}
        statement = {"Sid": sid, "Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": ["kms:Decrypt"],
                     "Resource": "*", "Condition": {"StringEqualsIgnoreCase": pcrs}}
        if kind == "narrowed":
            statement["Condition"]["StringEquals"] = {"aws:SourceVpc": "vpc-%d" % i}
        elif kind == "deny":
            statement = dict(statement, Effect="Deny")
        elif kind == "foreign-bound":
            statement["Sid"] = "Bound by someone else %d" % i
        elif kind == "other-principal":
            statement["Sid"] = "Other app %d" % i
            statement["Principal"] = {"AWS": "arn:aws:iam::%s:role/Other" % ACCOUNT}
        if all(s.get("Sid") != statement["Sid"] for s in statements):
            statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}


MODES = st.sampled_from(["standard", "secure_boot", None])


# Many drawn combinations are refused by plan_binding (that is correct): filtering is expected, not a smell.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(boot_mode=MODES, option_mode=MODES, pcr4=HEX96, pcr7=st.one_of(st.just(kp.STANDARD_BOOT_PCR7), HEX96),
       pcr12=st.one_of(st.just(ZERO), HEX96), pcr_choice=st.one_of(st.none(), st.lists(PCR_INDEXES, min_size=1, max_size=4)),
       allow_missing_pcr12=st.booleans(), expect_nonzero_pcr12=st.booleans(), force=st.booleans(),
       existing=existing_policies(), probe=st.data())
def test_whatever_the_module_writes_refuses_other_images(
        boot_mode, option_mode, pcr4, pcr7, pcr12, pcr_choice, allow_missing_pcr12, expect_nonzero_pcr12, force,
        existing, probe):
    m = measurements(pcr4, pcr7, pcr12, boot_mode)
    image = "ami-0%015x" % probe.draw(st.integers(0, 3))
    try:
        statement, facts = kp.plan_binding(
            image, m, [ROLE], kp.DEFAULT_ACTIONS, boot_mode=option_mode,
            pcrs=["PCR%d" % i for i in pcr_choice] if pcr_choice else None,
            allow_missing_pcr12=allow_missing_pcr12, expect_nonzero_pcr12=expect_nonzero_pcr12)
    except kp.PolicyError:
        assume(False)
        return
    mode = facts["boot_mode"]
    assert mode == (option_mode or boot_mode)  # stated, never inferred
    if mode == "secure_boot":
        assert "PCR7" in facts["pcrs"] and pcr7 != kp.STANDARD_BOOT_PCR7
    merged = kp.merge(existing, statement["Sid"], statement, keep=2, force=force)
    written = [s for s in kp._statements(merged.policy)
               if kp.is_owned(s) and kp.is_module_form(s) and s not in existing["Statement"]]
    reference = dict((k, v) for k, v in m.items() if k.startswith("PCR"))
    event("%s binding, %d statement(s) written" % (mode, len(written)))
    for s in written:
        alone = {"Statement": [s]}
        for action in kp.RECIPIENT_ACTIONS:
            assert not sim.allows(alone, ROLE, action, None)
            for pcr in facts["pcrs"]:
                other = probe.draw(HEX96.filter(lambda v, old=reference[pcr]: v != old))
                assert not sim.allows(alone, ROLE, action, dict(reference, **{pcr: other}))
            if mode == "secure_boot":
                assert not sim.allows(alone, ROLE, action, dict(reference, PCR7=kp.STANDARD_BOOT_PCR7))
        assert sim.allows(alone, ROLE, "kms:Decrypt", reference)
    # Nothing outside the owned namespace changed, and no hand edit was touched without force.
    assert [s for s in kp._statements(merged.policy) if not kp.is_owned(s)] == [
        s for s in existing["Statement"] if not kp.is_owned(s)]
    if not force:
        edits = [s for s in existing["Statement"] if kp.is_owned(s) and not kp.is_module_form(s)]
        assert all(s in merged.policy["Statement"] for s in edits)
