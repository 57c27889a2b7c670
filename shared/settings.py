"""App settings, read from the environment (Azure app settings, or local.settings.json Values).

The declarative config file (mailboxes, record types, routes) is named by MAILFILER_CONFIG;
everything secret stays in app settings that the file names.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .core.config import Config, ConfigError, parse_config
from .store.account import StorageSettings


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    storage_connection: str | None = Field(default=None, alias="AzureWebJobsStorage")
    storage_blob_uri: str | None = Field(default=None, alias="AzureWebJobsStorage__blobServiceUri")
    storage_queue_uri: str | None = Field(
        default=None, alias="AzureWebJobsStorage__queueServiceUri"
    )
    storage_table_uri: str | None = Field(
        default=None, alias="AzureWebJobsStorage__tableServiceUri"
    )
    storage_credential: str | None = Field(default=None, alias="AzureWebJobsStorage__credential")
    storage_client_id: str | None = Field(default=None, alias="AzureWebJobsStorage__clientId")
    config_path: str = Field(
        default="mailfiler.yaml", validation_alias=AliasChoices("MAILFILER_CONFIG")
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("MAILFILER_LOG_LEVEL"))

    def storage(self) -> StorageSettings:
        return StorageSettings(
            connection_string=self.storage_connection,
            blob_uri=self.storage_blob_uri,
            queue_uri=self.storage_queue_uri,
            table_uri=self.storage_table_uri,
            credential=self.storage_credential,
            client_id=self.storage_client_id,
        )


def load_config(path: str | Path) -> Config:
    """Read and validate the config file; errors name the file, the path in it and the problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            str(file), [("", f"cannot read the file: {exc.strerror or exc}")]
        ) from exc
    return parse_config(text, str(file))


def config_dir(path: str | Path) -> Path:
    """Relative paths in the config (local mailboxes) are relative to the file itself."""
    return Path(path).resolve().parent


def missing_secrets(config: Config, environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [
        f"{where} names app setting {name}, which is not set"
        for name, where in config.secret_settings().items()
        if not env.get(name)
    ]
