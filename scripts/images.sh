#!/usr/bin/env bash
# riskloop's container images without Docker and without a registry: OCI archives built from a Debian
# root filesystem (debootstrap) and imported into a containerd. scripts/node.sh's node runs them with
# imagePullPolicy: Never.
#
#   scripts/images.sh build  [NAME...]   build the OCI archives that are missing (all by default)
#   scripts/images.sh import [NAME...]   import them into containerd ($CONTAINERD_ADDRESS, namespace k8s.io;
#                                        default: the node's, from .riskloop/node/env)
#   scripts/images.sh list   [NAME...]   one image reference per line
#   scripts/images.sh archive NAME       the path of NAME's archive (built or not)
#
# NAMEs: riskloop postgres redis s3 storage-initializer. Each image's recipe is scripts/images/NAME.sh.
#
# How: a base root filesystem (`debootstrap --variant=minbase bookworm` from the machine's Debian mirror,
# scripts/images/base.sh) is built once; each image is a copy of it in which the recipe runs apt-get and
# uv in a chroot (in a private mount namespace, so no mount outlives the build), written as one layer
# with umoci (config: Env, User, WorkingDir, Entrypoint/Cmd, labels) and saved by skopeo as an OCI archive
# whose index names the image reference. Archives live under $RISKLOOP_CACHE/images, keyed by a hash of
# everything they are built from (base, recipe, input files): build rebuilds only what changed.
#
# Needs root (debootstrap, chroot), Debian's apt (installs debootstrap umoci skopeo when missing) and,
# for riskloop/s3/storage-initializer, uv (make setup installs it).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RECIPES="$REPO_ROOT/scripts/images"
CACHE="${RISKLOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/riskloop}"
IMG_CACHE="$CACHE/images"
NAMES=(riskloop postgres redis s3 storage-initializer)
SUITE=bookworm
# shellcheck disable=SC2034  # used by the recipes
REGISTRY=riskloop.local
# bump when the way images are finished or written changes (finish_rootfs, tar, umoci, skopeo): rebuilds
# every image (not the base)
FORMAT=2

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 2; }

usage() {
    sed -n '5,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# --- the machine's Debian mirror (what apt is configured with), for debootstrap and the images' apt
debian_mirrors() {
    local files=() f uris
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] && files+=("$f")
    done
    # one-line style "deb URI SUITE ..." and deb822 style "URIs: URI" followed by "Suites: ..."
    uris="$(awk '
        /^[[:space:]]*deb[[:space:]]/ { u=$2; if ($2 ~ /^\[/) { for (i=2;i<=NF;i++) if ($i ~ /\]$/) { u=$(i+1); break } } print u " " $0; next }
        /^URIs:/ { u=$2 } /^Suites:/ && u != "" { print u " " $0; u="" }
    ' "${files[@]}" 2>/dev/null || true)"
    DEBIAN_MIRROR="$(awk '$0 ~ /bookworm/ && $0 !~ /security/ && $1 ~ /debian\/?$/ {print $1; exit}' <<<"$uris")"
    DEBIAN_SECURITY_MIRROR="$(awk '$0 ~ /bookworm-security/ {print $1; exit}' <<<"$uris")"
    DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
    DEBIAN_MIRROR="${DEBIAN_MIRROR%/}" DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR%/}"
}

need_root() { [[ "$(id -u)" == 0 ]] || die "building images needs root (debootstrap, chroot); run it as root"; }

