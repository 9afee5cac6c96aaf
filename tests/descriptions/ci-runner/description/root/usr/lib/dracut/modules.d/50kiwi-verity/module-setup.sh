#!/bin/bash
# Adapted from KIWI 11.1.6's dracut/modules.d/50kiwi-verity/module-setup.sh (GPL-3.0-or-later, see LICENSE):
# only the /etc/veritytab path (KIWI writes the root hash there), without kiwi-parse-verity, which reads metadata
# embedded in the partition (embed_verity_metadata, not used by this description) and is not packaged in Debian.

declare moddir=${moddir}

check() {
    require_binaries veritysetup || return 1
    return 255
}

depends() {
    echo dm
    return 0
}

installkernel() {
    instmods dm-verity
}

install() {
    inst_multiple veritysetup cut tr
    inst_hook initqueue/settled 71 "$moddir/kiwi-veritytab-setup.sh"
}
