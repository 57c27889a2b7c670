"""Our own addresses: one definition for recognising our mail coming back (the map stage),
for never answering ourselves (outbound) and for the address a mailbox sends from."""

from __future__ import annotations

from .config import Config, EwsMailbox, GraphMailbox, ImapMailbox, Mailbox


def sender_of(mailbox: Mailbox) -> str | None:
    """The address a mailbox sends from: its first listed address, else its own sign-in
    identity (Graph user, EWS mailbox, IMAP user name) when that is an address."""
    if mailbox.addresses:
        return mailbox.addresses[0]
    if isinstance(mailbox, GraphMailbox) and "@" in mailbox.user:
        return mailbox.user
    if isinstance(mailbox, EwsMailbox):
        return mailbox.email
    if isinstance(mailbox, ImapMailbox) and "@" in mailbox.username:
        return mailbox.username
    return None


def own_addresses(config: Config) -> frozenset[str]:
    """Every address that is ours, lower-cased: each mailbox's listed addresses and the
    address it sends from."""
    found: set[str] = set()
    for mailbox in config.mailboxes:
        found.update(a.lower() for a in mailbox.addresses)
        sender = sender_of(mailbox)
        if sender:
            found.add(sender.lower())
    return frozenset(found)
