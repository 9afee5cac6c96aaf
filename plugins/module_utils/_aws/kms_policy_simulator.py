# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decide whether a KMS key policy allows a request, as KMS would for the NitroTPM attestation condition keys.

Plain Python (3.9+), no Ansible imports. Ours because nothing else does it offline: IAM's policy simulator does
not evaluate KMS key policies with the NitroTPM attestation condition keys, and a test must not need AWS. What is
modelled:

- Explicit Deny wins over Allow; without a matching Allow the request is refused (implicit deny).
- Principal / NotPrincipal: ``"*"`` and ``{"AWS": "*"}`` match everyone; an account (``"111122223333"`` or
  ``arn:aws:iam::111122223333:root``) matches every principal of that account, i.e. it assumes the IAM
  policies of that account grant the request (the worst case: KMS additionally requires an IAM grant);
  role and user ARNs match exactly; an STS assumed-role session ARN matches its role (any path).
- NotPrincipal exempts a request only when it names every identity IAM sees in it: for a role session the
  session ARN, the role ARN and the account; for a user the user ARN and the account. A role ARN given as the
  requester stands for a session of that role with an unknown name, so an assumed-role ARN of that role must
  be listed too.
- Action / NotAction with ``*`` and ``?`` wildcards (IAM knows no other wildcard: ``[`` is a literal
  character), case-insensitive.
- ``ArnLike`` / ``ArnEquals`` compare the six colon-separated parts of an ARN one by one (a ``*`` does not
  reach into the next part, except in the last one, the resource, which may itself hold colons).
- Conditions: every operator and every key must match ("all of"); the values listed for one key are
  "any of". Operators: String(Not)Equals, String(Not)EqualsIgnoreCase, String(Not)Like, Arn(Not)Equals,
  Arn(Not)Like, Bool, Null, each with ``...IfExists`` and the ``ForAnyValue:`` / ``ForAllValues:`` forms.
  A key absent from the request fails positive operators, satisfies negated ones and ``...IfExists``
  (and ``ForAllValues:``), whatever the operator; so statements conditioned on keys the caller does not
  supply are decided without knowing their operator.
- The request context holds ``aws:PrincipalArn``, ``aws:PrincipalAccount``, one
  ``kms:RecipientAttestation:NitroTPMPCR<n>`` per PCR given (none for a request without an attestation
  document), and any extra keys the caller gives.

Worst case (``worst_case=True``, for finding weaknesses): a condition on a key that is not a NitroTPM PCR
key is taken as satisfied in an Allow statement and as not satisfied in a Deny statement, i.e. whatever the
caller can make the request context say (organisation, source VPC, tags, ...) goes its way.

Not modelled: IAM identity policies, grants, SCPs/RCPs, permission boundaries, VPC endpoint policies,
Resource/NotResource (in a key policy they can only mean the key itself), policy variables (``${...}``),
and numeric/date/IP operators on keys that are present in the request (those raise SimulatorError).
"""

import json
import re


class SimulatorError(ValueError):
    """The policy or the request cannot be evaluated (malformed, or uses something not modelled)."""


PCR_KEY_PREFIX = "kms:RecipientAttestation:NitroTPMPCR"

ACCOUNT_ID = re.compile(r"^[0-9]{12}$")
_ROOT_ARN = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):root$")
_IAM_ARN = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):(role|user)/(.+)$")
_SESSION_ARN = re.compile(r"^arn:aws[a-z-]*:sts::([0-9]{12}):assumed-role/([^/]+)/.+$")
_PCR_NAME = re.compile(r"^(?:(?:kms:RecipientAttestation:)?NitroTPM)?(?:PCR)?([0-9]|1[0-9]|2[0-3])$",
                       re.IGNORECASE)


def as_list(value):
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def load_policy(policy):
    """Accept a policy as a dict or as JSON text; return the dict."""
    if isinstance(policy, (str, bytes)):
        try:
            policy = json.loads(policy)
        except ValueError as exc:
            raise SimulatorError("policy is not valid JSON: %s" % exc)
    if not isinstance(policy, dict):
        raise SimulatorError("policy must be a JSON object (dict), got %s" % type(policy).__name__)
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        raise SimulatorError("policy.Statement must be a list of statements, got %s" % type(statements).__name__)
    for i, statement in enumerate(statements):
        if not isinstance(statement, dict):
            raise SimulatorError("policy.Statement[%d] must be a dict, got %s" % (i, type(statement).__name__))
        if statement.get("Effect") not in ("Allow", "Deny"):
            raise SimulatorError("policy.Statement[%d].Effect must be Allow or Deny, got %r"
                                 % (i, statement.get("Effect")))
    return policy


def normalize_pcrs(pcrs):
    """Map a PCR set to {index: lowercase hex}. Accepts pcr_compute measurements, {"PCR4": ...}, {4: ...},
    or condition-key names; HashAlgorithm and other non-PCR keys (engines, boot_mode) are ignored.
    None or {} means the request carries no attestation document."""
    if pcrs is None:
        return {}
    if not isinstance(pcrs, dict):
        raise SimulatorError("pcrs must be a dict such as {'PCR4': '<96 hex>', 'PCR12': '<96 hex>'}, got %s"
                             % type(pcrs).__name__)
    result = {}
    for name, value in pcrs.items():
        match = _PCR_NAME.match(str(name))
        if not match:
            continue
        if not isinstance(value, str):
            raise SimulatorError("pcrs.%s must be a hex string, got %r" % (name, value))
        result[int(match.group(1))] = value.lower()
    return result


def principal_account(principal):
    """The 12-digit account of a principal ARN (or account id), or None for '*' and service principals."""
    for pattern in (_ROOT_ARN, _IAM_ARN, _SESSION_ARN):
        match = pattern.match(principal)
        if match:
            return match.group(1)
    if ACCOUNT_ID.match(principal):
        return principal
    return None


def is_account_principal(value):
    """True for '111122223333' and arn:aws:iam::111122223333:root (a whole account)."""
    return bool(ACCOUNT_ID.match(value) or _ROOT_ARN.match(value))


def wildcard_match(pattern, value, ignore_case=False):
    """IAM's wildcard match: ``*`` any run of characters, ``?`` one character, nothing else special."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.match("(?s)^%s$" % regex, value) is not None


def arn_match(pattern, value):
    """ArnLike / ArnEquals: the six colon-separated parts matched one by one."""
    pattern_parts = pattern.split(":", 5)
    value_parts = value.split(":", 5)
    if len(pattern_parts) != 6 or len(value_parts) != 6:
        return False
    return all(wildcard_match(p, v) for p, v in zip(pattern_parts, value_parts))


def _principal_matches(requester, value):
    if value == "*":
        return True
    if is_account_principal(value):
        return principal_account(requester) == principal_account(value)
    if value == requester:
        return True
    session = _SESSION_ARN.match(requester)
    role = _IAM_ARN.match(value)
    if session and role and role.group(2) == "role":
        return session.group(1) == role.group(1) and role.group(3).split("/")[-1] == session.group(2)
    return False


def _identities(requester):
    """Every identity IAM sees in a request by requester, each as a predicate over a NotPrincipal value."""
    account = principal_account(requester)
    session = _SESSION_ARN.match(requester)
    named = _IAM_ARN.match(requester)
    identities = []
    if session:
        role_name = session.group(2)
        identities.append(lambda v: v == requester)
        identities.append(lambda v: bool(_IAM_ARN.match(v)) and _IAM_ARN.match(v).group(2) == "role"
                          and _IAM_ARN.match(v).group(1) == account
                          and _IAM_ARN.match(v).group(3).split("/")[-1] == role_name)
    elif named and named.group(2) == "role":
        role_name = named.group(3).split("/")[-1]
        identities.append(lambda v: bool(_SESSION_ARN.match(v)) and _SESSION_ARN.match(v).group(1) == account
                          and _SESSION_ARN.match(v).group(2) == role_name)
        identities.append(lambda v: v == requester)
    elif named or requester == "*":
        identities.append(lambda v: v == requester)
    if account:
        identities.append(lambda v: is_account_principal(v) and principal_account(v) == account)
    return identities


def _not_principal_exempts(requester, values):
    if "*" in values:
        return True
    return all(any(identity(v) for v in values) for identity in _identities(requester))


def _principal_values(block, where):
    if block == "*":
        return ["*"]
    if not isinstance(block, dict):
        raise SimulatorError("%s must be '*' or a dict like {'AWS': [...]}, got %r" % (where, block))
    values = []
    for kind, names in block.items():
        if kind == "AWS":
            values.extend(str(name) for name in as_list(names))
        # Service, Federated and CanonicalUser principals never name an IAM role or user.
    return values


def _statement_principal_applies(statement, requester, where):
    if "Principal" in statement:
        return any(_principal_matches(requester, v)
                   for v in _principal_values(statement["Principal"], where + ".Principal"))
    if "NotPrincipal" in statement:
        values = _principal_values(statement["NotPrincipal"], where + ".NotPrincipal")
        return not _not_principal_exempts(requester, values)
    raise SimulatorError("%s has neither Principal nor NotPrincipal (a key policy statement needs one)" % where)


def action_matches(pattern, action):
    return wildcard_match(str(pattern), action, ignore_case=True)


def _statement_action_applies(statement, action):
    if "Action" in statement:
        return any(action_matches(p, action) for p in as_list(statement["Action"]))
    if "NotAction" in statement:
        return not any(action_matches(p, action) for p in as_list(statement["NotAction"]))
    return False


def _string_equal(value, wanted, ignore_case):
    if ignore_case:
        return value.lower() == wanted.lower()
    return value == wanted


def _string_like(value, pattern):
    return wildcard_match(pattern, value)


_BASE_OPERATORS = {
    # name: (compare(request_value, policy_value) -> bool, negated)
    "StringEquals": (lambda v, p: _string_equal(v, p, False), False),
    "StringNotEquals": (lambda v, p: _string_equal(v, p, False), True),
    "StringEqualsIgnoreCase": (lambda v, p: _string_equal(v, p, True), False),
    "StringNotEqualsIgnoreCase": (lambda v, p: _string_equal(v, p, True), True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "ArnEquals": (lambda v, p: arn_match(p, v), False),
    "ArnLike": (lambda v, p: arn_match(p, v), False),
    "ArnNotEquals": (lambda v, p: arn_match(p, v), True),
    "ArnNotLike": (lambda v, p: arn_match(p, v), True),
    "Bool": (lambda v, p: v.lower() == p.lower(), False),
}


def _split_operator(operator):
    qualifier = None
    name = operator
    if ":" in name:
        qualifier, name = name.split(":", 1)
        if qualifier not in ("ForAnyValue", "ForAllValues"):
            raise SimulatorError("unknown condition operator qualifier %r in %r" % (qualifier, operator))
    if_exists = name.endswith("IfExists")
    if if_exists:
        name = name[:-len("IfExists")]
    return qualifier, name, if_exists


def _lookup(context, key):
    # Condition key names are case-insensitive.
    lowered = key.lower()
    for name, value in context.items():
        if name.lower() == lowered:
            return value
    return None


def _condition_key_matches(qualifier, name, if_exists, request_values, policy_values, where):
    negated_name = "Not" in name
    if request_values is None:
        if qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return if_exists or negated_name
    base = _BASE_OPERATORS.get(name)
    if base is None:
        raise SimulatorError("%s uses the condition operator %r on a key present in the request; this simulator "
                             "models only String*, Arn*, Bool and Null operators" % (where, name))
    compare, negated = base
    wanted = [str(p).lower() if isinstance(p, bool) else str(p) for p in policy_values]

    def one(value):
        hit = any(compare(value, p) for p in wanted)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(v) for v in request_values)
    return any(one(v) for v in request_values)


def is_pcr_key(key):
    return str(key).lower().startswith(PCR_KEY_PREFIX.lower())


def _conditions_match(conditions, context, where, worst_case_effect=None):
    """worst_case_effect: None for an exact evaluation; "Allow" or "Deny" to decide every condition on a key that
    is not a PCR key in the requester's favour (satisfied for an Allow, not satisfied for a Deny)."""
    if not conditions:
        return True
    if not isinstance(conditions, dict):
        raise SimulatorError("%s.Condition must be a dict of operators, got %r" % (where, conditions))
    for operator, keys in conditions.items():
        if not isinstance(keys, dict):
            raise SimulatorError("%s.Condition.%s must be a dict of condition keys, got %r" % (where, operator, keys))
        qualifier, name, if_exists = _split_operator(operator)
        for key, policy_values in keys.items():
            if worst_case_effect is not None and not is_pcr_key(key):
                if worst_case_effect == "Allow":
                    continue
                return False
            present = _lookup(context, key)
            request_values = None if present is None else as_list(present)
            if name == "Null":
                # "true": the key must be absent; "false": it must be present.
                wanted = [str(v).lower() for v in as_list(policy_values)]
                absent = request_values is None
                if not any((w == "true") == absent for w in wanted):
                    return False
                continue
            if not _condition_key_matches(qualifier, name, if_exists, request_values,
                                          as_list(policy_values), "%s.Condition.%s" % (where, operator)):
                return False
    return True


def request_context(principal, pcrs=None, context=None):
    """The condition-key context of a request by principal carrying an attestation document with pcrs."""
    result = {}
    if principal != "*":
        result["aws:PrincipalArn"] = principal
    account = principal_account(principal)
    if account:
        result["aws:PrincipalAccount"] = account
    for index, value in sorted(normalize_pcrs(pcrs).items()):
        result["%s%d" % (PCR_KEY_PREFIX, index)] = value
    for key, value in (context or {}).items():
        result[key] = value
    return result


class Decision(object):
    """allowed, plus the indexes of the statements that allowed and that denied the request."""

    def __init__(self, allowed, allowing, denying):
        self.allowed = allowed
        self.allowing = allowing
        self.denying = denying


def statement_applies(statement, principal, action, context, where="statement", worst_case=False):
    return (_statement_principal_applies(statement, principal, where)
            and _statement_action_applies(statement, action)
            and _conditions_match(statement.get("Condition"), context, where,
                                  statement.get("Effect") if worst_case else None))


def evaluate(policy, principal, action, pcrs=None, context=None, worst_case=False):
    """Evaluate one request against a key policy; returns a Decision. worst_case: see the module docstring."""
    policy = load_policy(policy)
    if not isinstance(principal, str) or not principal:
        raise SimulatorError("principal must be an IAM role/user ARN or an account id, got %r" % (principal,))
    if not isinstance(action, str) or ":" not in action:
        raise SimulatorError("action must look like 'kms:Decrypt', got %r" % (action,))
    ctx = request_context(principal, pcrs, context)
    allowing, denying = [], []
    for i, statement in enumerate(as_list(policy["Statement"])):
        where = "policy.Statement[%d]" % i
        if statement_applies(statement, principal, action, ctx, where, worst_case):
            (allowing if statement["Effect"] == "Allow" else denying).append(i)
    return Decision(bool(allowing) and not denying, allowing, denying)


def allows(policy, principal, action, pcrs=None, context=None):
    """True when the key policy lets principal run action with an attestation document holding pcrs."""
    return evaluate(policy, principal, action, pcrs, context).allowed
