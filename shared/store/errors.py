"""Errors the storage layer raises on purpose, with messages that say what to fix."""

from __future__ import annotations


class StorageLimitError(ValueError):
    """A write that Azure Storage would refuse (Azurite may accept it: we check ourselves)."""


class ContractError(ValueError):
    """A queue message that is not a valid contract. Retrying cannot fix it."""
