# shellcheck shell=bash disable=SC2034  # sourced by scripts/images.sh, which reads the CONFIG_* it sets
# Sourced by scripts/images.sh: the base root filesystem every image starts from.
# Changing this file changes the base's cache key, and so every image's.
#
# Debian bookworm minbase from the machine's own Debian mirror (the one apt uses), with
# bookworm-updates and bookworm-security enabled and applied, and dpkg told to leave out
# documentation, man pages and translations of everything installed later (copyright files stay).

base_build() {  # base_build ROOTFS
    local root="$1"
    debootstrap --variant=minbase --components=main "$SUITE" "$root" "$DEBIAN_MIRROR" >&2 \
        || die "debootstrap of $SUITE from $DEBIAN_MIRROR failed (see above)"
    cat > "$root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb $DEBIAN_SECURITY_MIRROR $SUITE-security main
EOF
    cat > "$root/etc/dpkg/dpkg.cfg.d/riskloop-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/groff/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/locale/*
EOF
    # no recommends, ever: each image names what it needs
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        > "$root/etc/apt/apt.conf.d/99riskloop-norecommends"
    in_root "$root" apt-get update -qq
    in_root "$root" apt-get -y -qq -o Dpkg::Options::=--force-confold dist-upgrade >&2
    in_root "$root" apt-get clean
    # what debootstrap installed before the exclusions: drop it the same way
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
    find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
}
