# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""KMS key policy transformation: inputs refused, merge/rollover (hypothesis properties), analysis, re-read loop."""
import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.attestable.ami.plugins.module_utils._aws import kms_policy as kp
from ansible_collections.attestable.ami.plugins.module_utils._aws.kms_policy_simulator import allows

ACCOUNT = "111122223333"
ROLE = "arn:aws:iam::%s:role/App" % ACCOUNT
ADMIN = "arn:aws:iam::%s:role/KeyAdmin" % ACCOUNT
ZERO = "0" * 96
ADMIN_STATEMENT = {"Sid": "Allow administration", "Effect": "Allow", "Principal": {"AWS": ADMIN},
                   "Action": ["kms:Create*", "kms:Describe*", "kms:Put*", "kms:ScheduleKeyDeletion"], "Resource": "*"}
ROOT_STATEMENT = {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                  "Principal": {"AWS": "arn:aws:iam::%s:root" % ACCOUNT}, "Action": "kms:*", "Resource": "*"}


def measurements(pcr4, pcr7=kp.STANDARD_BOOT_PCR7, pcr12=ZERO):
    return {"HashAlgorithm": "SHA384", "PCR4": pcr4, "PCR7": pcr7, "PCR12": pcr12}


def statement_for(image, m, pcrs=("PCR4", "PCR12")):
    return kp.build_statement(image, m, list(pcrs), [ROLE], kp.DEFAULT_ACTIONS)


def authorize(policy, image, m, keep=2, pcrs=("PCR4", "PCR12")):
    return kp.merge(policy, kp.statement_id(image), statement_for(image, m, pcrs), keep)


# ---- inputs ---------------------------------------------------------------------------------------------

def test_statement_ids_are_prefixed_and_unambiguous():
    assert kp.statement_id("ami-0123456789abcdef0") == "AttestableAMI-ami-0123456789abcdef0"
    names = ["my image", "my_image", "my_20image", "my/image", "my.image", "my_2eimage", "émage"]
    sids = [kp.statement_id(n) for n in names]
    assert len(set(sids)) == len(names)
    assert all(s.startswith(kp.SID_PREFIX) for s in sids)
    assert kp.statement_id("my image") == "AttestableAMI-my_20image"
    with pytest.raises(kp.PolicyError, match="image"):
        kp.statement_id("")
    with pytest.raises(kp.PolicyError, match="128"):
        kp.statement_id("x" * 129)


def test_actions():
    assert kp.normalize_actions(None) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kp.normalize_actions(["KMS:decrypt", "kms:Decrypt", "kms:DeriveSharedSecret"]) == [
        "kms:Decrypt", "kms:DeriveSharedSecret"]
    with pytest.raises(kp.PolicyError, match="GenerateRandom cannot be granted by a key policy"):
        kp.normalize_actions(["kms:Decrypt", "kms:GenerateRandom"])
    with pytest.raises(kp.PolicyError, match="kms:Encrypt"):
        kp.normalize_actions(["kms:Encrypt"])
    with pytest.raises(kp.PolicyError, match="kms:\\*"):
        kp.normalize_actions(["kms:*"])


def test_principals():
    assert kp.normalize_principals([ROLE, ROLE, "arn:aws:iam::%s:root" % ACCOUNT]) == [
        ROLE, "arn:aws:iam::%s:root" % ACCOUNT]
    for bad in ["AppRole", "*", "arn:aws:iam::1234:role/App", "arn:aws:s3:::bucket", ""]:
        with pytest.raises(kp.PolicyError, match="not an IAM ARN"):
            kp.normalize_principals([bad])
    with pytest.raises(kp.PolicyError, match="non-empty list"):
        kp.normalize_principals([])


def test_measurements_are_validated_and_lowercased():
    m = kp.prepare_measurements(measurements("A" * 96))
    assert m["PCR4"] == "a" * 96
    with pytest.raises(kp.PolicyError, match="PCR4 must be 96"):
        kp.prepare_measurements(measurements("a" * 95))
    with pytest.raises(kp.PolicyError, match="HashAlgorithm"):
        kp.prepare_measurements({"HashAlgorithm": "SHA256", "PCR4": "a" * 96})
    with pytest.raises(kp.PolicyError, match="must be a dict"):
        kp.prepare_measurements("a" * 96)


