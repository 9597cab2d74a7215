"""``fiscalflow config``: the effective settings, or the README's table of every variable."""

from __future__ import annotations

import json

import typer


def settings_table() -> str:
    from pydantic import SecretStr

    from shared.settings import Settings

    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        default = f.default
        if isinstance(default, SecretStr):
            shown = "(secret)"
        elif name == "local_dir":
            shown = "`./.local`"
        else:
            shown = f"`{default}`" if default not in (None, "") else "—"
        lines.append(f"| `FISCALFLOW_{name.upper()}` | {shown} | {f.description or ''} |")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("config")
    def config(markdown: bool = typer.Option(False, "--markdown", help="Print the README's table.")) -> None:
        """Print the effective settings (secrets masked) as JSON, or every variable as a table."""
        from pydantic import SecretStr

        from shared.settings import Settings

        if markdown:
            typer.echo(settings_table())
            return
        values = Settings().model_dump(mode="json")
        for k, v in values.items():
            if isinstance(getattr(Settings(), k), SecretStr):
                values[k] = "********" if v else ""
        typer.echo(json.dumps(values, indent=2, default=str))
