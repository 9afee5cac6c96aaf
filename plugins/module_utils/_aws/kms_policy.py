# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""KMS key policy transformation for attestation: one owned statement per image, merged into a policy
without touching anything else.

Plain Python (3.9+), no Ansible imports. Ours, not amazon.aws's: amazon.aws.kms_key replaces a key policy as a
whole document, and a statement-level merge that never touches other administrators' statements is the point here.

Ownership: a statement is owned by this collection when its Sid starts with SID_PREFIX
("AttestableAMI-"); the rest of the Sid is the image identifier with every character outside
[A-Za-z0-9-] written as "_" plus two lowercase hex digits per UTF-8 byte ("_" itself becomes "_5f"),
so different images never share a Sid. Statements without the prefix are never changed, reordered or
dropped. Owned statements are kept in authorization order: a new or changed image statement is
appended after everything else; with ``keep`` the oldest owned statements beyond that number are removed.

Hand edits: an owned statement that is not in the form this module writes (see ``is_module_form``: an Allow
of recipient actions for AWS principals, conditioned by StringEqualsIgnoreCase on PCR keys only, one value
each) was edited by someone (a narrowed condition, a Deny, ...). It is kept as it is, never replaced, rolled
off or removed, unless ``force`` is given; the caller warns about it.

Boot mode is never inferred from a PCR value: it is stated (option, or measurements.boot_mode as pcr_compute
returns it) or the binding is refused.
"""

import copy
import hashlib
import json
import re

from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as meas
from ansible_collections.attestable.ami.plugins.module_utils._aws import kms_policy_simulator as simulator

SID_PREFIX = "AttestableAMI-"
CONDITION_OPERATOR = "StringEqualsIgnoreCase"
POLICY_SIZE_LIMIT = 32768  # bytes; KMS's key policy size quota

# The operations whose request carries a Recipient (and so the NitroTPM condition keys) and that a key
# policy can grant. kms:GenerateRandom also takes a Recipient, but is not a key operation.
RECIPIENT_ACTIONS = ("kms:Decrypt", "kms:DeriveSharedSecret", "kms:GenerateDataKey", "kms:GenerateDataKeyPair")
DEFAULT_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey"]

STANDARD_BOOT_PCR7 = ("98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578ae72d04ecef661f272d59058b77af35")
ZERO_PCR = "0" * 96
BOOT_MODES = meas.BOOT_MODES
DEFAULT_PCRS = {meas.STANDARD: ["PCR4", "PCR12"], meas.SECURE_BOOT: ["PCR7", "PCR12"]}
ADVISORY = ("without Secure Boot, whoever can change the instance's UEFI data can inject a kernel command line "
            "(for example one that disables dm-verity) without changing PCR4; only PCR12 (48 zero bytes for an "
            "untampered boot) shows it (advisory GHSA-xrv8-2pf5-f3q7)")

_PRINCIPAL_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/[\w+=,.@/-]+|user/[\w+=,.@/-]+)$")
_PCR_NAME = meas.PCR_NAME
_SID_SAFE = re.compile(r"[A-Za-z0-9-]")


class PolicyError(ValueError):
    """An input or a policy the module refuses; the message names it and what was expected."""


# ---- inputs -------------------------------------------------------------------------------------------

def statement_id(image):
    if not isinstance(image, str) or not image.strip():
        raise PolicyError("image must be a non-empty AMI id or name, got %r" % (image,))
    if len(image) > 128:
        raise PolicyError("image must be at most 128 characters (an AMI id or name), got %d" % len(image))
    escaped = []
    for char in image:
        if _SID_SAFE.match(char):
            escaped.append(char)
        else:
            escaped.extend("_%02x" % byte for byte in char.encode("utf-8"))
    return SID_PREFIX + "".join(escaped)


def is_owned(statement):
    return isinstance(statement, dict) and str(statement.get("Sid", "")).startswith(SID_PREFIX)


def normalize_actions(actions):
    if actions is None:
        actions = DEFAULT_ACTIONS
    if not isinstance(actions, list) or not actions:
        raise PolicyError("actions must be a non-empty list such as %s, got %r" % (DEFAULT_ACTIONS, actions))
    by_lower = dict((a.lower(), a) for a in RECIPIENT_ACTIONS)
    result = []
    for action in actions:
        name = str(action)
        if name.lower() == "kms:generaterandom":
            raise PolicyError("actions: kms:GenerateRandom cannot be granted by a key policy (it is not an operation "
                              "on a key; only IAM policies authorize it); remove it from actions")
        if name.lower() not in by_lower:
            raise PolicyError("actions: %r is not allowed; the NitroTPM attestation condition keys are only present "
                              "on %s, so only those can be bound to an image" % (name, ", ".join(RECIPIENT_ACTIONS)))
        canonical = by_lower[name.lower()]
        if canonical not in result:
            result.append(canonical)
    return result


def normalize_principals(principals):
    if not isinstance(principals, list) or not principals:
        raise PolicyError("principals must be a non-empty list of IAM role or user ARNs "
                          "(arn:aws:iam::111122223333:role/NAME), got %r" % (principals,))
    result = []
    for principal in principals:
        if not isinstance(principal, str) or not _PRINCIPAL_ARN.match(principal):
            raise PolicyError("principals: %r is not an IAM ARN; expected arn:aws:iam::<12-digit account>:role/NAME, "
                              ":user/NAME or :root" % (principal,))
        if principal not in result:
            result.append(principal)
    return result


def normalize_pcr_names(pcrs):
    """['PCR4', 12, '7'] -> ['PCR4', 'PCR7', 'PCR12'] (sorted by index, no duplicates)."""
    if not isinstance(pcrs, list) or not pcrs:
        raise PolicyError("pcrs must be a non-empty list of PCR names such as ['PCR4', 'PCR12'], got %r" % (pcrs,))
    try:
        names = set(meas.pcr_name(name, "pcrs") for name in pcrs)
    except meas.MeasurementError as exc:
        raise PolicyError(str(exc))
    return sorted(names, key=meas.pcr_index)


def prepare_measurements(measurements):
    """A copy of measurements with PCR values lowercased, validated as pcr_compute's output."""
    try:
        return meas.normalize(measurements)
    except meas.MeasurementError as exc:
        raise PolicyError(str(exc))