def test_boot_mode_resolution():
    """Stated by the option or measurements.boot_mode; never inferred from PCR7 (the old code took any PCR7 other
    than the standard value as Secure Boot, and an absent one as standard)."""
    for m in (measurements("a" * 96), measurements("a" * 96, pcr7="c" * 96), {"PCR4": "a" * 96}):
        with pytest.raises(kp.PolicyError, match="boot mode of the image is unknown.*never guessed.*boot_mode"):
            kp.resolve_boot_mode(None, m)
    assert kp.resolve_boot_mode(None, dict(measurements("a" * 96), boot_mode="Secure-Boot")) == "secure_boot"
    assert kp.resolve_boot_mode(None, dict(measurements("a" * 96), boot_mode="standard")) == "standard"
    assert kp.resolve_boot_mode("standard", measurements("a" * 96, pcr7="c" * 96)) == "standard"
    assert kp.resolve_boot_mode("secure_boot", dict(measurements("a" * 96), boot_mode="standard")) == "secure_boot"
    with pytest.raises(kp.PolicyError, match="boot_mode"):
        kp.resolve_boot_mode(None, dict(measurements("a" * 96), boot_mode="fast"))


def test_binding_checks():
    m = measurements("a" * 96)
    with pytest.raises(kp.PolicyError, match="GHSA-xrv8-2pf5-f3q7"):
        kp.check_binding("standard", ["PCR4"], m)
    kp.check_binding("standard", ["PCR4"], m, allow_missing_pcr12=True)
    with pytest.raises(kp.PolicyError, match="must include PCR4"):
        kp.check_binding("standard", ["PCR12"], m)
    with pytest.raises(kp.PolicyError, match="must include PCR7"):
        kp.check_binding("secure_boot", ["PCR4", "PCR12"], m)
    with pytest.raises(kp.PolicyError, match="no value for PCR11"):
        kp.check_binding("standard", ["PCR4", "PCR11", "PCR12"], m)
    assert kp.normalize_pcr_names(["PCR12", 4, "pcr4", "7"]) == ["PCR4", "PCR7", "PCR12"]
    with pytest.raises(kp.PolicyError, match="not a PCR name"):
        kp.normalize_pcr_names(["PCR24"])


def test_statement_shape():
    s = statement_for("ami-1", measurements("A" * 96))
    assert s["Condition"] == {"StringEqualsIgnoreCase": {
        "kms:RecipientAttestation:NitroTPMPCR4": "a" * 96, "kms:RecipientAttestation:NitroTPMPCR12": ZERO}}
    assert all(isinstance(v, str) for v in s["Condition"]["StringEqualsIgnoreCase"].values())
    assert s["Principal"] == {"AWS": ROLE} and s["Effect"] == "Allow" and "Resource" in s


# ---- merge and rollover ---------------------------------------------------------------------------------

def test_rollover_keep_two_and_the_simulator():
    a, b, c = (measurements(x * 96) for x in "abc")
    policy = {"Version": "2012-10-17", "Statement": [ADMIN_STATEMENT]}
    for image, m in (("ami-a", a), ("ami-b", b), ("ami-c", c)):
        result = authorize(policy, image, m)
        policy = result.policy
    assert result.removed == ["AttestableAMI-ami-a"]
    assert kp.owned_sids(policy) == ["AttestableAMI-ami-b", "AttestableAMI-ami-c"]
    assert policy["Statement"][0] == ADMIN_STATEMENT
    assert allows(policy, ROLE, "kms:Decrypt", b) and allows(policy, ROLE, "kms:GenerateDataKey", c)
    assert not allows(policy, ROLE, "kms:Decrypt", a)
    assert not allows(policy, ROLE, "kms:Decrypt", {"PCR4": a["PCR4"], "PCR12": c["PCR12"]})
    assert not allows(policy, ROLE, "kms:Encrypt", c)


