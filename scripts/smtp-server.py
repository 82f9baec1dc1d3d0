"""A real SMTP server (aiosmtpd) for the email tests, Rust and JavaScript alike.

    python scripts/smtp-server.py MAILDIR

Listens on 127.0.0.1 on a port the kernel picks, prints that port on one line
once it accepts connections, and delivers every message into MAILDIR (new/).
Binding port 0 here, rather than being handed a "free" port, means no other
test server can take the port during the ~0.3 s Python needs to start.
"""

import asyncio
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP


async def main(maildir: str) -> None:
    handler = Mailbox(maildir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1]))