def resolve_boot_mode(option, measurements, where="measurements"):
    """Boot mode: the option if set, else measurements.boot_mode. Never inferred from a PCR value: when neither
    states it, PolicyError saying how to state it."""
    value = option or (measurements or {}).get("boot_mode")
    if not value:
        raise PolicyError("the boot mode of the image is unknown (%s carry no boot_mode and the boot_mode option is "
                          "not set); it is never guessed from PCR values. Set boot_mode to standard or secure_boot "
                          "(role: kms_authorize_boot_mode), or give measurements with boot_mode as "
                          "attestable.ami.pcr_compute returns them (the manifest's measurements.boot_mode)" % where)
    try:
        return meas.boot_mode(value, "boot_mode")
    except meas.MeasurementError as exc:
        raise PolicyError(str(exc))


def check_binding(boot_mode, pcrs, measurements, allow_missing_pcr12=False, expect_nonzero_pcr12=False):
    """Refuse bindings that let other images (or a tampered boot) through."""
    if boot_mode == meas.STANDARD:
        if "PCR4" not in pcrs:
            raise PolicyError("pcrs %s for a standard-boot image must include PCR4 (the boot applications: the "
                              "image itself); without it any image would be accepted" % pcrs)
        if "PCR12" not in pcrs and not allow_missing_pcr12:
            raise PolicyError("pcrs %s for a standard-boot image must include PCR12: %s. Add PCR12, boot with "
                              "Secure Boot and bind PCR7, or set allow_missing_pcr12=true to accept the risk"
                              % (pcrs, ADVISORY))
    elif "PCR7" not in pcrs:
        raise PolicyError("pcrs %s for a Secure Boot image must include PCR7 (the Secure Boot policy and the "
                          "certificate that signed the image)" % pcrs)
    missing = [p for p in pcrs if p not in measurements]
    if missing:
        raise PolicyError("measurements hold no value for %s (they have %s); measure the image again or choose pcrs "
                          "it has" % (", ".join(missing), ", ".join(k for k in measurements if meas.is_pcr_key(k))))
    pcr7 = str(measurements.get("PCR7", "")).lower()
    if boot_mode == meas.SECURE_BOOT and pcr7 == STANDARD_BOOT_PCR7:
        raise PolicyError("boot_mode is secure_boot but the measured PCR7 (%s) equals the standard-boot value (%s): "
                          "every instance of any image booted without Secure Boot reports that PCR7, so binding it "
                          "would let them all in. Measure with the Secure Boot variables (pcr_compute's pk, kek, db) "
                          "or bind the image as boot_mode=standard" % (pcr7, STANDARD_BOOT_PCR7))
    pcr12 = measurements.get("PCR12")
    if pcr12 is not None and str(pcr12).lower() != ZERO_PCR and not expect_nonzero_pcr12:
        raise PolicyError("the measured PCR12 (%s) is not 48 zero bytes (%s...): an untampered boot of a UKI with "
                          "an embedded command line extends nothing into PCR12, so something extended it when the "
                          "reference was computed (a command line or credentials passed from outside the UKI). "
                          "Measure again, or set expect_nonzero_pcr12=true if you expect it" % (pcr12, ZERO_PCR[:8]))