def test_secure_boot_rollover_refuses_cross_image_mix():
    a, b, c = (measurements(x * 96, pcr7=y * 96) for x, y in ("a1", "b2", "c3"))
    policy = {"Statement": [ADMIN_STATEMENT]}
    for image, m in (("ami-a", a), ("ami-b", b), ("ami-c", c)):
        policy = authorize(policy, image, m, pcrs=("PCR4", "PCR7", "PCR12")).policy
    assert allows(policy, ROLE, "kms:Decrypt", b) and allows(policy, ROLE, "kms:Decrypt", c)
    assert not allows(policy, ROLE, "kms:Decrypt", a)
    assert not allows(policy, ROLE, "kms:Decrypt", {"PCR4": a["PCR4"], "PCR7": c["PCR7"], "PCR12": ZERO})
    assert not allows(policy, ROLE, "kms:Decrypt", {"PCR4": b["PCR4"], "PCR7": c["PCR7"], "PCR12": ZERO})


def test_reauthorizing_is_a_no_op_and_a_changed_image_moves_last():
    a, b = measurements("a" * 96), measurements("b" * 96)
    policy = authorize(authorize({"Statement": [ADMIN_STATEMENT]}, "ami-a", a).policy, "ami-b", b).policy
    again = authorize(policy, "ami-a", a)
    assert not again.changed and again.policy == policy
    # A statement KMS returns with a one-element list instead of a string is still the same statement.
    relisted = copy.deepcopy(policy)
    relisted["Statement"][1]["Principal"]["AWS"] = [ROLE]
    assert not authorize(relisted, "ami-a", a).changed
    moved = authorize(policy, "ami-a", measurements("d" * 96))
    assert moved.changed and kp.owned_sids(moved.policy) == ["AttestableAMI-ami-b", "AttestableAMI-ami-a"]


def test_absent_removes_only_the_image_statement():
    policy = authorize({"Statement": [ADMIN_STATEMENT, ROOT_STATEMENT]}, "ami-a", measurements("a" * 96)).policy
    result = kp.merge(policy, kp.statement_id("ami-a"), None)
    assert result.changed and result.removed == ["AttestableAMI-ami-a"]
    assert result.policy["Statement"] == [ADMIN_STATEMENT, ROOT_STATEMENT]
    assert not kp.merge(result.policy, kp.statement_id("ami-a"), None).changed


HEX = st.text("0123456789abcdef", min_size=96, max_size=96)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
FOREIGN_SID = TEXT.filter(lambda s: not s.startswith(kp.SID_PREFIX))
UNOWNED = st.fixed_dictionaries(
    {"Effect": st.sampled_from(["Allow", "Deny"]),
     "Principal": st.one_of(st.just("*"), st.fixed_dictionaries({"AWS": st.sampled_from(
         [ROLE, ADMIN, ACCOUNT, [ROLE, ADMIN], "arn:aws:iam::%s:root" % ACCOUNT])})),
     "Action": st.one_of(st.sampled_from(["kms:*", "kms:Decrypt", "kms:Put*"]),
                         st.lists(st.sampled_from(["kms:Encrypt", "kms:Decrypt", "kms:Describe*"]), max_size=3)),
     "Resource": st.just("*")},
    optional={"Sid": FOREIGN_SID,
              "Condition": st.dictionaries(st.sampled_from(["StringEquals", "Bool", "StringLike"]),
                                           st.dictionaries(TEXT, st.one_of(TEXT, st.lists(TEXT, max_size=3)),
                                                           max_size=2), max_size=2)})
OWNED_IMAGE = st.sampled_from(["ami-a", "ami-b", "ami-c", "ami-d", "old image", "ami-e"])


@st.composite
def policies(draw):
    unowned = draw(st.lists(UNOWNED, max_size=6))
    owned_images = draw(st.lists(OWNED_IMAGE, unique=True, max_size=4))
    statements = list(unowned)
    for image in owned_images:
        position = draw(st.integers(min_value=0, max_value=len(statements)))
        statements.insert(position, statement_for(image, measurements(draw(HEX))))
    policy = {"Statement": statements}
    if draw(st.booleans()):
        policy = {"Version": "2012-10-17", "Id": draw(TEXT), "Statement": statements}
    return policy


def _unowned(policy):
    return [s for s in policy.get("Statement", []) if not kp.is_owned(s)]


