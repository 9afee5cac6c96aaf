#!/bin/bash
# KIWI runs a repository's customize script on the builder with the apt file it wrote for the repository
# (the deb822 .sources file, then the .pref file for its priority). The runner image takes only the packages it
# needs from the security archive at the raised priority; everything else keeps the archive's default pin.
set -euo pipefail
file=$1
case "$file" in
    *.pref)
        sed -i 's/^Package: \*$/Package: git git-man curl libcurl4 libcurl3-gnutls jq libjq1/' "$file"
        ;;
    *.sources)
        grep -q '^Suites: bookworm-security$' "$file"
        ;;
esac
