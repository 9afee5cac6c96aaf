"""KMS key policy transformation for attestation: one owned statement per image, merged into a policy
without touching anything else.

Plain Python (3.9+), no Ansible imports.

Ownership: a statement is owned by this collection when its Sid starts with SID_PREFIX
("AttestableAMI-"); the rest of the Sid is the image identifier with every character outside
[A-Za-z0-9-] written as "_" plus two lowercase hex digits per UTF-8 byte ("_" itself becomes "_5f"),
so different images never share a Sid. Statements without the prefix are never changed, reordered or
dropped. Owned statements are kept in authorization order: a new or changed image statement is
appended after everything else; with ``keep`` the oldest owned statements beyond that number are removed.
"""

import copy
import json
import re

from ansible_collections.attestable.ami.plugins.module_utils.manifest import ManifestError
from ansible_collections.attestable.ami.plugins.module_utils.manifest import validate_measurements
from ansible_collections.attestable.ami.plugins.module_utils import kms_policy_simulator as simulator

SID_PREFIX = "AttestableAMI-"
CONDITION_OPERATOR = "StringEqualsIgnoreCase"
POLICY_SIZE_LIMIT = 32768  # bytes; KMS's key policy size quota

# The operations whose request carries a Recipient (and so the NitroTPM condition keys) and that a key
# policy can grant. kms:GenerateRandom also takes a Recipient, but is not a key operation.
RECIPIENT_ACTIONS = ("kms:Decrypt", "kms:DeriveSharedSecret", "kms:GenerateDataKey", "kms:GenerateDataKeyPair")
DEFAULT_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey"]

STANDARD_BOOT_PCR7 = ("98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578ae72d04ecef661f272d59058b77af35")
BOOT_MODES = ("standard", "secure_boot")
DEFAULT_PCRS = {"standard": ["PCR4", "PCR12"], "secure_boot": ["PCR7"]}
ADVISORY = ("without Secure Boot, whoever can change the instance's UEFI data can inject a kernel command line "
            "(for example one that disables dm-verity) without changing PCR4; only PCR12 (48 zero bytes for an "
            "untampered boot) shows it (advisory GHSA-xrv8-2pf5-f3q7)")

_PRINCIPAL_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/[\w+=,.@/-]+|user/[\w+=,.@/-]+)$")
_PCR_NAME = re.compile(r"^(?:PCR)?([0-9]|1[0-9]|2[0-3])$", re.IGNORECASE)
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
    indexes = set()
    for name in pcrs:
        match = _PCR_NAME.match(str(name))
        if not match:
            raise PolicyError("pcrs: %r is not a PCR name; expected PCR0 to PCR23 (e.g. PCR4, PCR7, PCR12)" % (name,))
        indexes.add(int(match.group(1)))
    return ["PCR%d" % i for i in sorted(indexes)]


def prepare_measurements(measurements):
    """A copy of measurements with PCR values lowercased, validated as pcr_compute's output."""
    if isinstance(measurements, dict):
        measurements = dict((k, v.lower() if isinstance(v, str) and k.upper().startswith("PCR") else v)
                            for k, v in measurements.items())
    try:
        return validate_measurements(measurements)
    except ManifestError as exc:
        raise PolicyError(str(exc))


def resolve_boot_mode(option, measurements):
    """Boot mode: the option if set; else measurements.boot_mode; else Secure Boot when PCR7 differs from the
    standard-boot constant; else standard."""
    value = option or (measurements or {}).get("boot_mode")
    if value:
        normalized = str(value).strip().lower().replace("-", "_").replace(" ", "_")
        if normalized in ("secureboot", "secure"):
            normalized = "secure_boot"
        if normalized not in BOOT_MODES:
            raise PolicyError("boot_mode must be one of %s, got %r" % (", ".join(BOOT_MODES), value))
        return normalized
    pcr7 = (measurements or {}).get("PCR7")
    if pcr7 and pcr7.lower() != STANDARD_BOOT_PCR7:
        return "secure_boot"
    return "standard"


def check_binding(boot_mode, pcrs, measurements, allow_missing_pcr12=False):
    """Refuse bindings that let other images (or a tampered boot) through."""
    if boot_mode == "standard":
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
                          "it has" % (", ".join(missing), ", ".join(k for k in measurements if k.startswith("PCR"))))


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


class Merge(object):
    def __init__(self, policy, changed, removed, added):
        self.policy = policy
        self.changed = changed
        self.removed = removed  # Sids of owned statements removed (absent or rolled off)
        self.added = added  # Sid of the statement added or replaced, or None


def merge(policy, sid, statement=None, keep=0):
    """Put statement (or, when None, remove the one with sid) into a copy of policy; keep at most `keep` owned
    statements (0: no limit), dropping the oldest. Statements not owned are left exactly as they are."""
    policy = parse_policy(policy)
    statements = _statements(policy)
    removed, added = [], None
    existing = [i for i, s in enumerate(statements) if isinstance(s, dict) and s.get("Sid") == sid]
    if statement is None:
        statements = [s for i, s in enumerate(statements) if i not in existing]
        removed = [sid] if existing else []
    elif not (len(existing) == 1 and statements_equal(statements[existing[0]], statement)):
        statements = [s for i, s in enumerate(statements) if i not in existing]
        statements.append(copy.deepcopy(statement))
        added = sid
    if keep and statement is not None:
        owned = [s.get("Sid") for s in statements if is_owned(s)]
        excess = len(owned) - keep
        drop = [o for o in owned if o != sid][:max(excess, 0)]
        if drop:
            statements = [s for s in statements if not (is_owned(s) and s.get("Sid") in drop)]
            removed.extend(drop)
    changed = bool(removed) or added is not None
    if not changed:
        return Merge(policy, False, [], None)
    result = copy.deepcopy(policy)
    result["Statement"] = statements
    return Merge(result, True, removed, added)


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


def weaknesses(policy, principals, actions):
    """Messages about statements not owned by this module that let the same principals run the same operations
    without attestation (the account-root statement among them)."""
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
    messages = []
    for index in sorted(found):
        statement = statements[index]
        who, what = found[index]
        message = ("key policy %s lets %s run %s without attestation"
                   % (_describe(statement, index), ", ".join(who), ", ".join(what)))
        block = statement.get("Principal")
        names = ["*"] if block == "*" else simulator.as_list(block.get("AWS")) if isinstance(block, dict) else []
        accounts = sorted(set(simulator.principal_account(str(n)) for n in names
                              if simulator.is_account_principal(str(n))))
        if accounts:
            message += (" (it names the whole account %s, so any IAM policy there can grant these operations)"
                        % ", ".join(accounts))
        elif "*" in names or "NotPrincipal" in statement:
            message += " (it applies to every principal)"
        messages.append(message + "; the attestation statements protect nothing until it is removed or narrowed")
    return messages


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
