"""IMAP mailbox names ↔ our folders and labels (CONTRACT.md "Mail clients: IMAP").

Folders have fixed English names with SPECIAL-USE attributes (RFC 6154); every user label is
one more mailbox of its own name. A label whose name collides with a folder's IMAP name
(``Junk`` is a legal label: only the folder *enum* names are reserved) is listed under
``Labels/``. Names on the wire are modified UTF-7 (RFC 3501 §5.1.3).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from app.domain.errors import ValidationError
from app.domain.folders import Folder, check_label

DELIMITER = "/"
LABEL_PREFIX = "Labels/"

# (IMAP name, folder, SPECIAL-USE attribute)
FOLDER_NAMES: tuple[tuple[str, Folder, str | None], ...] = (
    ("INBOX", Folder.INBOX, None),
    ("Sent", Folder.SENT, "\\Sent"),
    ("Drafts", Folder.DRAFTS, "\\Drafts"),
    ("Trash", Folder.TRASH, "\\Trash"),
    ("Junk", Folder.SPAM, "\\Junk"),
    ("Archive", Folder.ARCHIVE, "\\Archive"),
)
_BY_NAME = {name.upper(): folder for name, folder, _ in FOLDER_NAMES}
_NAME_OF = {folder: name for name, folder, _ in FOLDER_NAMES}
SPECIAL_USE = {folder: attr for _, folder, attr in FOLDER_NAMES}


@dataclass(frozen=True)
class MailboxRef:
    """One IMAP mailbox: a folder or a label."""

    kind: str  # "folder" | "label"
    name: str  # Folder value or label text

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def is_folder(self) -> bool:
        return self.kind == "folder"

    @property
    def folder(self) -> Folder | None:
        return Folder(self.name) if self.kind == "folder" else None

    def imap_name(self) -> str:
        if self.kind == "folder":
            return _NAME_OF[Folder(self.name)]
        if self.name.upper() in _BY_NAME or self.name.startswith(LABEL_PREFIX):
            return LABEL_PREFIX + self.name
        return self.name

    def view_query(self) -> dict[str, str]:
        """The mailbox_items filter (besides user_id) of the views in this mailbox."""
        return {"folder": self.name} if self.kind == "folder" else {"labels": self.name}


def folder_ref(folder: Folder) -> MailboxRef:
    return MailboxRef("folder", folder.value)


def resolve(name: str) -> MailboxRef:
    """The mailbox an IMAP name (already decoded from modified UTF-7) denotes.

    Folder names match case-insensitively (INBOX must; the others do so that ``sent`` is not a
    label). Raises ``ValidationError`` for a name that is neither a folder nor a valid label.
    """
    folder = _BY_NAME.get(name.upper())
    if folder is not None:
        return folder_ref(folder)
    if name.startswith(LABEL_PREFIX):
        name = name[len(LABEL_PREFIX) :]
    return MailboxRef("label", check_label(name, "mailbox"))


def encode_mutf7(text: str) -> str:
    """RFC 3501 §5.1.3 modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i)
        if end < 0:
            raise ValidationError.on("mailbox", "invalid modified UTF-7 in mailbox name")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
            except ValueError:
                raise ValidationError.on(
                    "mailbox", "invalid modified UTF-7 in mailbox name"
                ) from None
        i = end + 1
    return "".join(out)
