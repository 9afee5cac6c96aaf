"""Helpers shared by the measured_boot tests (a uniquely named module: every test folder has a conftest)."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD_UKI = os.path.join(ROOT, "scripts", "build-uki.sh")
MEASURE_UKI_PLAYBOOK = os.path.join(ROOT, "playbooks", "measure_uki.yml")
# attestation.md: PCR7 of a standard boot (empty Secure Boot variables) on OVMF and NitroTPM alike.
STANDARD_BOOT_PCR7 = ("98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578a"
                      "e72d04ecef661f272d59058b77af35")


def build_uki(output, *args):
    """Run scripts/build-uki.sh [args] OUTPUT; returns OUTPUT."""
    subprocess.run([BUILD_UKI] + list(args) + [output], check=True, capture_output=True, text=True)
    return output


def processes_mentioning(marker):
    """Full command lines (ps -ww: never cut to the terminal width) of running processes that mention marker."""
    out = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if marker in line and not line.startswith("ps ")]
