"""The ``fiscalflow`` command: one entry point, sub-commands registered by their owners.

Heavy imports (chDB, satcfdi, confluent-kafka) happen inside the commands, so
``fiscalflow --help`` stays fast.
"""

from __future__ import annotations

import typer

from shared.cli import registry

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])
registry.register_all(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