@settings(max_examples=200, deadline=None)
@given(policy=policies(), image=OWNED_IMAGE, pcr4=HEX, keep=st.integers(min_value=0, max_value=4))
def test_merge_changes_only_owned_statements(policy, image, pcr4, keep):
    original = copy.deepcopy(policy)
    sid = kp.statement_id(image)
    statement = statement_for(image, measurements(pcr4))
    result = kp.merge(policy, sid, statement, keep)
    assert policy == original  # the input is not modified
    assert _unowned(result.policy) == _unowned(original)  # same statements, same order, same content
    assert dict((k, v) for k, v in result.policy.items() if k != "Statement") == \
        dict((k, v) for k, v in original.items() if k != "Statement")
    mine = [s for s in result.policy["Statement"] if s.get("Sid") == sid]
    assert len(mine) == 1 and kp.statements_equal(mine[0], statement)
    owned_before = kp.owned_sids(original)
    owned_after = kp.owned_sids(result.policy)
    if keep:
        assert len(owned_after) <= keep
    # The survivors are the newest: what was there (in order, without the image's own) then the image.
    expected = [s for s in owned_before if s != sid]
    if sid in owned_before and kp.statements_equal(
            [s for s in original["Statement"] if s.get("Sid") == sid][0], statement):
        expected = owned_before
    else:
        expected = expected + [sid]
    if keep and len(expected) > keep:
        others = [s for s in expected if s != sid]
        drop = others[:len(expected) - keep]
        expected = [s for s in expected if s not in drop]
    assert owned_after == expected
    assert sorted(result.removed) == sorted(set(owned_before) - set(owned_after))
    assert result.changed == (result.policy != original)
    # Idempotent: the same request again changes nothing.
    assert not kp.merge(result.policy, sid, statement, keep).changed
    # The text is valid JSON under KMS's size limit, or a clear error.
    try:
        text = kp.serialize(result.policy)
    except kp.PolicyError as exc:
        assert "32768" in str(exc)
    else:
        assert len(text.encode("utf-8")) <= kp.POLICY_SIZE_LIMIT
        assert json.loads(text) == result.policy


@settings(max_examples=100, deadline=None)
@given(policy=policies(), image=OWNED_IMAGE)
def test_absent_changes_only_the_image_statement(policy, image):
    sid = kp.statement_id(image)
    result = kp.merge(policy, sid, None)
    assert _unowned(result.policy) == _unowned(policy)
    assert kp.owned_sids(result.policy) == [s for s in kp.owned_sids(policy) if s != sid]
    assert result.changed == (sid in kp.owned_sids(policy))


@settings(max_examples=30, deadline=None)
@given(filler=st.integers(min_value=20000, max_value=40000), pcr4=HEX)
def test_size_limit(filler, pcr4):
    policy = {"Statement": [dict(ADMIN_STATEMENT, Sid="x" * filler)]}
    result = authorize(policy, "ami-a", measurements(pcr4))
    try:
        text = kp.serialize(result.policy)
    except kp.PolicyError as exc:
        assert "over KMS's limit of 32768 bytes" in str(exc)
        assert len(json.dumps(result.policy, separators=(",", ":"))) > kp.POLICY_SIZE_LIMIT
    else:
        assert len(text.encode("utf-8")) <= kp.POLICY_SIZE_LIMIT
        assert json.loads(text) == result.policy


# ---- analysis -------------------------------------------------------------------------------------------

def test_weaknesses_name_root_and_unconditional_statements():
    policy = authorize({"Statement": [ROOT_STATEMENT, ADMIN_STATEMENT]}, "ami-a", measurements("a" * 96)).policy
    found = kp.weaknesses(policy, [ROLE], kp.DEFAULT_ACTIONS)
    assert len(found) == 1
    assert "'Enable IAM User Permissions'" in found[0] and "whole account 111122223333" in found[0]
    direct = {"Sid": "Old decrypt", "Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt"}
    policy = authorize({"Statement": [ADMIN_STATEMENT, direct]}, "ami-a", measurements("a" * 96)).policy
    found = kp.weaknesses(policy, [ROLE], kp.DEFAULT_ACTIONS)
    assert len(found) == 1 and "'Old decrypt'" in found[0] and "kms:Decrypt" in found[0]
    assert "kms:GenerateDataKey" not in found[0]
    other_account = dict(ROOT_STATEMENT, Principal={"AWS": "arn:aws:iam::444455556666:root"})
    found = kp.weaknesses({"Statement": [ADMIN_STATEMENT, other_account]}, [ROLE], kp.DEFAULT_ACTIONS)
    assert len(found) == 1 and "whole account 444455556666" in found[0]
    safe = authorize({"Statement": [ADMIN_STATEMENT]}, "ami-a", measurements("a" * 96)).policy
    assert kp.weaknesses(safe, [ROLE], kp.DEFAULT_ACTIONS) == []
    # A statement bound to other PCRs is not a weakness: it needs attestation too.
    pcr_bound = dict(direct, Condition={"StringEqualsIgnoreCase": {"kms:RecipientAttestation:NitroTPMPCR7": "c" * 96}})
    assert kp.weaknesses({"Statement": [ADMIN_STATEMENT, pcr_bound]}, [ROLE], kp.DEFAULT_ACTIONS) == []


