"""Install alertmanager.yml with its secrets read from files, for Alertmanagers without *_file fields.

Alertmanager 0.25 (Debian bookworm) cannot read the Telegram bot token, the Discord
webhook URL or the webhook URL from a file, so the repository's config holds
placeholders and this fills them in, one file per field (what bot_token_file,
webhook_url_file and url_file do in later releases), writing the result outside the
repository:

    python -m grafana.alertmanager.render --out /etc/prometheus/alertmanager.yml

A placeholder that is not one (a real value committed by mistake) is refused.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SOURCE = HERE / "alertmanager.yml"
SECRETS_DIR = Path("/etc/optionsbot/secrets")

# (receiver config list, field) -> (file name under the secrets directory, placeholder)
FIELDS: dict[tuple[str, str], tuple[str, Any]] = {
    ("telegram_configs", "bot_token"): (
        "telegram_bot_token",
        "https://secret.invalid/telegram_bot_token",
    ),
    ("telegram_configs", "chat_id"): ("telegram_chat_id", -1),
    ("discord_configs", "webhook_url"): (
        "discord_webhook_url",
        "https://secret.invalid/discord_webhook_url",
    ),
    ("webhook_configs", "url"): ("webhook_url", "https://secret.invalid/webhook_url"),
}


class RenderError(Exception):
    pass


def secret_fields(config: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(receiver name, kind, field, integration config) for every field that holds a secret."""
    for receiver in config.get("receivers") or []:
        for kind, field in FIELDS:
            for integration in receiver.get(kind) or []:
                yield receiver["name"], kind, field, integration


def read_secret(directory: Path, name: str) -> str:
    path = directory / name
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise RenderError(f"{path}: {exc.strerror or exc}") from None
    if not value:
        raise RenderError(f"{path} is empty")
    return value


def render(source: Path, secrets_dir: Path) -> dict[str, Any]:
    config = yaml.safe_load(source.read_text())
    for receiver, kind, field, integration in secret_fields(config):
        name, placeholder = FIELDS[(kind, field)]
        if integration.get(field) != placeholder:
            raise RenderError(
                f"{source}: receiver {receiver} {kind}.{field} is not the placeholder "
                f"{placeholder!r}; secrets never go in the repository"
            )
        value: Any = read_secret(secrets_dir, name)
        if field == "chat_id":
            try:
                value = int(value)
            except ValueError:
                raise RenderError(f"{secrets_dir / name}: not a chat id") from None
        integration[field] = value
    # Relative template globs would resolve against the output's directory.
    config["templates"] = [
        str(source.parent / pattern) if not os.path.isabs(pattern) else pattern
        for pattern in config.get("templates") or []
    ]
    for pattern in config["templates"]:
        if not glob.glob(pattern):
            raise RenderError(f"template glob {pattern} matches nothing")
    return config


def write(config: dict[str, Any], out: Path) -> None:
    out = out.resolve()
    if out.is_relative_to(REPO):
        raise RenderError(f"{out} is inside the repository: the rendered file holds secrets")
    tmp = out.with_name(f".{out.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write("# Rendered by grafana/alertmanager/render.py; holds secrets: do not copy.\n")
        yaml.safe_dump(config, f, sort_keys=False, width=1000)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--secrets", type=Path, default=SECRETS_DIR)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        write(render(args.source, args.secrets), args.out)
    except RenderError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (mode 0640: give Alertmanager's group read access)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
