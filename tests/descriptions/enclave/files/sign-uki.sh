# shellcheck shell=bash disable=SC2154  # $uki, $work and $efi_boot_file are set by the hook this step runs in
# Sign the UKI for UEFI Secure Boot with the enclave's db key before anything measures it (PCR4 then covers the
# signed binary, PCR7 the Secure Boot state). The key stays on the builder: ENCLAVE_SB_KEY/ENCLAVE_SB_CERT or the
# default paths below; sbsigntool must be installed there.
key=${ENCLAVE_SB_KEY:-/etc/enclave-secureboot/db.key}
cert=${ENCLAVE_SB_CERT:-/etc/enclave-secureboot/db.crt}
if ! command -v sbsign > /dev/null; then
    echo "edit_boot_install.sh: sbsign (sbsigntool) is not installed on the builder" >&2
    exit 1
fi
sbsign --key "$key" --cert "$cert" --output "$uki.signed" "$uki"
mv "$uki.signed" "$uki"
sbverify --cert "$cert" "$uki"
