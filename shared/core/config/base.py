"""What every part of the configuration shares: names, the strict model, ConfigError."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from ..errors import MailfilerError

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SETTING = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Keys that would put a secret in the file; each has a `<key>_setting` twin naming an app setting.
SECRET_KEYS = ("password", "client_secret", "secret", "token", "refresh_token", "api_key", "key")


class ConfigError(ValueError, MailfilerError):
    """A configuration that cannot be used, with every problem located in the file."""

    def __init__(
        self,
        source: str,
        problems: list[tuple[str, str]],
        lines: list[int | None] | None = None,
    ) -> None:
        self.source = source
        self.problems = problems
        # The line of the file each problem is on, where the file has it (a missing key: its
        # parent's line), so an editor can jump there: `file:12: path: problem`.
        self.lines: list[int | None] = lines if lines is not None else [None] * len(problems)
        out = []
        for (path, problem), line in zip(problems, self.lines, strict=True):
            where = f"{source}:{line}" if line else source
            out.append(f"{where}: {path}: {problem}" if path else f"{where}: {problem}")
        super().__init__("\n".join(out))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if str(key).lower() in SECRET_KEYS:
                    raise ValueError(
                        f"'{key}' would put a secret in the file; write '{key}_setting: NAME' "
                        "and keep the value in that app setting (a Key Vault reference in Azure)"
                    )
        return data
