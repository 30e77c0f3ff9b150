#!/usr/bin/env bash
# Get a VictoriaMetrics binary for the v2 write-path tests without installing anything
# system-wide: Debian packages `victoria-metrics` only in its unstable suite (sid), so this
# downloads that .deb with apt and unpacks it into the project-local, git-ignored
# .cache/victoria-metrics/. Prints the binary's path. Does nothing when it is already there.
#
# The Debian mirror is the one this machine's own apt sources already use (sources.list and
# sources.list.d/, one-line and deb822 formats), or SITEWATCH_DEBIAN_MIRROR when set. apt runs
# with a private sources list, lists, cache and preferences in a temporary directory, so the
# system's apt state is never touched (no root needed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.cache/victoria-metrics"
BINARY="$DEST/usr/bin/victoria-metrics"
SUITE="sid"

if [ -x "$BINARY" ]; then
    echo "$BINARY"
    exit 0
fi

for tool in apt-get apt-config dpkg; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "fetch-victoria-metrics: needs $tool (a Debian-based system)" >&2
        exit 1
    fi
done

# Print "URI<TAB>SIGNED_BY" for every enabled binary (`deb`) source with a `main` component,
# in the order apt reads them. SIGNED_BY is a keyring path or empty (inline keys are skipped:
# apt's default trusted keyrings then apply).
debian_sources() {
    local list parts file
    eval "$(apt-config shell list Dir::Etc::sourcelist/f parts Dir::Etc::sourceparts/d)"
    {
        [ -f "$list" ] && echo "$list"
        for file in "$parts"*.list "$parts"*.sources; do
            [ -f "$file" ] && echo "$file"
        done
    } | sort -u | while read -r file; do
        case "$file" in
        *.sources) deb822_entries "$file" ;;
        *) one_line_entries "$file" ;;
        esac
    done
}

one_line_entries() {
    awk '
        { sub(/#.*/, "") }
        $1 != "deb" { next }
        {
            signed = ""; i = 2
            if ($2 ~ /^\[/) {
                # options: [ key=value ... ], possibly with spaces inside the brackets
                opts = ""
                for (; i <= NF; i++) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } }
                gsub(/[\[\]]/, "", opts)
                n = split(opts, kv, " ")
                for (k = 1; k <= n; k++) if (kv[k] ~ /^signed-by=/) { signed = substr(kv[k], 11) }
            }
            uri = $i; main = 0
            for (j = i + 2; j <= NF; j++) if ($j == "main") main = 1
            if (main && uri != "") print uri "\t" signed
        }
    ' "$1"
}

deb822_entries() {
    awk '
        function flush() {
            if (types ~ /(^| )deb( |$)/ && comps ~ /(^| )main( |$)/ && enabled != "no") {
                n = split(uris, u, " ")
                for (k = 1; k <= n; k++) print u[k] "\t" (signed ~ /^\// ? signed : "")
            }
            types = uris = comps = signed = ""; enabled = "yes"; field = ""
        }
        BEGIN { enabled = "yes" }
        /^#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { if (field == "uris") uris = uris " " $0; next }
        {
            field = tolower(substr($0, 1, index($0, ":") - 1))
            value = substr($0, index($0, ":") + 1)
            gsub(/^[ \t]+|[ \t]+$/, "", value)
            if (field == "types") types = value
            else if (field == "uris") uris = value
            else if (field == "components") comps = value
            else if (field == "signed-by") signed = value
            else if (field == "enabled") enabled = tolower(value)
        }
        END { flush() }
    ' "$1"
}

mirror="${SITEWATCH_DEBIAN_MIRROR:-}"
signed_by=""
if [ -z "$mirror" ]; then
    # The Debian archive itself, not its security or updates archives: its URI ends in /debian.
    entry="$(debian_sources | awk -F'\t' '{ u = $1; sub(/\/+$/, "", u) } u ~ /\/debian$/ { print u "\t" $2; exit }')"
    mirror="${entry%%$'\t'*}"
    signed_by="${entry#*$'\t'}"
fi
if [ -z "$mirror" ]; then
    echo "fetch-victoria-metrics: found no Debian mirror (a 'deb' source ending in /debian with" >&2
    echo "component main) in this machine's apt sources; set SITEWATCH_DEBIAN_MIRROR to one." >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Run as root, apt downloads as its unprivileged _apt user, which must reach the lists dir.
chmod 755 "$work"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts" "$work/prefs"
options="${signed_by:+[signed-by=$signed_by] }"
echo "deb $options$mirror $SUITE main" > "$work/sources.list"
apt_private=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=$work/parts"
    -o "Dir::Etc::Preferences=$work/prefs/none"
    -o "Dir::Etc::PreferencesParts=$work/prefs"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "Acquire::Languages=none"
)

echo "==> fetching victoria-metrics from Debian $SUITE (private apt state in $work)" >&2
if ! apt-get -q "${apt_private[@]}" update >"$work/update.log" 2>&1; then
    cat "$work/update.log" >&2
    echo "fetch-victoria-metrics: apt-get update for $SUITE failed" >&2
    exit 1
fi
if ! (cd "$work" && apt-get -q "${apt_private[@]}" download victoria-metrics) >"$work/download.log" 2>&1; then
    cat "$work/download.log" >&2
    echo "fetch-victoria-metrics: apt-get download victoria-metrics failed" >&2
    exit 1
fi

deb="$(ls "$work"/victoria-metrics_*.deb)"
rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
dpkg -x "$deb" "$DEST.partial"
if [ ! -x "$DEST.partial/usr/bin/victoria-metrics" ]; then
    echo "fetch-victoria-metrics: $(basename "$deb") has no usr/bin/victoria-metrics" >&2
    exit 1
fi
basename "$deb" > "$DEST.partial/SOURCE"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "$BINARY"