def plan_binding(image, measurements, principals, actions, boot_mode=None, pcrs=None, allow_missing_pcr12=False,
                 expect_nonzero_pcr12=False, measurements_source="measurements"):
    """Validate everything about one image's binding and build its statement; returns (statement, facts) with
    facts = measurements, boot_mode, pcrs, statement. Raises PolicyError for anything refused."""
    principals = normalize_principals(principals)
    actions = normalize_actions(actions)
    statement_id(image)
    measurements = prepare_measurements(measurements)
    mode = resolve_boot_mode(boot_mode, measurements, measurements_source)
    chosen = normalize_pcr_names(pcrs or DEFAULT_PCRS[mode])
    check_binding(mode, chosen, measurements, allow_missing_pcr12, expect_nonzero_pcr12)
    statement = build_statement(image, measurements, chosen, principals, actions)
    return statement, dict(measurements=measurements, boot_mode=mode, pcrs=chosen, statement=statement)


def build_statement(image, measurements, pcrs, principals, actions):
    """The one statement that lets principals run actions only from an instance booted from this image."""
    conditions = dict(("%s%s" % (simulator.PCR_KEY_PREFIX, pcr[3:]), measurements[pcr].lower()) for pcr in pcrs)
    return {
        "Sid": statement_id(image),
        "Effect": "Allow",
        "Principal": {"AWS": principals[0] if len(principals) == 1 else list(principals)},
        "Action": list(actions),
        "Resource": "*",
        "Condition": {CONDITION_OPERATOR: conditions},
    }


# ---- the policy ---------------------------------------------------------------------------------------

def parse_policy(text):
    try:
        policy = json.loads(text) if isinstance(text, (str, bytes)) else copy.deepcopy(text)
    except ValueError as exc:
        raise PolicyError("the key policy is not valid JSON: %s" % exc)
    if not isinstance(policy, dict):
        raise PolicyError("the key policy must be a JSON object, got %s" % type(policy).__name__)
    statements = policy.get("Statement", [])
    if not isinstance(statements, (list, dict)):
        raise PolicyError("the key policy's Statement must be a list, got %s" % type(statements).__name__)
    return policy


def _statements(policy):
    statements = policy.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def _canonical(statement):
    """A comparable form: single values and one-element lists alike, lists order-insensitive."""
    if isinstance(statement, dict):
        return tuple(sorted((k, _canonical(v)) for k, v in statement.items()))
    if isinstance(statement, list):
        items = sorted((_canonical(v) for v in statement), key=repr)
        return items[0] if len(items) == 1 else ("__list__",) + tuple(items)
    return statement


def statements_equal(a, b):
    return _canonical(a) == _canonical(b)


def owned_sids(policy):
    return [s["Sid"] for s in _statements(policy) if is_owned(s)]


