"""Pydantic settings for the service, read from YAML with environment overrides."""

from configs.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
