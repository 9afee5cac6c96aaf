# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The key policy simulator: hand-made cases for each rule, and hypothesis properties over generated images."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.attestable.ami.plugins.module_utils._aws.kms_policy_simulator import SimulatorError
from ansible_collections.attestable.ami.plugins.module_utils._aws.kms_policy_simulator import allows
from ansible_collections.attestable.ami.plugins.module_utils._aws.kms_policy_simulator import evaluate

ROLE = "arn:aws:iam::111122223333:role/App"
OTHER_ROLE = "arn:aws:iam::111122223333:role/Other"
FOREIGN_ROLE = "arn:aws:iam::444455556666:role/App"
KEY = "kms:RecipientAttestation:NitroTPMPCR"
A4, B4, Z12 = "a" * 96, "b" * 96, "0" * 96


def policy(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(condition=None, principal=ROLE, action=("kms:Decrypt",), effect="Allow"):
    statement = {"Effect": effect, "Principal": {"AWS": principal}, "Action": list(action), "Resource": "*"}
    if condition is not None:
        statement["Condition"] = condition
    return statement


def bound(pcr4, pcr12=Z12, operator="StringEqualsIgnoreCase"):
    return {operator: {KEY + "4": pcr4, KEY + "12": pcr12}}


def test_allow_needs_every_bound_pcr():
    p = policy(allow(bound(A4)))
    assert allows(p, ROLE, "kms:Decrypt", {"PCR4": A4, "PCR12": Z12})
    assert not allows(p, ROLE, "kms:Decrypt", {"PCR4": A4})
    assert not allows(p, ROLE, "kms:Decrypt", {"PCR4": B4, "PCR12": Z12})


def test_request_without_attestation_does_not_match_attestation_keys():
    p = policy(allow(bound(A4)))
    assert not allows(p, ROLE, "kms:Decrypt", None)
    assert not allows(p, ROLE, "kms:Decrypt", {})


def test_ignore_case_versus_exact():
    upper = {"PCR4": A4.upper(), "PCR12": Z12}
    assert allows(policy(allow(bound(A4))), ROLE, "kms:Decrypt", upper)
    # The simulator lowercases the PCRs it is given (the attestation document carries bytes, KMS compares hex).
    assert allows(policy(allow(bound(A4, operator="StringEquals"))), ROLE, "kms:Decrypt", upper)
    assert not allows(policy(allow(bound(A4.upper(), operator="StringEquals"))), ROLE, "kms:Decrypt", upper)


def test_pcr_names_in_any_accepted_spelling():
    p = policy(allow(bound(A4)))
    assert allows(p, ROLE, "kms:Decrypt", {4: A4, "12": Z12})
    assert allows(p, ROLE, "kms:Decrypt", {KEY + "4": A4, "NitroTPMPCR12": Z12, "HashAlgorithm": "SHA384"})


def test_list_is_any_of_and_keys_are_all_of():
    p = policy(allow({"StringEqualsIgnoreCase": {KEY + "4": [A4, B4], KEY + "7": ["c" * 96, "d" * 96]}}))
    assert allows(p, ROLE, "kms:Decrypt", {"PCR4": B4, "PCR7": "c" * 96})
    assert allows(p, ROLE, "kms:Decrypt", {"PCR4": A4, "PCR7": "d" * 96})
    assert not allows(p, ROLE, "kms:Decrypt", {"PCR4": A4})
    assert not allows(p, ROLE, "kms:Decrypt", {"PCR4": "e" * 96, "PCR7": "d" * 96})


def test_several_operators_are_all_of():
    p = policy(allow({"StringEqualsIgnoreCase": {KEY + "4": A4}, "StringLike": {KEY + "12": "00*"}}))
    assert allows(p, ROLE, "kms:Decrypt", {"PCR4": A4, "PCR12": Z12})
    assert not allows(p, ROLE, "kms:Decrypt", {"PCR4": A4, "PCR12": "1" + Z12[1:]})


def test_explicit_deny_wins():
    p = policy(allow(bound(A4)), allow({"StringNotEqualsIgnoreCase": {KEY + "12": Z12}}, principal="*",
                                       action=("kms:*",), effect="Deny"))
    assert allows(p, ROLE, "kms:Decrypt", {"PCR4": A4, "PCR12": Z12})
    decision = evaluate(p, ROLE, "kms:Decrypt", {"PCR4": A4, "PCR12": "1" * 96})
    assert not decision.allowed and decision.denying == [1]
    # Negated operator, key absent from the request: the condition holds, the Deny applies.
    deny_unless_a = allow({"StringNotEqualsIgnoreCase": {KEY + "4": A4}}, principal="*", action=("kms:Decrypt",),
                          effect="Deny")
    p2 = policy(allow(None, action=("kms:*",)), deny_unless_a)
    assert not allows(p2, ROLE, "kms:Decrypt", None)
    assert allows(p2, ROLE, "kms:Encrypt", None)


def test_action_wildcards():
    p = policy(allow(None, action=("kms:Gen*",)))
    assert allows(p, ROLE, "kms:GenerateDataKey")
    assert allows(p, ROLE, "KMS:generatedatakeypair")
    assert not allows(p, ROLE, "kms:Decrypt")
    assert allows(policy(allow(None, action=("kms:*",))), ROLE, "kms:PutKeyPolicy")
    assert allows(policy(allow(None, action=("kms:?ecrypt",))), ROLE, "kms:Decrypt")
    not_action = {"Effect": "Allow", "Principal": "*", "NotAction": "kms:Put*"}
    assert allows(policy(not_action), ROLE, "kms:Decrypt")
    assert not allows(policy(not_action), ROLE, "kms:PutKeyPolicy")


def test_principals():
    assert allows(policy(allow(None, principal="arn:aws:iam::111122223333:root")), OTHER_ROLE, "kms:Decrypt")
    assert allows(policy(allow(None, principal="111122223333")), ROLE, "kms:Decrypt")
    assert not allows(policy(allow(None, principal="arn:aws:iam::111122223333:root")), FOREIGN_ROLE, "kms:Decrypt")
    assert not allows(policy(allow(None)), OTHER_ROLE, "kms:Decrypt")
    assert allows(policy(allow(None, principal=[OTHER_ROLE, ROLE])), ROLE, "kms:Decrypt")
    everyone = {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt"}
    assert allows(policy(everyone), FOREIGN_ROLE, "kms:Decrypt")
    session = "arn:aws:sts::111122223333:assumed-role/App/i-0123"
    assert allows(policy(allow(None, principal="arn:aws:iam::111122223333:role/path/App")), session, "kms:Decrypt")
    service = {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "kms:*"}
    assert not allows(policy(service), ROLE, "kms:Decrypt")
    not_principal = {"Effect": "Deny", "NotPrincipal": {"AWS": ROLE}, "Action": "kms:*"}
    assert not allows(policy(allow(None, principal="*"), not_principal), OTHER_ROLE, "kms:Decrypt")


def test_not_principal_exempts_only_when_session_role_and_account_are_named():
    """IAM sees a role's request as its session, the role and the account: a NotPrincipal Deny listing the role
    alone still denies it (the old simulator exempted it)."""
    session = "arn:aws:sts::111122223333:assumed-role/App/i-0123"
    role_only = {"Effect": "Deny", "NotPrincipal": {"AWS": ROLE}, "Action": "kms:*"}
    assert not allows(policy(allow(None), role_only), ROLE, "kms:Decrypt")
    assert not allows(policy(allow(None, principal="*"), role_only), session, "kms:Decrypt")
    role_and_account = {"Effect": "Deny", "NotPrincipal": {"AWS": [ROLE, "arn:aws:iam::111122223333:root"]},
                        "Action": "kms:*"}
    assert not allows(policy(allow(None, principal="*"), role_and_account), session, "kms:Decrypt")
    complete = {"Effect": "Deny", "NotPrincipal": {"AWS": [ROLE, "111122223333", session]}, "Action": "kms:*"}
    assert allows(policy(allow(None, principal="*"), complete), session, "kms:Decrypt")
    assert allows(policy(allow(None, principal="*"), complete), ROLE, "kms:Decrypt")
    other_session = "arn:aws:sts::111122223333:assumed-role/App/i-0456"
    assert not allows(policy(allow(None, principal="*"), complete), other_session, "kms:Decrypt")
    user = "arn:aws:iam::111122223333:user/alice"
    user_only = {"Effect": "Deny", "NotPrincipal": {"AWS": user}, "Action": "kms:*"}
    user_and_account = {"Effect": "Deny", "NotPrincipal": {"AWS": [user, "arn:aws:iam::111122223333:root"]},
                        "Action": "kms:*"}
    assert not allows(policy(allow(None, principal=user), user_only), user, "kms:Decrypt")
    assert allows(policy(allow(None, principal=user), user_and_account), user, "kms:Decrypt")


def test_wildcards_are_star_and_question_mark_only():
    """fnmatch's [...] classes are not IAM wildcards: '[' is a literal character."""
    brackets = policy(allow(None, action=("kms:[DG]ecrypt",)))
    assert not allows(brackets, ROLE, "kms:Decrypt")
    assert allows(brackets, ROLE, "kms:[DG]ecrypt")
    like = policy(allow({"StringLike": {KEY + "4": "[ab]*"}}))
    assert not allows(like, ROLE, "kms:Decrypt", {"PCR4": A4})
    assert allows(like, ROLE, "kms:Decrypt", {"PCR4": "[ab]" + A4[4:]})
    assert allows(policy(allow({"StringLike": {KEY + "4": "a?a*"}})), ROLE, "kms:Decrypt", {"PCR4": A4})


def test_arn_like_matches_part_by_part():
    context = {"aws:SourceArn": "arn:aws:iam::111122223333:role/App"}
    cross_part = policy(allow({"ArnLike": {"aws:SourceArn": "arn:aws:iam::*3333:role/App"}}))
    assert allows(cross_part, ROLE, "kms:Decrypt", context=context)
    # With plain string matching, "*" would swallow the empty region and the account together.
    spanning = policy(allow({"ArnLike": {"aws:SourceArn": "arn:aws:iam:*:role/App"}}))
    assert not allows(spanning, ROLE, "kms:Decrypt", context=context)
    resource_colons = {"aws:SourceArn": "arn:aws:logs:us-east-1:111122223333:log-group:app:*"}
    assert allows(policy(allow({"ArnLike": {"aws:SourceArn": "arn:aws:logs:*:*:log-group:*"}})), ROLE,
                  "kms:Decrypt", context=resource_colons)
    not_like = policy(allow({"ArnNotLike": {"aws:SourceArn": "arn:aws:iam:*:role/App"}}))
    assert allows(not_like, ROLE, "kms:Decrypt", context=context)


def test_worst_case_satisfies_unknown_keys_on_allow_and_not_on_deny():
    org_only = policy({"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt",
                       "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}})
    assert not allows(org_only, FOREIGN_ROLE, "kms:Decrypt")
    assert evaluate(org_only, FOREIGN_ROLE, "kms:Decrypt", worst_case=True).allowed
    numeric = policy(allow({"NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}, "StringEqualsIgnoreCase":
                            {KEY + "4": A4}}))
    assert evaluate(numeric, ROLE, "kms:Decrypt", {"PCR4": A4}, worst_case=True).allowed
    assert not evaluate(numeric, ROLE, "kms:Decrypt", {"PCR4": B4}, worst_case=True).allowed
    deny_unless_vpc = {"Effect": "Deny", "Principal": "*", "Action": "kms:*",
                       "Condition": {"StringNotEquals": {"aws:SourceVpc": "vpc-1"}}}
    p = policy(allow(None), deny_unless_vpc)
    assert evaluate(p, ROLE, "kms:Decrypt", worst_case=True).allowed


def test_null_and_if_exists():
    no_attestation = policy(allow({"Null": {KEY + "4": "true"}}))
    assert allows(no_attestation, ROLE, "kms:Decrypt", None)
    assert not allows(no_attestation, ROLE, "kms:Decrypt", {"PCR4": A4})
    must_attest = policy(allow({"Null": {KEY + "4": "false"}}))
    assert allows(must_attest, ROLE, "kms:Decrypt", {"PCR4": B4})
    assert not allows(must_attest, ROLE, "kms:Decrypt", None)
    if_exists = policy(allow({"StringEqualsIgnoreCaseIfExists": {KEY + "4": A4}}))
    assert allows(if_exists, ROLE, "kms:Decrypt", None)  # the weakness ...IfExists brings
    assert allows(if_exists, ROLE, "kms:Decrypt", {"PCR4": A4})
    assert not allows(if_exists, ROLE, "kms:Decrypt", {"PCR4": B4})


def test_set_qualifiers():
    any_value = policy(allow({"ForAnyValue:StringEquals": {KEY + "4": [A4, B4]}}))
    assert allows(any_value, ROLE, "kms:Decrypt", {"PCR4": B4})
    assert not allows(any_value, ROLE, "kms:Decrypt", None)
    all_values = policy(allow({"ForAllValues:StringEquals": {KEY + "4": [A4]}}))
    assert allows(all_values, ROLE, "kms:Decrypt", {"PCR4": A4})
    assert not allows(all_values, ROLE, "kms:Decrypt", {"PCR4": B4})
    assert allows(all_values, ROLE, "kms:Decrypt", None)  # ForAllValues over an absent key is vacuously true


def test_other_condition_keys_from_context():
    p = policy(allow({"StringEquals": {"aws:SourceVpc": "vpc-1"}, "StringEqualsIgnoreCase": {KEY + "4": A4}}))
    assert not allows(p, ROLE, "kms:Decrypt", {"PCR4": A4})
    assert allows(p, ROLE, "kms:Decrypt", {"PCR4": A4}, {"aws:SourceVpc": "vpc-1"})
    by_arn = policy(allow({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/A*"}}, principal="*"))
    assert allows(by_arn, ROLE, "kms:Decrypt")
    assert not allows(by_arn, OTHER_ROLE, "kms:Decrypt")
    # Unsupported operators are fine on absent keys, an error on present ones.
    ip = policy(allow({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    assert not allows(ip, ROLE, "kms:Decrypt")
    with pytest.raises(SimulatorError, match="IpAddress"):
        allows(ip, ROLE, "kms:Decrypt", None, {"aws:SourceIp": "10.0.0.1"})


def test_policy_as_json_text_and_malformed_policies():
    assert allows(json.dumps(policy(allow(None))), ROLE, "kms:Decrypt")
    with pytest.raises(SimulatorError, match="not valid JSON"):
        allows("{", ROLE, "kms:Decrypt")
    with pytest.raises(SimulatorError, match="Effect"):
        allows(policy({"Effect": "Maybe", "Principal": "*", "Action": "kms:*"}), ROLE, "kms:Decrypt")
    with pytest.raises(SimulatorError, match="action"):
        allows(policy(allow(None)), ROLE, "Decrypt")


HEX = st.text("0123456789abcdef", min_size=96, max_size=96)
IMAGES = st.lists(st.fixed_dictionaries({"PCR4": HEX, "PCR7": HEX}), min_size=1, max_size=5,
                  unique_by=(lambda m: m["PCR4"], lambda m: m["PCR7"]))


@settings(max_examples=60, deadline=None)
@given(images=IMAGES, probe=st.fixed_dictionaries({"PCR4": HEX, "PCR7": HEX}))
def test_one_statement_per_image_accepts_exactly_the_images(images, probe):
    statements = [allow({"StringEqualsIgnoreCase": {KEY + "4": m["PCR4"], KEY + "7": m["PCR7"]}}) for m in images]
    p = policy(*statements)
    for m in images:
        assert allows(p, ROLE, "kms:Decrypt", m)
        assert allows(p, ROLE, "kms:Decrypt", {"PCR4": m["PCR4"].upper(), "PCR7": m["PCR7"]})
        assert not allows(p, ROLE, "kms:Decrypt", {"PCR4": m["PCR4"]})
        assert not allows(p, OTHER_ROLE, "kms:Decrypt", m)
    for first in images:
        for second in images:
            if first is not second:
                assert not allows(p, ROLE, "kms:Decrypt", {"PCR4": first["PCR4"], "PCR7": second["PCR7"]})
    assert allows(p, ROLE, "kms:Decrypt", probe) == (probe in images)


@settings(max_examples=60, deadline=None)
@given(images=IMAGES.filter(lambda ms: len(ms) >= 2))
def test_lists_of_values_accept_cross_image_combinations(images):
    """Why the module writes one statement per image: lists per key accept combinations no image had."""
    merged = policy(allow({"StringEqualsIgnoreCase": {KEY + "4": [m["PCR4"] for m in images],
                                                      KEY + "7": [m["PCR7"] for m in images]}}))
    assert allows(merged, ROLE, "kms:Decrypt", {"PCR4": images[0]["PCR4"], "PCR7": images[1]["PCR7"]})


@settings(max_examples=60, deadline=None)
@given(images=IMAGES, deny_index=st.integers(min_value=0, max_value=4))
def test_a_matching_deny_always_wins(images, deny_index):
    statements = [allow({"StringEqualsIgnoreCase": {KEY + "4": m["PCR4"], KEY + "7": m["PCR7"]}}) for m in images]
    denied = images[deny_index % len(images)]
    statements.insert(deny_index % (len(statements) + 1),
                      allow({"StringEqualsIgnoreCase": {KEY + "4": denied["PCR4"]}}, principal="*",
                            action=("kms:*",), effect="Deny"))
    p = policy(*statements)
    for m in images:
        assert allows(p, ROLE, "kms:Decrypt", m) == (m["PCR4"] != denied["PCR4"])