def is_module_form(statement):
    """True when an owned statement has the form build_statement gives (its values may differ): an Allow of
    recipient actions for AWS principals, conditioned by StringEqualsIgnoreCase on PCR keys only, one 96-hex value
    each. Anything else in the owned Sid namespace is a hand edit."""
    fields = {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
    if not isinstance(statement, dict) or set(statement) != fields:
        return False
    if statement["Effect"] != "Allow" or statement["Resource"] != "*":
        return False
    principal = statement["Principal"]
    if not isinstance(principal, dict) or list(principal) != ["AWS"]:
        return False
    names = simulator.as_list(principal["AWS"])
    if not names or not all(isinstance(n, str) and _PRINCIPAL_ARN.match(n) for n in names):
        return False
    actions = simulator.as_list(statement["Action"])
    if not actions or not all(a in RECIPIENT_ACTIONS for a in actions):
        return False
    condition = statement["Condition"]
    if not isinstance(condition, dict) or list(condition) != [CONDITION_OPERATOR]:
        return False
    keys = condition[CONDITION_OPERATOR]
    if not isinstance(keys, dict) or not keys:
        return False
    return all(simulator.is_pcr_key(k) and _PCR_NAME.match(k[len(simulator.PCR_KEY_PREFIX):])
               and meas.is_pcr_value(v, any_case=False) for k, v in keys.items())


def hand_edit_reason(statement):
    """Why an owned statement counts as a hand edit (None when it has the module's form)."""
    if is_module_form(statement):
        return None
    if isinstance(statement, dict) and statement.get("Effect") == "Deny":
        return "it is a Deny"
    if isinstance(statement, dict) and isinstance(statement.get("Condition"), dict):
        other = [op for op in statement["Condition"] if op != CONDITION_OPERATOR]
        if other:
            return "its condition uses %s besides %s" % (", ".join(sorted(other)), CONDITION_OPERATOR)
    return "it is not in the form this module writes"


class Merge(object):
    def __init__(self, policy, changed, removed, added, kept_edits=None):
        self.policy = policy
        self.changed = changed
        self.removed = removed  # Sids of owned statements removed (absent or rolled off)
        self.added = added  # Sid of the statement added or replaced, or None
        self.kept_edits = kept_edits or []  # (Sid, reason, what it would have done) of hand edits left alone


def merge(policy, sid, statement=None, keep=0, force=False):
    """Put statement (or, when None, remove the one with sid) into a copy of policy; keep at most `keep` owned
    statements (0: no limit), dropping the oldest. Statements not owned are left exactly as they are; owned
    statements edited by hand are left too (and listed in kept_edits) unless force."""
    policy = parse_policy(policy)
    statements = _statements(policy)
    removed, added, kept_edits = [], None, []
    existing = [i for i, s in enumerate(statements) if isinstance(s, dict) and s.get("Sid") == sid]
    edited = [i for i in existing if hand_edit_reason(statements[i])]
    if edited and not force:
        reason = hand_edit_reason(statements[edited[0]])
        kept_edits.append((sid, reason, "remove it" if statement is None else "replace it"))
    elif statement is None:
        statements = [s for i, s in enumerate(statements) if i not in existing]
        removed = [sid] if existing else []
    elif not (len(existing) == 1 and statements_equal(statements[existing[0]], statement)):
        statements = [s for i, s in enumerate(statements) if i not in existing]
        statements.append(copy.deepcopy(statement))
        added = sid
    if keep and statement is not None:
        owned = [s.get("Sid") for s in statements if is_owned(s)]
        excess = len(owned) - keep
        candidates = [o for o in owned if o != sid]
        drop = []
        for other in candidates:
            if len(drop) >= excess:
                break
            other_statement = [s for s in statements if is_owned(s) and s.get("Sid") == other][0]
            reason = hand_edit_reason(other_statement)
            if reason and not force:
                kept_edits.append((other, reason, "roll it off (keep=%d)" % keep))
                continue
            drop.append(other)
        if drop:
            statements = [s for s in statements if not (is_owned(s) and s.get("Sid") in drop)]
            removed.extend(drop)
    changed = bool(removed) or added is not None
    if not changed:
        return Merge(policy, False, [], None, kept_edits)
    result = copy.deepcopy(policy)
    result["Statement"] = statements
    return Merge(result, True, removed, added, kept_edits)


def describe_kept_edits(merged):
    """Warnings for the hand edits merge left alone."""
    return ["owned statement %r was edited by hand (%s); it is kept as it is, although this run would %s; set "
            "force=true to let it" % (sid, reason, what) for sid, reason, what in merged.kept_edits]


def serialize(policy):
    """Policy text for PutKeyPolicy: indented when that fits KMS's size limit, else compact; PolicyError when
    even the compact form is too large."""
    text = json.dumps(policy, indent=2)
    if len(text.encode("utf-8")) <= POLICY_SIZE_LIMIT:
        return text
    text = json.dumps(policy, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size > POLICY_SIZE_LIMIT:
        raise PolicyError("the key policy would be %d bytes, over KMS's limit of %d bytes; lower keep or remove "
                          "statements from the policy" % (size, POLICY_SIZE_LIMIT))
    return text


# ---- analysis -----------------------------------------------------------------------------------------

def _candidate_principals(policy):
    """Every AWS principal a policy names (accounts as their root ARN), and '*' when it names everyone."""
    found = []
    for statement in _statements(policy):
        for field in ("Principal", "NotPrincipal"):
            block = statement.get(field) if isinstance(statement, dict) else None
            if block is None:
                continue
            values = ["*"] if block == "*" else simulator.as_list(block.get("AWS")) if isinstance(block, dict) else []
            for value in values:
                value = str(value)
                if simulator.ACCOUNT_ID.match(value):
                    value = "arn:aws:iam::%s:root" % value
                if value not in found:
                    found.append(value)
    return found


def policy_principals(policy):
    """The AWS principals a policy names (as written), for messages."""
    return [p for p in _candidate_principals(parse_policy(policy)) if p != "*"]


def _simulate(policy, principal, action):
    try:
        return simulator.evaluate(policy, principal, action)
    except simulator.SimulatorError as exc:
        raise PolicyError("cannot analyse the key policy (%s); fix the policy or remove the statement at fault" % exc)


def administrators(policy):
    """Principals that can run kms:PutKeyPolicy under this policy without an attestation document."""
    policy = parse_policy(policy)
    return [p for p in _candidate_principals(policy)
            if _simulate(policy, p, "kms:PutKeyPolicy").allowed]


def check_lockout(before, after):
    """Refuse a policy that would take key administration away from anyone who has it now (or from everyone)."""
    admins_after = administrators(after)
    lost = [p for p in administrators(before) if p not in admins_after]
    if lost:
        raise PolicyError("the new key policy would stop %s from administering the key (kms:PutKeyPolicy); refusing "
                          "to write it" % ", ".join(lost))
    if not admins_after:
        raise PolicyError("no statement of the key policy lets any principal run kms:PutKeyPolicy without "
                          "attestation; writing it would lock the key's administrators out. Add an administrator "
                          "statement (not owned by this module) first")


def _describe(statement, index):
    sid = statement.get("Sid") if isinstance(statement, dict) else None
    return "statement %r" % sid if sid else "statement #%d (no Sid)" % index


OUTSIDER = "arn:aws:iam::000000000000:role/AnyPrincipal"  # a principal no statement names


def _pcr_conditions(statement):
    """{PCR index: [values]} that a statement's condition constrains (any operator)."""
    found = {}
    condition = statement.get("Condition") if isinstance(statement, dict) else None
    if not isinstance(condition, dict):
        return found
    for keys in condition.values():
        if not isinstance(keys, dict):
            continue
        for key, values in keys.items():
            if simulator.is_pcr_key(key):
                match = _PCR_NAME.match(key[len(simulator.PCR_KEY_PREFIX):])
                if match:
                    found.setdefault(int(match.group(1)), []).extend(str(v).lower() for v in simulator.as_list(values))
    return found


def _recipient_actions_of(statement):
    if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
        return []
    return [a for a in RECIPIENT_ACTIONS if simulator._statement_action_applies(statement, a)]


def _foreign_pcrs(policy):
    """An attestation of another image: every PCR holds a value that no statement names."""
    value = hashlib.sha384(b"another image" + json.dumps(policy, sort_keys=True).encode("utf-8")).hexdigest()
    return dict(("PCR%d" % i, value) for i in range(24))


def _who(principals):
    return ", ".join("any principal" if p == OUTSIDER else p for p in principals)


def weaknesses(policy, principals, actions):
    """Messages about statements that let a recipient operation through without an attestation of the bound
    image, with the worst case assumed for conditions on keys other than the PCRs (they are taken as met in an
    Allow and not met in a Deny). Reported: statements not owned by this module that let the principals run
    the actions without attestation (the account-root statement among them); any Allow that lets anyone run a
    recipient operation without attestation or with the attestation of any image (Null, StringLike "*" or
    ...IfExists on PCR keys, unknown condition keys); Principal "*" or NotPrincipal allowing a recipient
    operation, whatever its organisation/account conditions; a binding of PCR4 alone (PCR12 unbound) or of the
    standard-boot PCR7 without PCR4; owned statements allowing a recipient operation without the canonical
    condition."""
    policy = parse_policy(policy)
    statements = _statements(policy)
    unowned = dict(policy)
    unowned["Statement"] = [s if not is_owned(s) else {"Effect": "Allow", "NotPrincipal": "*", "Action": []}
                            for s in statements]
    found = {}
    # Account-root statements matter even for another account: its IAM can grant the operations unattested.
    accounts = [p for p in _candidate_principals(unowned) if simulator.is_account_principal(p) and p not in principals]
    for principal in list(principals) + accounts:
        for action in actions:
            decision = _simulate(unowned, principal, action)
            if decision.allowed:
                for index in decision.allowing:
                    found.setdefault(index, ([], []))
                    if principal not in found[index][0]:
                        found[index][0].append(principal)
                    if action not in found[index][1]:
                        found[index][1].append(action)

    reasons = {}

    def add(index, reason):
        if reason not in reasons.setdefault(index, []):
            reasons[index].append(reason)

    for index in sorted(found):
        statement = statements[index]
        who, what = found[index]
        message = "lets %s run %s without attestation" % (", ".join(who), ", ".join(what))
        block = statement.get("Principal")
        names = ["*"] if block == "*" else simulator.as_list(block.get("AWS")) if isinstance(block, dict) else []
        accounts_named = sorted(set(simulator.principal_account(str(n)) for n in names
                                    if simulator.is_account_principal(str(n))))
        if accounts_named:
            message += (" (it names the whole account %s, so any IAM policy there can grant these operations)"
                        % ", ".join(accounts_named))
        elif "*" in names or "NotPrincipal" in statement:
            message += " (it applies to every principal)"
        add(index, message)

    # The worst case over every principal the policy names and one it does not name.
    requesters = [p if p != "*" else OUTSIDER for p in _candidate_principals(policy)]
    for principal in list(principals) + [OUTSIDER]:
        if principal not in requesters:
            requesters.append(principal)
    foreign = _foreign_pcrs(policy)
    for label, pcrs in (("without attestation", None), ("with the attestation of any image", foreign)):
        hits = {}
        for principal in requesters:
            for action in RECIPIENT_ACTIONS:
                try:
                    decision = simulator.evaluate(policy, principal, action, pcrs, worst_case=True)
                except simulator.SimulatorError as exc:
                    raise PolicyError("cannot analyse the key policy (%s); fix the policy or remove the statement at "
                                      "fault" % exc)
                if decision.allowed:
                    for index in decision.allowing:
                        who, what = hits.setdefault(index, ([], []))
                        if principal not in who:
                            who.append(principal)
                        if action not in what:
                            what.append(action)
        for index, (who, what) in sorted(hits.items()):
            if label == "without attestation" and index in found:
                continue
            add(index, "lets %s run %s %s (in the worst case: conditions on keys other than the PCRs taken as met)"
                % (_who(who), ", ".join(what), label))

    for index, statement in enumerate(statements):
        granted = _recipient_actions_of(statement)
        if not granted:
            continue
        block = statement.get("Principal")
        names = ["*"] if block == "*" else simulator.as_list(block.get("AWS")) if isinstance(block, dict) else []
        if "*" in names or "NotPrincipal" in statement:
            add(index, "allows %s to every principal (Principal \"*\" or NotPrincipal; conditions on the "
                       "organisation or account do not name who may use the key)" % ", ".join(granted))
        bound = _pcr_conditions(statement)
        if set(bound) == {4}:
            add(index, "binds PCR4 alone: %s" % ADVISORY)
        if 7 in bound and STANDARD_BOOT_PCR7 in bound[7] and 4 not in bound:
            add(index, "binds PCR7 to the standard-boot value %s without PCR4, which every instance of any image "
                       "booted without Secure Boot reports" % STANDARD_BOOT_PCR7)
        if is_owned(statement) and not is_module_form(statement):
            add(index, "is owned by this module (Sid prefix %s) but allows %s without the canonical condition "
                       "(%s on PCR keys only, one value each)" % (SID_PREFIX, ", ".join(granted), CONDITION_OPERATOR))

    messages = []
    for index in sorted(reasons):
        messages.append("key policy %s %s; the attestation statements protect nothing until it is removed or "
                        "narrowed" % (_describe(statements[index], index), "; ".join(reasons[index])))
    return messages


def _altered(value):
    value = str(value).lower()
    return value[:-1] + ("1" if value[-1:] == "0" else "0")


def binding_failures(policy, principal, actions, measurements, pcrs, require_allowed=True):
    """What the binding of an image gets wrong for principal, as messages (empty when nothing): every action must
    be allowed with the image's PCRs (unless not require_allowed: a statement edited by hand may depend on request
    keys the simulator is not given), and refused without attestation, with any one bound PCR altered, and (PCR7
    bound) with the standard-boot PCR7."""
    if not isinstance(measurements, dict):
        raise PolicyError("measurements must be a dict of PCR values, got %r" % (measurements,))
    actions = normalize_actions(actions)
    pcrs = normalize_pcr_names(pcrs)
    reference = dict((k, str(v).lower()) for k, v in measurements.items() if _PCR_NAME.match(str(k)))
    missing = [p for p in pcrs if p not in reference]
    if missing:
        raise PolicyError("measurements hold no value for the bound %s" % ", ".join(missing))
    probes = [("without attestation", None, False)]
    if require_allowed:
        probes.append(("with the image's PCRs", reference, True))
    for pcr in pcrs:
        probes.append(("with %s altered" % pcr, dict(reference, **{pcr: _altered(reference[pcr])}), False))
    if "PCR7" in pcrs and reference["PCR7"] != STANDARD_BOOT_PCR7:
        probes.append(("with the standard-boot PCR7", dict(reference, PCR7=STANDARD_BOOT_PCR7), False))
    failures = []
    for action in actions:
        for label, request, expected in probes:
            if _simulate_request(policy, principal, action, request) != expected:
                failures.append("%s %s run %s %s" % (principal, "cannot" if expected else "can", action, label))
    return failures


def _simulate_request(policy, principal, action, pcrs):
    try:
        return simulator.evaluate(policy, principal, action, pcrs).allowed
    except simulator.SimulatorError as exc:
        raise PolicyError("cannot analyse the key policy (%s)" % exc)


# ---- read, merge, re-read, write ----------------------------------------------------------------------

class Outcome(object):
    def __init__(self, before, after, merged, written, attempts):
        self.before = before  # policy dict as read
        self.after = after  # policy dict written (or that would be written)
        self.merged = merged  # the Merge of the last attempt
        self.written = written
        self.attempts = attempts


def apply(read, write, transform, check_mode=False, attempts=3):
    """Read the policy, transform it, re-read right before writing, and merge again when it changed meanwhile.

    read() returns the policy text; transform(policy_dict) returns a Merge (raising PolicyError to refuse);
    write(text) stores it. KMS offers no conditional write, so a change landing between the last read and
    the write can still be lost; the re-read narrows that window to one round trip.
    """
    current = parse_policy(read())
    for attempt in range(1, attempts + 1):
        merged = transform(current)
        if not merged.changed:
            return Outcome(current, current, merged, False, attempt)
        text = serialize(merged.policy)
        if check_mode:
            return Outcome(current, merged.policy, merged, False, attempt)
        latest = parse_policy(read())
        if latest != current:
            current = latest
            continue
        write(text)
        return Outcome(current, merged.policy, merged, True, attempt)
    raise PolicyError("the key policy changed on every one of %d attempts to update it; someone else is editing it, "
                      "try again later" % attempts)
