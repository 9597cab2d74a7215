"""The regional issuers: one OpenSSH sshd per region of ``Settings.regions()``.

Each sshd has its own config and persistent host key; only ``internal-sftp`` runs, for the
single user ``Settings.sftp_user`` (a system account created here, shell nologin, password
``*``: unusable but not "locked", which sshd without PAM would refuse), with key-only auth by the
client key at ``Settings.sftp_key_path()``.  ``Settings.known_hosts_path()`` lists every
region's host key as ``[host]:port ssh-ed25519 ...`` and is what every client verifies.

The region root is served through ``ChrootDirectory`` when sshd accepts it (every path
component root-owned and not group/other-writable: true for the default ``.local`` under the
repository); otherwise (e.g. a local dir under /tmp) through ``internal-sftp -d ROOT``, which
starts the session in the root without confining it.  Clients should use paths relative to the
region root: they work the same in both modes.  ``StrictModes no`` because the key files live
in the project directory, which sshd's ownership checks do not expect.

``FISCALFLOW_SFTP_SERVER_LATENCY_MS`` > 0 makes each region a slow issuer (the benchmarks' seed
scenario): the same sshd with ``tooling/stack/slow_open.c`` preloaded, which takes that long in every
open of an ``.xml`` file and drops connections beyond ``FISCALFLOW_SFTP_SERVER_MAX_CONNECTIONS``.
internal-sftp serves each channel in a process of its own, one request at a time, so a channel serves
one file per delay and a connection's channels serve in parallel.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
from pathlib import Path

from tooling.stack.component import Component, StackContext, ensure_debian_package
from tooling.stack.state import ProcessRecord

SSHD = "/usr/sbin/sshd"
SLOW_OPEN_SOURCE = Path(__file__).with_name("slow_open.c")
SLOW_SUFFIX = ".xml"  # what a slow issuer is slow to serve: documents, not sshd's own files


def sftp_dir(ctx: StackContext) -> Path:
    return ctx.root / "sftp"


def _host_key_path(ctx: StackContext, region: str) -> Path:
    return sftp_dir(ctx) / "host_keys" / region


def _ensure_key(path: Path) -> str:
    """An ed25519 key at ``path`` (created once); returns its OpenSSH public key line."""
    import asyncssh

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519")
        path.touch(mode=0o600)
        key.write_private_key(str(path))
        key.write_public_key(str(path) + ".pub")
    return asyncssh.read_private_key(str(path)).export_public_key().decode().strip()


def ensure_sftp_keys(ctx: StackContext) -> None:
    """Client key, authorized_keys, every region's host key and the shared known_hosts."""
    s = ctx.settings
    client_pub = _ensure_key(s.sftp_key_path())
    authorized = sftp_dir(ctx) / "authorized_keys"
    authorized.parent.mkdir(parents=True, exist_ok=True)
    authorized.write_text(client_pub + "\n")
    lines = []
    for region, (host, port) in s.regions().items():
        pub = _ensure_key(_host_key_path(ctx, region))
        algo, blob = pub.split()[:2]
        lines.append(f"[{host}]:{port} {algo} {blob}")
    known = s.known_hosts_path()
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text("\n".join(lines) + "\n")


def ensure_sftp_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True)
    subprocess.run(["usermod", "-p", "*", name], check=True)


def chroot_allowed(path: Path) -> bool:
    """sshd's rule for ChrootDirectory: each component root-owned, not writable by group/others."""
    for part in [path, *path.parents]:
        st = part.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


class SftpRegion(Component):
    stop_tree = True  # live sessions are sshd's children: a region that is down drops them too

    def __init__(self, ctx: StackContext, region: str) -> None:
        super().__init__(ctx)
        self.region = region
        self.name = f"sftp-{region}"

    @property
    def address(self) -> str:
        host, port = self.settings.regions()[self.region]
        return f"{host}:{port}"

    @property
    def config_path(self) -> Path:
        return sftp_dir(self.ctx) / f"sshd-{self.region}.conf"

    def prepare(self) -> None:
        if os.geteuid() != 0:
            raise self.fail("sshd for SFTP regions must be started as root (it switches to the SFTP user)")
        ensure_debian_package(SSHD, "openssh-server")
        ensure_sftp_user(self.settings.sftp_user)
        ensure_sftp_keys(self.ctx)
        # sshd's privilege separation directory; /run is a tmpfs, so it vanishes at reboot.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        root = self.settings.region_root(self.region)
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        host, port = self.settings.regions()[self.region]
        if chroot_allowed(root):
            serve = f"ForceCommand internal-sftp\nChrootDirectory {root}"
        else:
            serve = f"ForceCommand internal-sftp -d {root}"
        self.config_path.write_text(f"""\
# Generated by `fiscalflow stack` for region {self.region}; rewritten at every start.
ListenAddress {host}:{port}
HostKey {_host_key_path(self.ctx, self.region)}
PidFile none
AuthorizedKeysFile {sftp_dir(self.ctx) / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers {self.settings.sftp_user}
PermitRootLogin no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
MaxStartups 100:30:200
MaxSessions 64
Subsystem sftp internal-sftp
{serve}
LogLevel INFO
""")
        check = subprocess.run([SSHD, "-t", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise self.fail(f"invalid sshd config {self.config_path}: {check.stderr.strip()}")

    @property
    def slow(self) -> bool:
        """``FISCALFLOW_SFTP_SERVER_LATENCY_MS`` > 0: this region is a slow issuer (the seed scenario's):
        sshd as always, with every document taking that long to open and a cap on connections
        (``slow_open.c``).  It was ``tooling/stack/slow_sftp.py``, an asyncssh server, until its CPU
        (0.48 s per 1,000 files over the three regions, ~8 % of the seed scenario's machine) counted
        against the pipeline's on the same two cores; that server stays for the pool-limit test."""
        return self.settings.sftp_server_latency_ms > 0

    def launch(self) -> ProcessRecord:
        argv = [SSHD, "-f", str(self.config_path), "-D", "-e"]
        if not self.slow:
            return self.spawn_record(argv)
        env = {**self.ctx.child_env(), "LD_PRELOAD": str(build_slow_open(sftp_dir(self.ctx))),
               "FISCALFLOW_SLOW_OPEN_MS": str(self.settings.sftp_server_latency_ms),
               "FISCALFLOW_SLOW_OPEN_SUFFIX": SLOW_SUFFIX,
               "FISCALFLOW_SLOW_MAX_CONNECTIONS": str(self.settings.sftp_server_max_connections)}
        return self.spawn_record(argv, env=env)

    def wait_ready(self, record: ProcessRecord, timeout_s: float) -> None:
        host, port = self.settings.regions()[self.region]

        def banner() -> bool:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                return sock.recv(64).startswith(b"SSH-")

        self.wait_until(record, banner, timeout_s, f"SSH banner on {self.address}")


def build_slow_open(directory: Path) -> Path:
    """``slow_open.so`` in ``directory``, compiled from ``slow_open.c`` when missing or older."""
    target = directory / "slow_open.so"
    if target.exists() and target.stat().st_mtime >= SLOW_OPEN_SOURCE.stat().st_mtime:
        return target
    gcc = ensure_debian_package("gcc", "gcc")
    tmp = target.with_suffix(".so.tmp")
    built = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SLOW_OPEN_SOURCE), "-ldl"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        raise RuntimeError(f"building {SLOW_OPEN_SOURCE.name} failed: {built.stderr.strip()}")
    tmp.replace(target)
    return target