def test_lockout_check():
    before = {"Statement": [ADMIN_STATEMENT]}
    after = authorize(before, "ami-a", measurements("a" * 96)).policy
    kp.check_lockout(before, after)
    assert kp.administrators(after) == [ADMIN]
    with pytest.raises(kp.PolicyError, match="stop .*KeyAdmin from administering"):
        kp.check_lockout(before, {"Statement": after["Statement"][1:]})
    with pytest.raises(kp.PolicyError, match="lock the key's administrators out"):
        kp.check_lockout({"Statement": []}, {"Statement": after["Statement"][1:]})


def test_unanalysable_policies_are_refused_with_a_policy_error():
    broken = {"Statement": [ADMIN_STATEMENT, {"Sid": "No effect", "Principal": "*", "Action": "kms:*"}]}
    with pytest.raises(kp.PolicyError, match="cannot analyse the key policy.*Effect"):
        kp.administrators(broken)
    with pytest.raises(kp.PolicyError, match="cannot analyse"):
        kp.weaknesses(broken, [ROLE], kp.DEFAULT_ACTIONS)


# ---- read, merge, re-read, write ------------------------------------------------------------------------

class Store(object):
    """An in-memory key policy with a hook that runs on a chosen read (someone else editing meanwhile)."""

    def __init__(self, policy, on_read=None):
        self.text = json.dumps(policy)
        self.reads = 0
        self.writes = []
        self.on_read = on_read or {}

    def read(self):
        self.reads += 1
        hook = self.on_read.get(self.reads)
        if hook:
            self.text = json.dumps(hook(json.loads(self.text)))
        return self.text

    def write(self, text):
        self.writes.append(text)
        self.text = text


def _transform(image, m):
    return lambda current: kp.merge(current, kp.statement_id(image), statement_for(image, m), 2)


def test_apply_merges_again_when_the_policy_changed_between_read_and_write():
    other = {"Sid": "Added meanwhile", "Effect": "Allow", "Principal": {"AWS": ADMIN}, "Action": "kms:Describe*"}
    store = Store({"Statement": [ADMIN_STATEMENT]},
                  on_read={2: lambda p: dict(p, Statement=p["Statement"] + [other])})
    outcome = kp.apply(store.read, store.write, _transform("ami-a", measurements("a" * 96)))
    assert outcome.written and outcome.attempts == 2 and store.reads == 3
    final = json.loads(store.text)
    assert [s.get("Sid") for s in final["Statement"]] == ["Allow administration", "Added meanwhile",
                                                          "AttestableAMI-ami-a"]


def test_apply_check_mode_and_no_change_do_not_write():
    store = Store({"Statement": [ADMIN_STATEMENT]})
    outcome = kp.apply(store.read, store.write, _transform("ami-a", measurements("a" * 96)), check_mode=True)
    assert not outcome.written and outcome.merged.changed and store.writes == []
    kp.apply(store.read, store.write, _transform("ami-a", measurements("a" * 96)))
    assert len(store.writes) == 1
    outcome = kp.apply(store.read, store.write, _transform("ami-a", measurements("a" * 96)))
    assert not outcome.merged.changed and len(store.writes) == 1


def test_apply_gives_up_when_the_policy_keeps_changing():
    def touch(p):
        return dict(p, Id=p.get("Id", "") + "x")
    store = Store({"Statement": [ADMIN_STATEMENT]}, on_read=dict((n, touch) for n in range(2, 10)))
    with pytest.raises(kp.PolicyError, match="changed on every one of 3 attempts"):
        kp.apply(store.read, store.write, _transform("ami-a", measurements("a" * 96)))
    assert store.writes == []
