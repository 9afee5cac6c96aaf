# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""attestable.ami.pcr_compute through ansible-playbook: options, dest idempotence, check mode, engines, bad input.

engine auto/nitro-tpm-pcr-compute use a stand-in executable for AWS's tool (see conftest.py: the real tool
cannot be built here); its output is the tool's documented format with values chosen by the test.
"""
import json
import os


def playbook(*tasks):
    body = "".join("""
    - name: {name}
      attestable.ami.pcr_compute: {args}
      register: r
      ignore_errors: true
""".format(name=name, args=json.dumps(args)) for name, args in tasks)
    return "- hosts: localhost\n  gather_facts: false\n  tasks:" + body


def assert_clean_failure(result, *words):
    assert result.get("failed") is True, result
    for word in words:
        assert word in result["msg"], (word, result["msg"])
    assert "Traceback" not in json.dumps(result)
    assert "module_stderr" not in result


def vector_measured(vector_uki):
    with open(os.path.join(os.path.dirname(vector_uki), "measured.json")) as handle:
        return json.load(handle)


def diff_of(result):
    diff = result["diff"]
    return diff[0] if isinstance(diff, list) else diff


def test_vector_and_secure_boot(run_playbook, vector_uki, firmware_measurements, inputs):
    measured = playbook(
        ("Vector, both banks", {"images": [vector_uki], "banks": ["sha384", "sha256"]}),
        ("Signed UKI under Secure Boot", {"images": [inputs["signed_uki"]], "pk": inputs["pk"],
                                          "kek": inputs["kek"], "db": inputs["db"], "engine": "python"}),
    )
    result = run_playbook(measured)
    assert result.rc == 0, result.stdout[-3000:]

    vector = result.task("Vector, both banks")
    assert vector["changed"] is False
    assert vector["measurements"] == firmware_measurements
    assert vector["banks"]["sha256"]["PCR4"] == vector_measured(vector_uki)["sha256"]["PCR4"]
    assert vector["engines"] == ["python"]  # no nitro-tpm-pcr-compute on this machine's PATH: python only
    assert vector["secure_boot"] is False
    assert [e["pcr"] for e in vector["events"]] == [4, 4, 4, 4, 7, 7, 7, 7, 7, 7]
    image = vector["images"][0]
    assert image["uki"]["stub_major"] == 252 and image["uki"]["kernel_architecture"] == "x86_64"
    assert set(image["authenticode"]) == {"sha384", "sha256"}

    secure = result.task("Signed UKI under Secure Boot")
    assert secure["secure_boot"] is True
    assert [e["type"] for e in secure["events"] if e["pcr"] == 4][-1] == "EV_EFI_BOOT_SERVICES_APPLICATION"
    assert len([e for e in secure["events"] if e["pcr"] == 4]) == 3  # stub 252 + Secure Boot: no kernel event
    authority = [e for e in secure["events"] if e["type"] == "EV_EFI_VARIABLE_AUTHORITY"]
    assert len(authority) == 1 and "%d bytes DER" % len(inputs["db_der"]) in authority[0]["description"]
    assert secure["images"][0]["signed"] is True
    assert "banks" in secure and list(secure["banks"]) == ["sha384"]


def test_dest_idempotence_check_and_diff_mode(run_playbook, inputs, tmp_path):
    dest = str(tmp_path / "measurements.json")
    args = {"images": [inputs["uki"]], "dest": dest}
    book = """
- hosts: localhost
  gather_facts: false
  vars:
    args: {args}
  tasks:
    - name: Check mode first
      attestable.ami.pcr_compute: "{{{{ args }}}}"
      check_mode: true
      diff: true
      register: check
    - name: Stat after check mode
      ansible.builtin.stat:
        path: {dest}
      register: after_check
    - name: Write
      attestable.ami.pcr_compute: "{{{{ args }}}}"
      register: first
    - name: Write again
      attestable.ami.pcr_compute: "{{{{ args }}}}"
      register: second
    - name: Reformat the file, same content
      ansible.builtin.copy:
        content: "{{{{ {{'Measurements': first.measurements}} | to_json }}}}"
        dest: {dest}
        mode: "0644"
    - name: Write after reformatting
      attestable.ami.pcr_compute: "{{{{ args }}}}"
      register: third
    - name: Change the content
      ansible.builtin.copy:
        content: '{{"Measurements": {{"HashAlgorithm": "SHA384", "PCR4": "00"}}}}'
        dest: {dest}
        mode: "0644"
    - name: Write after a change
      attestable.ami.pcr_compute: "{{{{ args }}}}"
      diff: true
      register: fourth
