# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pcr_compute states the boot mode its measurements assume (boot_mode), so that kms_attestation_policy never has to
infer it from a PCR value: secure_boot exactly when a PK is given; KEK/db without a PK enforce nothing."""
from test_pcr_compute import playbook


def test_boot_mode_follows_the_pk(run_playbook, inputs):
    run = run_playbook(playbook(
        ("No Secure Boot variables", {"images": [inputs["uki"]], "engine": "python"}),
        ("PK, KEK and db", {"images": [inputs["signed_uki"]], "pk": inputs["pk"], "kek": inputs["kek"],
                            "db": inputs["db"], "engine": "python"}),
        ("db without PK", {"images": [inputs["uki"]], "db": inputs["db"], "engine": "python"}),
    ))
    assert run.rc == 0, run.stdout[-3000:]
    assert run.task("No Secure Boot variables")["boot_mode"] == "standard"
    assert run.task("PK, KEK and db")["boot_mode"] == "secure_boot"
    without_pk = run.task("db without PK")
    # PCR7 differs from the standard-boot value here (db is measured), yet nothing is enforced: still standard.
    assert without_pk["measurements"]["PCR7"] != run.task("No Secure Boot variables")["measurements"]["PCR7"]
    assert without_pk["boot_mode"] == "standard"
    assert any("without pk" in w for w in without_pk.get("warnings", []))
