"""IMAP mailboxes: polled by UID, per folder, with imapclient."""
