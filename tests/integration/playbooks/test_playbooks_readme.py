# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/README.md documents every variable of every playbook in one place, and nothing that is gone.

A playbook's variables: what its plays declare (`vars:`), what it reads without declaring (names of the collection's
variable families used in its Jinja expressions or conditions, less what it registers or sets itself and what the
roles set as facts), and the options of every role it runs (their argument_specs entry point). The README has a
section per playbook and one per role; each row names a variable, its default, its meaning and the AWX job template
whose survey asks for it. Role option defaults must be the argument spec's; a survey variable's row must name its
job template; the variables a playbook passes to a role (include_role vars) must be options of that role.
"""
import glob
import json
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PLAYBOOKS = os.path.join(ROOT, "playbooks")
README = os.path.join(PLAYBOOKS, "README.md")
FAMILIES = r"(?:attestable|measure_uki|verify|demo|kms_authorize|builder|image_description|image_build|image_publish)"
NAME = re.compile(r"(?<![\w.:/-])(" + FAMILIES + r"_[a-z0-9_]+)\b")
ROLE = re.compile(r"^attestable\.ami\.([a-z_]+)$")
TOO_LONG = "(see the role's argument spec)"


def load_yaml(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def role_spec(role, entry="main"):
    specs = load_yaml(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml"))["argument_specs"]
    return specs[entry].get("options", {})


def walk_tasks(tasks):
    for task in tasks or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from walk_tasks(task.get(key))


def role_facts():
    """What the roles register or set as facts (outputs a playbook may read, not inputs)."""
    facts = set()
    for path in glob.glob(os.path.join(ROOT, "roles", "*", "tasks", "*.yml")):
        for task in walk_tasks(load_yaml(path)):
            if task.get("register"):
                facts.add(task["register"])
            facts.update((task.get("ansible.builtin.set_fact") or {}).keys())
    return facts


def analyse(name):
    """{declared: {var: default}, read: {var}, roles: {(role, entry)}, passed: {(role, entry): {var}}}."""
    path = os.path.join(PLAYBOOKS, name)
    plays = load_yaml(path)
    declared, outputs, roles, passed, texts = {}, set(), set(), {}, []
    for play in plays:
        if "ansible.builtin.import_playbook" in play:
            declared.update(play.get("vars") or {})
            continue
        declared.update(play.get("vars") or {})
        for role in play.get("roles") or []:
            match = ROLE.match(role["role"])
            if match:
                key = (match.group(1), "main")
                roles.add(key)
                passed.setdefault(key, set()).update((role.get("vars") or {}).keys())
                texts.append(json.dumps(list((role.get("vars") or {}).values())))
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            for task in walk_tasks(play.get(section)):
                if task.get("register"):
                    outputs.add(task["register"])
                outputs.update((task.get("ansible.builtin.set_fact") or {}).keys())
                outputs.update(((task.get("ansible.builtin.set_stats") or {}).get("data") or {}).keys())
                own = dict((k, v) for k, v in task.items() if k not in ("block", "rescue", "always", "vars"))
                texts.append(json.dumps(own))
                texts.append(json.dumps(list((task.get("vars") or {}).values())))
                include = task.get("ansible.builtin.include_role")
                if include:
                    match = ROLE.match(include["name"])
                    key = (match.group(1), include.get("tasks_from", "main"))
                    roles.add(key)
                    passed.setdefault(key, set()).update((task.get("vars") or {}).keys())
                else:
                    outputs.update((task.get("vars") or {}).keys())  # a task's own helper variables
        texts.append(json.dumps(play.get("vars") or {}))
        texts.append(json.dumps(play.get("module_defaults") or {}))
    read = set(NAME.findall("\n".join(texts))) - outputs - role_facts() - set(declared)
    return {"declared": declared, "read": read, "roles": roles, "passed": passed}


def playbook_names():
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(PLAYBOOKS, "*.yml")))


def readme_sections():
    """{heading: {variable: [default, meaning, awx]}} of the README's tables."""
    with open(README) as handle:
        text = handle.read()
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            sections[current] = {}
        elif current and line.startswith("| `"):
            # Cells split at pipes; a pipe inside a cell is escaped (\\|), as GitHub's tables need it.
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            assert len(cells) == 4, "README row with %d cells (want variable | default | meaning | AWX): %s" % (
                len(cells), line)
            variable = cells[0].strip("`")
            assert variable not in sections[current], "%s documented twice under %s" % (variable, current)
            sections[current][variable] = cells[1:]
    return sections


