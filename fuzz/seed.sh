#!/bin/sh
# Fill fuzz/corpus/<target>/ with the LISP UDP payloads of the test captures (tshark's hex in
# testdata/captures/oor/decodes/*.udp-payload-hex.txt), so the fuzzers start from real messages.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
caps=${LISP_CAPTURES_DIR:-$here/../testdata/captures}
for t in message map_request map_reply map_register map_notify ecm auth_verify data_header hsrp; do
    mkdir -p "$here/corpus/$t"
done
i=0
for f in "$caps"/oor/decodes/*.udp-payload-hex.txt; do
    # Each line: frame number, info words, payload hex (ECM: "outer,inner").
    awk '{print $NF}' "$f" | tr ',' '\n' | while read -r h; do
        case "$h" in *[!0-9a-f]*|"") continue ;; esac
        i=$((i + 1))
        for t in message map_request map_reply map_register map_notify ecm auth_verify data_header hsrp; do
            printf '%s' "$h" | xxd -r -p > "$here/corpus/$t/seed-$(basename "$f" .txt)-$i"
        done
    done
done
