"""asyncssh's log calls with its logs off (shared/sftp/pool.py): nothing is formatted, and with
its logs on the same lines are written as asyncssh writes them."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import ClassVar

import pytest
from asyncssh.logging import SSHLogger
from asyncssh.logging import logger as asyncssh_logger
from asyncssh.packet import SSHPacketLogger

import shared.sftp.pool  # noqa: F401  (installs the guard)


class Counted(list[bytes]):
    """A log argument that counts how often asyncssh renders it (a list: asyncssh joins its items)."""

    def __init__(self) -> None:
        super().__init__([b"a.xml"])
        self.rendered = 0

    def __iter__(self) -> Iterator[bytes]:
        self.rendered += 1
        return super().__iter__()


class Handler(SSHPacketLogger):
    _handler_names: ClassVar[Mapping[int, str]] = {3: "MSG_OPEN"}

    def __init__(self, logger: SSHLogger) -> None:
        self._logger = logger

    @property
    def logger(self) -> SSHLogger:
        return self._logger


@pytest.fixture
def sftp_logger() -> Iterator[SSHLogger]:
    logger = asyncssh_logger.get_child("sftp")
    old_debug = SSHLogger._debug_level  # caplog.at_level sets and restores the logger's level
    yield logger
    SSHLogger.set_debug_level(old_debug)


def test_a_debug_line_is_not_rendered_while_debug_logging_is_off(sftp_logger: SSHLogger,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    arg = Counted()
    with caplog.at_level(logging.INFO, logger="asyncssh"):
        sftp_logger.debug1("Sending open for %s", arg)
    assert arg.rendered == 0
    assert caplog.records == []


def test_a_debug_line_is_written_as_asyncssh_writes_it_when_debug_logging_is_on(
        sftp_logger: SSHLogger, caplog: pytest.LogCaptureFixture) -> None:
    arg = Counted()
    with caplog.at_level(logging.DEBUG, logger="asyncssh"):
        sftp_logger.debug1("Sending open for %s, %s", arg, ("127.0.0.1", 22))
        sftp_logger.info("Starting SFTP client")
    assert arg.rendered == 1
    assert [r.getMessage() for r in caplog.records] == [
        "Sending open for a.xml, 127.0.0.1, port 22", "Starting SFTP client"]


@pytest.mark.parametrize(("debug_level", "logged"), [(1, False), (3, True)])
def test_packets_are_logged_only_at_debug_level_3(sftp_logger: SSHLogger, caplog: pytest.LogCaptureFixture,
                                                  debug_level: int, logged: bool) -> None:
    SSHLogger.set_debug_level(debug_level)
    with caplog.at_level(logging.DEBUG, logger="asyncssh"):
        Handler(sftp_logger).log_sent_packet(3, 7, b"\x00\x01", "note")
    messages = [r.getMessage().split() for r in caplog.records]  # the hex dump's padding aside
    assert messages == ([["[pktid=7]", "Sent", "MSG_OPEN", "(3),", "2", "bytes", "(note)", "00000000:", "00", "01",
                          ".."]] if logged else [])
