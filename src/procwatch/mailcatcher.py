"""`procwatch up`'s local mail catcher: an SMTP server on 127.0.0.1 (aiosmtpd, in a thread of
`up`) that writes each message it receives to DIR/mail/ as one .eml file, so alerts sent to
email channels can be read on a machine with no mail server. The services get its address as
PROCWATCH_SMTP_URL (unless that is set already: then mail goes where it says).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from procwatch.embedded import free_port

log = logging.getLogger("procwatch.mailcatcher")


class _SaveToDir:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seq = itertools.count(1)

    async def handle_DATA(self, server, session, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{next(self._seq):06d}.eml"
        tmp = self.directory / f".{name}.tmp"
        data = envelope.original_content or envelope.content
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
        tmp.replace(self.directory / name)  # readers never see half a message
        log.info("mail caught", extra={"file": name, "to": list(envelope.rcpt_tos)})
        return "250 Message accepted for delivery"


class MailCatcher:
    def __init__(self, directory: str | os.PathLike, port: int = 0) -> None:
        self.directory = Path(directory)
        self.port = port
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start listening; returns the SMTP URL for PROCWATCH_SMTP_URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._controller = Controller(_SaveToDir(self.directory), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self.url

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