# the tools, from Debian's apt when missing
need_tools() {
    local missing=() t
    for t in debootstrap umoci skopeo; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them (a Debian machine is needed)"
    log "installing ${missing[*]} with apt-get"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# uv's own binary (not a pyenv shim or wrapper script), to run inside the chroot
uv_binary() {
    local cand
    command -v uv >/dev/null 2>&1 || die "uv is not on PATH: run make setup (it installs uv) first"
    for cand in "$(python3 -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null || true)" \
                "$(readlink -f "$(command -v uv)")" "$(pyenv which uv 2>/dev/null || true)"; do
        if [[ -n "$cand" && -f "$cand" && "$(head -c4 "$cand" | od -An -c | tr -d ' ')" == '177ELF' ]]; then
            echo "$cand"; return 0
        fi
    done
    die "cannot find uv's binary behind $(command -v uv); install it with: python3 -m pip install uv"
}

# --- run a command in a root filesystem: a private mount namespace (proc, dev, the host's uv cache) that
# dies with the command, so no mount is left behind, also when the build is interrupted
in_root() {  # in_root ROOTFS CMD...
    local root="$1"; shift
    # shellcheck disable=SC2016  # expanded by the inner shell
    unshare --mount --propagation private -- /bin/bash -c '
        set -e
        root="$1"; shift
        mount -t proc proc "$root/proc"
        mount --bind /dev "$root/dev"
        if [[ -n "${UV_CACHE_HOST:-}" ]]; then
            mkdir -p "$root/var/cache/uv-host"
            mount --bind "$UV_CACHE_HOST" "$root/var/cache/uv-host"
        fi
        tls=()
        [[ -f "$root/tmp/.build-ca.crt" ]] && tls=(SSL_CERT_FILE=/tmp/.build-ca.crt)
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "${tls[@]}" \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
    ' in_root "$root" "$@"
}

# networking and no daemons during a build; undone by finish_rootfs
prepare_rootfs() {  # prepare_rootfs ROOTFS
    local root="$1" ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # the build's downloads trust what this machine trusts (its own CAs, e.g. an egress proxy's); the
    # image keeps only Debian's ca-certificates: the bundle sits in /tmp, which finish_rootfs empties
    if [[ -f "$ca" ]]; then cp "$ca" "$root/tmp/.build-ca.crt"; fi
    printf '#!/bin/sh\n# no service starts while an image is built\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
}

apt_install() {  # apt_install ROOTFS PACKAGE...
    local root="$1"; shift
    in_root "$root" apt-get update -qq
    in_root "$root" apt-get install -y -qq --no-install-recommends "$@" >&2
}

# what an image must not carry: apt's lists and caches, logs, the build's uv and resolver, docs
finish_rootfs() {  # finish_rootfs ROOTFS
    local root="$1"
    in_root "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/var/lib/dpkg/*-old "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache \
        "$root/usr/local/bin/uv" "$root/usr/sbin/policy-rc.d" "$root/var/cache/uv-host"
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
    find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    # debootstrap's device nodes: the runtime mounts its own /dev
    find "$root/dev" -mindepth 1 -delete
    # the runtime writes its own (kubelet and containerd mount these); keep empty files, not the build's
    : > "$root/etc/resolv.conf"
    [[ -f "$root/etc/hostname" ]] && : > "$root/etc/hostname"
}

with_uv() {  # with_uv ROOTFS: uv (the host's, same version as make setup's) at /usr/local/bin/uv
    install -m 755 "$(uv_binary)" "$1/usr/local/bin/uv"
}

# the debian python3.11 runtime the python images share (as python:3.11-slim carries: certificates,
# /etc/services, time zones)
python_runtime() {  # python_runtime ROOTFS
    apt_install "$1" python3.11 ca-certificates netbase tzdata
}

# files of the repo (tracked, or new and not ignored) under the given paths, for hashing and copying
repo_files() {
    git -C "$REPO_ROOT" ls-files -co --exclude-standard -- "$@" | sort -u \
        | while read -r f; do [[ -f "$REPO_ROOT/$f" || -L "$REPO_ROOT/$f" ]] && echo "$f"; done
    # symlinks too (copied as links): src/riskloop/{components,pipelines} link the top-level folders
}

copy_repo_files() {  # copy_repo_files DEST PATH...
    local dest="$1"; shift
    mkdir -p "$dest"
    repo_files "$@" | tar -C "$REPO_ROOT" -cf - -T - | tar -C "$dest" -xf -
}

# --- cache keys
hash_stream() { sha256sum | cut -c1-16; }

base_key() {
    { echo "suite $SUITE mirror $DEBIAN_MIRROR security $DEBIAN_SECURITY_MIRROR"
      cat "$RECIPES/base.sh"; } | hash_stream
}

load_recipe() {  # load_recipe NAME: defines NAME's functions (recipe_ref, recipe_inputs, recipe_build)
    local name="$1"
    [[ " ${NAMES[*]} " == *" $name "* ]] || die "unknown image '$name'; images: ${NAMES[*]}"
    unset -f recipe_ref recipe_inputs recipe_build
    # shellcheck source=/dev/null
    . "$RECIPES/$name.sh"
}

image_key() {  # image_key NAME (recipe loaded)
    local f
    { echo "format $FORMAT base $(base_key) image $1 ref $(recipe_ref)"
      cat "$RECIPES/$1.sh"
      while read -r f; do
          if [[ -L "$REPO_ROOT/$f" ]]; then echo "link $f $(readlink "$REPO_ROOT/$f")"; else echo "file $f"; cat "$REPO_ROOT/$f"; fi
      done < <(recipe_inputs)
    } | hash_stream
}

archive_path() {  # archive_path NAME (recipe loaded)
    echo "$IMG_CACHE/$1-$(image_key "$1").oci.tar"
}

# --- build
build_base() {
    local key dir tmp t0
    key="$(base_key)"
    dir="$IMG_CACHE/base-$key"
    if [[ -d "$dir/rootfs" ]]; then BASE_ROOTFS="$dir/rootfs"; return 0; fi
    log "base: debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR (a few minutes, once)"
    t0=$SECONDS
    tmp="$IMG_CACHE/.base-$key.tmp"
    rm -rf "$tmp"; mkdir -p "$tmp"
    # shellcheck source=/dev/null
    . "$RECIPES/base.sh"
    base_build "$tmp/rootfs"
    rm -rf "$dir"; mv "$tmp" "$dir"
    # older bases are of no use any more
    find "$IMG_CACHE" -maxdepth 1 -name 'base-*' ! -name "base-$key" -exec rm -rf {} +
    log "base: built in $((SECONDS - t0)) s, $(du -sm "$dir/rootfs" | cut -f1) MB"
    BASE_ROOTFS="$dir/rootfs"
}

# image config from the recipe's CONFIG_* variables, the layer from the root filesystem
write_archive() {  # write_archive NAME ROOTFS OUT
    local name="$1" root="$2" out="$3" work="$4" ref
    local args=() e
    ref="$(recipe_ref)"
    # one layer: sorted names, numeric owners; file times stay as built (Python checks .pyc against them)
    tar --sort=name --numeric-owner --xattrs --xattrs-include='security.capability' \
        -C "$root" -cf "$work/layer.tar" .
    umoci init --layout "$work/oci"
    umoci new --image "$work/oci:img"
    umoci raw add-layer --image "$work/oci:img" \
        --history.created "$(date -u -d @"$EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
        --history.created_by "scripts/images.sh build $name (debootstrap $SUITE + scripts/images/$name.sh)" \
        "$work/layer.tar"
    rm -f "$work/layer.tar"
    args=(--config.user "$CONFIG_USER" --config.workingdir "$CONFIG_WORKDIR"
          --created "$(date -u -d @"$EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
          --author "riskloop scripts/images.sh" --no-history)
    for e in "${CONFIG_ENV[@]}"; do args+=(--config.env "$e"); done
    # an empty entrypoint is cleared explicitly (a new image has none; stated for the reader)
    if [[ ${#CONFIG_ENTRYPOINT[@]} -gt 0 ]]; then
        for e in "${CONFIG_ENTRYPOINT[@]}"; do args+=(--config.entrypoint "$e"); done
    fi
    for e in "${CONFIG_CMD[@]}"; do args+=(--config.cmd "$e"); done
    for e in "${CONFIG_LABELS[@]}"; do args+=(--config.label "$e"); done
    umoci config --image "$work/oci:img" "${args[@]}"
    skopeo copy --quiet "oci:$work/oci:img" "oci-archive:$out.tmp:$ref" >&2
    mv "$out.tmp" "$out"
}

build_one() {  # build_one NAME
    local name="$1" out work root t0
    load_recipe "$name"
    out="$(archive_path "$name")"
    if [[ -f "$out" ]]; then log "$name: $(recipe_ref) up to date ($out)"; return 0; fi
    build_base
    t0=$SECONDS
    work="$IMG_CACHE/.work-$name"
    rm -rf "$work"; mkdir -p "$work"
    root="$work/rootfs"
    log "$name: building $(recipe_ref)"
    cp -a "$BASE_ROOTFS" "$root"
    prepare_rootfs "$root"
    CONFIG_USER="" CONFIG_WORKDIR="/" CONFIG_ENV=() CONFIG_ENTRYPOINT=() CONFIG_CMD=() CONFIG_LABELS=()
    EPOCH="$(git -C "$REPO_ROOT" log -1 --format=%ct 2>/dev/null || echo 0)"
    recipe_build "$root"
    finish_rootfs "$root"
    [[ -n "$CONFIG_USER" ]] || die "recipe $name sets no CONFIG_USER (images run as non-root)"
    local rootfs_mb; rootfs_mb="$(du -sm "$root" | cut -f1)"
    write_archive "$name" "$root" "$out" "$work"
    rm -rf "$work"
    # older archives of this image are of no use any more
    find "$IMG_CACHE" -maxdepth 1 -name "$name-*.oci.tar" ! -path "$out" -delete
    log "$name: $(recipe_ref) built in $((SECONDS - t0)) s: root filesystem ${rootfs_mb} MB, archive $(du -m "$out" | cut -f1) MB"
}

cmd_build() {
    need_root; need_tools; debian_mirrors
    mkdir -p "$IMG_CACHE"
    # one build at a time per cache (a second waits): builds share the base and the work directories
    exec 9> "$IMG_CACHE/.lock"
    if ! flock -n 9; then
        log "another scripts/images.sh build is running on $IMG_CACHE; waiting for it"
        flock 9
    fi
    UV_CACHE_HOST="$(uv cache dir 2>/dev/null || true)"
    [[ -n "$UV_CACHE_HOST" ]] && mkdir -p "$UV_CACHE_HOST"
    export UV_CACHE_HOST
    local name
    for name in "$@"; do build_one "$name"; done
}

# a field of an archive's one manifest in its index.json: digest, or the reference it names (ref)
archive_index() {  # archive_index ARCHIVE digest|ref
    tar -xOf "$1" index.json | python3 -c 'import json, sys
m = json.load(sys.stdin)["manifests"][0]
print(m["digest"] if sys.argv[1] == "digest" else m["annotations"]["org.opencontainers.image.ref.name"])' "$2"
}
archive_ref() { archive_index "$1" ref 2>/dev/null || true; }

cmd_import() {
    local name out t0 ref digest
    if [[ -z "${CONTAINERD_ADDRESS:-}" ]]; then
        local env="$REPO_ROOT/.riskloop/node/env"
        [[ -f "$env" ]] || die "CONTAINERD_ADDRESS is not set and $env does not exist: start the node (scripts/node.sh up) or set CONTAINERD_ADDRESS to a containerd socket"
        set -a; # shellcheck source=/dev/null
        . "$env"; set +a
    fi
    [[ -S "$CONTAINERD_ADDRESS" ]] || die "CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS is not a socket: is containerd running?"
    command -v ctr >/dev/null || die "ctr (containerd's client) is not on PATH: apt-get install containerd"
    debian_mirrors
    for name in "$@"; do
        load_recipe "$name"
        out="$(archive_path "$name")"
        if [[ ! -f "$out" ]]; then
            # The inputs changed since the last build (in a shared work tree, someone saved a file). The last
            # archive still serves if it carries the same reference (same commit, so the same tag): say so.
            local last
            last="$(find "$IMG_CACHE" -maxdepth 1 -name "$name-*.oci.tar" | head -1)"
            [[ -n "$last" && "$(archive_ref "$last")" == "$(recipe_ref)" ]] \
                || die "$name: no archive for the current inputs ($out): run scripts/images.sh build $name first"
            log "$name: warning: inputs changed since $last was built; importing it ($(recipe_ref)) anyway"
            out="$last"
        fi
        # the same manifest under the same name is there already (a node keeps its images across down/up):
        # importing again would only unpack a gigabyte for nothing
        ref="$(recipe_ref)"
        digest="$(archive_index "$out" digest)" || die "$name: $out has no readable index.json: delete it and build again"
        if ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images ls 2>/dev/null \
                | awk -v r="$ref" -v d="$digest" '$1 == r && $3 == d { found = 1 } END { exit !found }'; then
            log "$name: $ref ($digest) is in containerd already"
            continue
        fi
        t0=$SECONDS
        ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images import "$out" >&2 \
            || die "$name: ctr images import $out failed"
        log "$name: imported $(recipe_ref) in $((SECONDS - t0)) s"
        prune_older "$ref"
    done
}

# Other tags of the same repository (riskloop's image gets a new one per commit, ~3.5 GB unpacked each) are
# removed from containerd unless a container still uses them; containerd then frees their content.
prune_older() {  # prune_older REF
    local ref="$1" repo used old
    repo="${ref%:*}"
    used="$(ctr --address "$CONTAINERD_ADDRESS" -n k8s.io containers ls 2>/dev/null | awk 'NR > 1 { print $2 }')"
    while read -r old; do
        [[ -n "$old" && "$old" != "$ref" && "${old%:*}" == "$repo" ]] || continue
        if grep -qxF "$old" <<<"$used"; then
            log "keeping $old: a container uses it"
        elif ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images rm "$old" >/dev/null; then
            log "removed $old from containerd (replaced by $ref)"
        fi
    done < <(ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images ls -q 2>/dev/null)
}

cmd_list() {
    local name
    for name in "$@"; do load_recipe "$name"; recipe_ref; done
}

[[ $# -ge 1 ]] || usage
cmd="$1"; shift
[[ $# -gt 0 ]] || set -- "${NAMES[@]}"
case "$cmd" in
    build) cmd_build "$@" ;;
    import) cmd_import "$@" ;;
    list) cmd_list "$@" ;;
    archive) [[ $# -eq 1 ]] || usage; debian_mirrors; load_recipe "$1"; archive_path "$1" ;;
    -h|--help|help) usage ;;
    *) echo "images: unknown command '$cmd'" >&2; usage ;;
esac
