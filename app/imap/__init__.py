"""IMAP4rev1 and POP3 entry points: the protocol layer over app/services/imap (docs/imap.md)."""
