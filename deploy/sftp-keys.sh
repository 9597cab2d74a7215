#!/bin/sh
# Compose one-shot: the SFTP host key, the services' client key and their known_hosts, made
# once into the sftp-keys volume (kept across restarts, so known_hosts stays valid).
set -eu
cd /keys
[ -f host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -C sftp-host -f host_ed25519_key
[ -f client_key ] || ssh-keygen -q -t ed25519 -N '' -C fiscalflow -f client_key
# The regions' host names (network aliases of the one sftp service) all present the same key.
echo "sftp-north,sftp-central,sftp-south,sftp $(cut -d' ' -f1,2 host_ed25519_key.pub)" > known_hosts
# The services run as uid 10001 and must read their key; nobody else needs to.
chown 10001:10001 client_key known_hosts
chmod 600 client_key
chmod 644 known_hosts client_key.pub host_ed25519_key.pub
echo "sftp keys ready"
