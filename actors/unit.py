"""The systemd unit for a settings file: deploy/optionsbot.service with its @...@ values filled."""

from __future__ import annotations

from pathlib import Path

from configs.settings import Settings

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "optionsbot.service"


def writable_dirs(settings: Settings, root: Path, nested: bool = False) -> list[Path]:
    """Every directory the service writes: the database's (with its -wal, lock, history mark and
    market-hours cache), the JSON log's, the kill switch's and the backups'. Relative paths are
    relative to the working directory, which the unit sets to `root`."""
    files = [settings.storage.path, settings.log.json_file, settings.risk.kill_switch_file]
    dirs = [Path(f).parent for f in files if f is not None and str(f) != ":memory:"]
    if settings.storage.backup_dir is not None:
        dirs.append(Path(settings.storage.backup_dir))
    out: list[Path] = []
    for d in dirs:
        d = d if d.is_absolute() else root / d
        d = d.resolve()
        if d not in out:
            out.append(d)
    if nested:
        return out
    # A directory inside another one already listed is writable through it.
    return [d for d in out if not any(o != d and o in d.parents for o in out)]


def render_unit(
    settings: Settings, config: Path, user: str, group: str, root: Path, python: str | None = None
) -> tuple[str, list[Path]]:
    import sys

    for name, value in (("user", user), ("group", group)):
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"--{name}: {value!r} is not a user or group name")
    writable = writable_dirs(settings, root)
    # Under /home (a clone in the pi user's home): read-only, the writable paths still are.
    home = any(p == Path("/home") or Path("/home") in p.parents for p in [root, *writable])
    values = {
        "@ROOT@": str(root),
        "@PYTHON@": python or sys.executable,
        "@CONFIG@": str(config),
        "@USER@": user,
        "@GROUP@": group,
        "@WRITABLE@": " ".join(str(d) for d in writable),
        "@PROTECT_HOME@": "read-only" if home else "yes",
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        if any(c.isspace() for c in value) and key != "@WRITABLE@":
            raise ValueError(f"{value!r} has a space: systemd would split it; use another path")
        text = text.replace(key, value)
    return text, writable
