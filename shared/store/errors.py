"""Errors the storage layer raises on purpose, with messages that say what to fix."""

from __future__ import annotations

# ContractError lives in core (what a queue message must be is the contract's business); it is
# re-exported here for the importers of `shared.store.errors` that predate it.
from ..core.errors import ContractError, MailfilerError

__all__ = ["ContractError", "StorageLimitError"]


class StorageLimitError(ValueError, MailfilerError):
    """A write that Azure Storage would refuse (Azurite may accept it: we check ourselves)."""