def playbook_section(sections, name):
    found = [h for h in sections if h.startswith("Playbook ") and "`%s`" % name in h]
    assert len(found) == 1, "README needs one '### Playbook ... `%s`' section (found %s)" % (name, found)
    return found[0]


def role_section(sections, role, entry):
    label = "`attestable.ami.%s`" % role + ("" if entry == "main" else " (`%s`)" % entry)
    found = [h for h in sections if h.startswith("Role ") and label in h and (entry != "main" or "(`" not in h)]
    assert len(found) == 1, "README needs one '### Role %s' section (found %s)" % (label, found)
    return found[0]


def render(value):
    if isinstance(value, str):
        return "`%s`" % value if value else '`""`'
    return "`%s`" % json.dumps(value)


@pytest.mark.parametrize("name", playbook_names())
def test_every_variable_of_the_playbook_is_documented_and_nothing_more(name):
    sections = readme_sections()
    found = analyse(name)
    section = playbook_section(sections, name)
    documented = set(sections[section])
    own = set(found["declared"]) | found["read"]
    role_options = set()
    for role, entry in found["roles"]:
        options = set(role_spec(role, entry))
        role_options |= options
        # What the playbook passes to the role must be options of the role.
        unknown = found["passed"].get((role, entry), set()) - options
        assert not unknown, "%s passes %s to %s, which it does not take" % (name, sorted(unknown), role)
        assert name in role_section(sections, role, entry), "the section of role %s should say %s runs it" % (role, name)
    missing = sorted(own - documented - role_options)
    assert not missing, "%s: undocumented in playbooks/README.md (section %r): %s" % (name, section, missing)
    stale = sorted(documented - own - role_options)
    assert not stale, "%s: playbooks/README.md documents variables the playbook no longer has: %s" % (name, stale)
    for variable, default in found["declared"].items():
        cell = sections[section].get(variable, [None])[0]
        if cell is not None and len(render(default)) <= 90:
            assert cell == render(default), "%s: %s defaults to %s, README says %s" % (name, variable, render(default), cell)


def test_every_role_option_is_documented_with_its_default():
    sections = readme_sections()
    seen = set()
    for name in playbook_names():
        seen |= analyse(name)["roles"]
    role_headings = set(h for h in sections if h.startswith("Role "))
    for role, entry in sorted(seen):
        heading = role_section(sections, role, entry)
        role_headings.discard(heading)
        spec = role_spec(role, entry)
        documented = sections[heading]
        assert sorted(set(spec) - set(documented)) == [], "role %s: undocumented options" % role
        assert sorted(set(documented) - set(spec)) == [], "role %s: documented options it no longer has" % role
        for option, info in spec.items():
            want = render(info.get("default", ""))
            cell = documented[option][0]
            assert cell == want or (len(want) > 90 and cell == TOO_LONG), (
                "role %s: %s defaults to %s, README says %s" % (role, option, want, cell))
    assert not role_headings, "README documents roles no playbook runs: %s" % sorted(role_headings)


def test_survey_variables_name_their_job_template():
    sections = readme_sections()
    templates = load_yaml(os.path.join(ROOT, "awx", "job_templates.yml"))
    for template in templates:
        for question in template["survey"]["spec"]:
            rows = [cells for section in sections.values() for var, cells in section.items()
                    if var == question["variable"]]
            assert rows, "survey variable %s is not documented" % question["variable"]
            assert any(template["name"] in cells[2] for cells in rows), (
                "README: %s should say the survey of %r asks for it" % (question["variable"], template["name"]))


def test_the_analysis_sees_what_a_playbook_reads_without_declaring():
    # builder_teardown.yml declares nothing; it reads builder_run_id and runs the builder role's teardown.
    found = analyse("builder_teardown.yml")
    assert found["declared"] == {} and "builder_run_id" in found["read"]
    assert found["roles"] == {("builder", "teardown")}
    # authorize.yml registers attestable_manifest_s3_read: an output, not a variable to document.
    found = analyse("authorize.yml")
    assert "attestable_manifest_s3_read" not in found["read"] and "attestable_manifest_s3" in found["declared"]
    assert found["passed"][("kms_authorize", "main")] == {"kms_authorize_manifest_path", "kms_authorize_manifest_data"}