""".format(args=json.dumps(args), dest=dest)
    result = run_playbook(book)
    assert result.rc == 0, result.stdout[-3000:]
    check = result.task("Check mode first")
    assert check["changed"] is True and check["dest"] == dest
    assert result.task("Stat after check mode")["stat"]["exists"] is False
    assert json.loads(diff_of(check)["after"]) == {"Measurements": check["measurements"]}
    assert result.task("Write")["changed"] is True
    assert result.task("Write again")["changed"] is False
    assert result.task("Write after reformatting")["changed"] is False
    fourth = result.task("Write after a change")
    assert fourth["changed"] is True
    assert '"PCR4": "00"' in diff_of(fourth)["before"]
    with open(dest) as handle:
        assert json.load(handle) == {"Measurements": check["measurements"]}
    assert check["measurements"] == result.task("Write")["measurements"]


def test_engines_with_stand_in_tool(run_playbook, vector_uki, firmware_measurements, inputs, tmp_path,
                                    stand_in_tool):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = stand_in_tool(str(bin_dir / "nitro-tpm-pcr-compute"), firmware_measurements)
    wrong = dict(firmware_measurements, PCR4="ff" * 48)
    disagreeing = stand_in_tool(str(tmp_path / "disagreeing"), wrong)
    old = stand_in_tool(str(tmp_path / "old"), dict((k, v) for k, v in firmware_measurements.items() if k != "PCR12"))
    book = playbook(
        ("Auto finds the tool on PATH", {"images": [vector_uki]}),
        ("Auto with a disagreeing tool", {"images": [vector_uki], "tool_path": disagreeing}),
        ("Auto with a tool older than 1.1.0", {"images": [vector_uki], "tool_path": old}),
        ("Tool only", {"images": [vector_uki], "engine": "nitro-tpm-pcr-compute", "tool_path": disagreeing,
                       "pk": inputs["pk"], "db": inputs["db"]}),
        ("Tool only with sha256", {"images": [vector_uki], "engine": "nitro-tpm-pcr-compute", "banks": ["sha256"]}),
        ("Tool only, not installed", {"images": [vector_uki], "engine": "nitro-tpm-pcr-compute",
                                      "tool_path": str(tmp_path / "missing")}),
        ("Auto with a tool_path that is no executable", {"images": [vector_uki], "tool_path": str(tmp_path)}),
    )
    result = run_playbook(book, env={"PATH": "%s:%s" % (bin_dir, os.environ["PATH"])})

    auto = result.task("Auto finds the tool on PATH")
    assert auto.get("failed") is not True, auto
    assert auto["engines"] == ["python", "nitro-tpm-pcr-compute"]
    assert auto["tool"]["path"] == on_path
    assert auto["measurements"] == firmware_measurements
    with open(on_path + ".argv") as handle:
        assert json.load(handle) == ["--image", vector_uki]

    disagreement = result.task("Auto with a disagreeing tool")
    assert_clean_failure(disagreement, "disagree on PCR4", firmware_measurements["PCR4"], "ff" * 48)
    assert disagreement["python"] == firmware_measurements
    assert disagreement["nitro_tpm_pcr_compute"] == wrong
    assert disagreement["differing"] == ["PCR4"]
    assert [e["type"] for e in disagreement["events"]][:2] == ["EV_EFI_ACTION", "EV_SEPARATOR"]

    assert_clean_failure(result.task("Auto with a tool older than 1.1.0"), "no PCR12", "1.1.0")

    tool_only = result.task("Tool only")
    assert tool_only.get("failed") is not True, tool_only
    assert tool_only["engines"] == ["nitro-tpm-pcr-compute"] and tool_only["events"] == []
    assert tool_only["measurements"] == wrong  # what the tool printed, unchecked by design
    assert tool_only["secure_boot"] is True
    assert tool_only["images"][0]["sha256"] == vector_measured(vector_uki)["uki_sha256"]
    with open(disagreeing + ".argv") as handle:
        assert json.load(handle) == ["--image", vector_uki, "--PK", inputs["pk"], "--db", inputs["db"]]

    assert_clean_failure(result.task("Tool only with sha256"), "SHA-384 only")
    assert_clean_failure(result.task("Tool only, not installed"), "not an executable file", "missing")
    assert_clean_failure(result.task("Auto with a tool_path that is no executable"), "not an executable file",
                         str(tmp_path))


def test_tool_only_not_on_path(run_playbook, inputs):
    result = run_playbook(playbook(("Tool not installed", {"images": [inputs["uki"]],
                                                           "engine": "nitro-tpm-pcr-compute"})))
    assert_clean_failure(result.task("Tool not installed"), "nitro-tpm-pcr-compute is not installed", "engine=python")


def test_bad_inputs(run_playbook, inputs):
    missing = os.path.join(inputs["dir"], "missing.efi")
    cases = [
        ("Missing image", {"images": [missing]}, [missing, "no such file"]),
        ("Text file", {"images": [inputs["text"]]}, [inputs["text"], "not a PE image"]),
        ("PE32", {"images": [inputs["pe32"]]}, [inputs["pe32"], "32-bit PE"]),
        ("Truncated UKI", {"images": [inputs["truncated"]]}, [inputs["truncated"], "truncated"]),
        ("Linux not a PE", {"images": [inputs["linux_not_pe"]]}, [inputs["linux_not_pe"], ".linux section"]),
        ("Stub version unknown", {"images": [inputs["no_stub_version"]]},
         [inputs["no_stub_version"], "Could not find .sdmagic"]),
        ("Malformed ESL", {"images": [inputs["signed_uki"]], "pk": inputs["pk"], "db": inputs["bad_esl"]},
         [inputs["bad_esl"], "not a valid EFI_SIGNATURE_LIST"]),
        ("Unsigned under Secure Boot", {"images": [inputs["uki"]], "pk": inputs["pk"], "db": inputs["db"]},
         [inputs["uki"], "unsigned"]),
        ("Empty image list", {"images": []}, ["images"]),
        ("Unknown bank", {"images": [inputs["uki"]], "banks": ["sha1"]}, ["banks", "sha1"]),
        ("Dest directory missing", {"images": [inputs["uki"]], "dest": os.path.join(inputs["dir"], "no", "m.json")},
         ["no/m.json", "directory does not exist"]),
    ]
    result = run_playbook(playbook(*[(name, args) for name, args, _words in cases]))
    for name, _args, words in cases:
        assert_clean_failure(result.task(name), *words)
