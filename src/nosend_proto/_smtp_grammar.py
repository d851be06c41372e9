"""The SMTP command grammar, written once: RFC 5321 section 4.1.2 and the ESMTP parameters.

Owns: splitting a command line into verb and argument, the MAIL/RCPT path syntax (with the
RFC 6531 section 3.3 UTF-8 extensions), ESMTP parameters (RFC 5321 section 4.1.2,
RFC 1870, RFC 6152, RFC 6531, RFC 3461, RFC 4954 section 5) and xtext (RFC 3461
section 4). Every failure is returned as a ``Reply`` naming the offending part.

Must not: know the conversation's state, or decide policy (which senders are welcome).
"""

from __future__ import annotations

import ipaddress
import re

from nosend_proto.smtp_events import MailParams, OriginalRecipient, RcptParams, Reply

__all__ = [
    "parse_mailbox",
    "parse_params",
    "mail_params",
    "rcpt_params",
    "xtext_decode",
    "xtext_encode",
    "is_domain",
    "quote_for_reply",
]

# RFC 6531 section 3.3: UTF8-non-ascii extends atext, qtextSMTP and sub-domain.
_U = "\u0080-\U0010ffff"
# RFC 5321 4.1.2: Let-dig, Ldh-str, sub-domain, Domain (U-labels admitted, RFC 6531 3.3).
_SUB_DOMAIN = rf"[A-Za-z0-9{_U}](?:[A-Za-z0-9{_U}-]*[A-Za-z0-9{_U}])?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
# RFC 5321 4.1.2 / RFC 5322 3.2.3: Atom = 1*atext; Dot-string = Atom *("." Atom).
_ATOM = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{_U}-]+"
_DOT_STRING = rf"{_ATOM}(?:\.{_ATOM})*"
# Quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP = %d32-33 / %d35-91 / %d93-126;
# quoted-pairSMTP = %d92 %d32-126.
_QUOTED_STRING = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_U}]|\\[\x20-\x7e])*"'
_LOCAL_PART = rf"(?:{_DOT_STRING}|{_QUOTED_STRING})"
# address-literal = "[" ( IPv4 / IPv6 / General-address-literal ) "]"; checked further below.
_ADDRESS_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_MAILBOX = rf"{_LOCAL_PART}@(?:{_DOMAIN}|{_ADDRESS_LITERAL})"
# A-d-l = At-domain *( "," At-domain ); At-domain = "@" Domain. Accepted and ignored
# (RFC 5321 section 4.1.1.3 and appendix C).
_ADL = rf"@{_DOMAIN}(?:,@{_DOMAIN})*"
# Path = "<" [ A-d-l ":" ] Mailbox ">"
_PATH_RE = re.compile(rf"<(?:{_ADL}:)?(?P<mailbox>{_MAILBOX})>")
_DOMAIN_RE = re.compile(_DOMAIN)
_LITERAL_RE = re.compile(_ADDRESS_LITERAL)
# esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); esmtp-value = 1*(%d33-60 /
# %d62-126), plus UTF8-non-ascii under RFC 6531 section 3.3.
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE_RE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_U}]+")
# RFC 3461 section 4: xtext = *( xchar / hexchar ); hexchar = "+" 2(HEXDIG uppercase).
_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_HEXCHAR_RE = re.compile(r"\+([0-9A-F]{2})")
_DIGITS_RE = re.compile(r"[0-9]{1,20}")
# Controls other than HTAB (RFC 3461 allows "graphic and white space" characters).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# RFC 3461 section 4.4: ENVID is at most 100 characters; section 4.2: ORCPT 500.
_ENVID_MAX = 100
_ORCPT_MAX = 500


def quote_for_reply(text: str, limit: int = 64) -> str:
    """Show client input inside a reply: printable ASCII only, bounded in length."""
    shown = "".join(c if " " <= c <= "~" else "?" for c in text[:limit])
    return "'" + shown + ("...'" if len(text) > limit else "'")


def is_domain(text: str) -> bool:
    """True for a Domain or an address-literal (RFC 5321 section 4.1.2 / 4.1.3)."""
    if _DOMAIN_RE.fullmatch(text):
        return True
    return _LITERAL_RE.fullmatch(text) is not None and _literal_ok(text)


def _literal_ok(literal: str) -> bool:
    # RFC 5321 section 4.1.3: IPv4-address-literal, "IPv6:" IPv6-addr, or a
    # General-address-literal (Standardized-tag ":" 1*dcontent).
    inner = literal[1:-1]
    if inner[:5].upper() == "IPV6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    if ":" in inner:
        tag, _, content = inner.partition(":")
        return bool(re.fullmatch(r"[A-Za-z0-9-]*[A-Za-z0-9]", tag)) and bool(content)
    try:
        ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def parse_mailbox(text: str, *, null_ok: bool, postmaster_ok: bool) -> str | None:
    """Parse a path ``<...>``: the mailbox as written (``""`` for ``<>``), or ``None``.

    ``null_ok`` admits ``<>`` (reverse path, RFC 5321 section 4.1.1.2); ``postmaster_ok``
    admits ``<Postmaster>`` without a domain (section 4.1.1.3, case-insensitive). A source
    route is dropped (section 4.1.1.3: ignored).
    """
    if text == "<>":
        return "" if null_ok else None
    if postmaster_ok and text.lower() == "<postmaster>":
        return text[1:-1]
    match = _PATH_RE.fullmatch(text)
    if match is None:
        return None
    mailbox = match.group("mailbox")
    at = mailbox.rindex("@")
    domain = mailbox[at + 1 :]
    if domain.startswith("[") and not _literal_ok(domain):
        return None
    # RFC 5321 section 4.5.3.1.1-2: local part 64 octets, domain 255 octets.
    if len(mailbox[:at].encode()) > 64 or len(domain.encode()) > 255:
        return None
    return mailbox


def split_path_and_params(arg: str) -> tuple[str, str]:
    """Split ``<path> params`` after ``FROM:``/``TO:``, honouring quoted local parts."""
    arg = arg.lstrip(" ")  # lenient: "MAIL FROM: <a@b>" is common
    if not arg.startswith("<"):
        path, _, rest = arg.partition(" ")
        return path, rest
    if '"' not in arg:
        # No quoted local part, so no quoted ">" either: the first ">" ends the path.
        end = arg.find(">")
        if end < 0:
            return arg, ""
        return arg[: end + 1], arg[end + 1 :].lstrip(" ")
    in_quote = False
    escaped = False
    for i, ch in enumerate(arg):
        if escaped:
            escaped = False
        elif ch == "\\" and in_quote:
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == ">" and not in_quote:
            return arg[: i + 1], arg[i + 1 :].lstrip(" ")
    return arg, ""


def parse_params(text: str) -> list[tuple[str, str | None]] | Reply:
    """Split ``esmtp-param *(SP esmtp-param)``; keywords upper-cased, duplicates refused."""
    params: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for item in text.split():
        keyword, eq, value = item.partition("=")
        if not _KEYWORD_RE.fullmatch(keyword) or (eq and not _VALUE_RE.fullmatch(value)):
            return Reply(501, f"Bad parameter syntax {quote_for_reply(item)}", "5.5.4")
        keyword = keyword.upper()
        if keyword in seen:
            return Reply(501, f"Duplicate parameter {quote_for_reply(keyword)}", "5.5.4")
        seen.add(keyword)
        params.append((keyword, value if eq else None))
    return params


def xtext_decode(text: str) -> str | None:
    """Decode RFC 3461 section 4 xtext; ``None`` when malformed or not printable."""
    if not _XTEXT_RE.fullmatch(text):
        return None
    raw = _HEXCHAR_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    # hexchars may encode UTF-8 octets (RFC 6533 for utf-8 addresses): re-decode them.
    try:
        decoded = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        decoded = raw
    # RFC 3461 sections 4.2 and 4.4: ORCPT and ENVID MUST be printable before encoding
    # (they end up in DSN fields); RFC 4954 section 5's AUTH= mailbox cannot hold
    # controls either. A hexchar must not smuggle in CR, LF, NUL or another control.
    if _CONTROL_RE.search(decoded):
        return None
    return decoded


def xtext_encode(text: str) -> str:
    """Encode ``text`` as RFC 3461 section 4 xtext: the inverse of :func:`xtext_decode`.

    The server engine only decodes; this is kept for the client side (ORCPT= and ENVID=
    of DSN, AUTH= of RFC 4954 section 5), and the tests check the round trip.
    """
    out = []
    for byte in text.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def _unsupported(keyword: str, value: str | None) -> Reply:
    # RFC 5321 section 4.1.1.11: 555 for parameters not recognised or not implemented.
    shown = keyword if value is None else f"{keyword}={value}"
    return Reply(555, f"Unsupported parameter {quote_for_reply(shown)}", "5.5.4")


def _bad_value(keyword: str, value: str | None) -> Reply:
    shown = keyword if value is None else f"{keyword}={value}"
    return Reply(501, f"Bad value in {quote_for_reply(shown)}", "5.5.4")


def mail_params(
    params: list[tuple[str, str | None]], offered: frozenset[str], max_size: int
) -> MailParams | Reply:
    """Interpret MAIL FROM parameters against the extensions EHLO offered."""
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    for keyword, value in params:
        if keyword == "SIZE" and "SIZE" in offered:
            # RFC 1870 section 6: size-value = 1*20DIGIT.
            if value is None or not _DIGITS_RE.fullmatch(value):
                return _bad_value(keyword, value)
            size = int(value)
            if max_size and size > max_size:
                # RFC 1870 section 6.2: fixed maximum exceeded, permanent.
                return Reply(552, "Message size exceeds fixed maximum message size", "5.3.4")
        elif keyword == "BODY" and "8BITMIME" in offered:
            # RFC 6152 section 3: BODY=7BIT / BODY=8BITMIME (BINARYMIME is not offered).
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                if value is not None and value.upper() == "BINARYMIME":
                    return _unsupported(keyword, value)
                return _bad_value(keyword, value)
            body = value.upper()
        elif keyword == "SMTPUTF8" and "SMTPUTF8" in offered:
            # RFC 6531 section 3.4: the keyword takes no value.
            if value is not None:
                return _bad_value(keyword, value)
            smtputf8 = True
        elif keyword == "RET" and "DSN" in offered:
            # RFC 3461 section 4.3: RET=FULL / RET=HDRS.
            if value is None or value.upper() not in ("FULL", "HDRS"):
                return _bad_value(keyword, value)
            ret = value.upper()
        elif keyword == "ENVID" and "DSN" in offered:
            decoded = None if value is None else xtext_decode(value)
            if decoded is None or value is None or len(value) > _ENVID_MAX:
                return _bad_value(keyword, value)
            envid = decoded
        elif keyword == "AUTH" and "AUTH" in offered:
            # RFC 4954 section 5: AUTH=<> or AUTH=xtext(mailbox).
            if value == "<>":
                auth = "<>"
            else:
                decoded = None if value is None else xtext_decode(value)
                if decoded is None or not decoded:
                    return _bad_value(keyword, value)
                auth = decoded
        else:
            return _unsupported(keyword, value)
    return MailParams(size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid, auth=auth)


_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def rcpt_params(
    params: list[tuple[str, str | None]], offered: frozenset[str]
) -> RcptParams | Reply:
    """Interpret RCPT TO parameters (RFC 3461 NOTIFY and ORCPT) against what was offered."""
    notify: tuple[str, ...] | None = None
    orcpt: OriginalRecipient | None = None
    for keyword, value in params:
        if keyword == "NOTIFY" and "DSN" in offered:
            # RFC 3461 section 4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ).
            if value is None:
                return _bad_value(keyword, value)
            words = tuple(w.upper() for w in value.split(","))
            if words != ("NEVER",) and (
                not set(words) <= _NOTIFY_WORDS or len(set(words)) != len(words)
            ):
                return _bad_value(keyword, value)
            notify = words
        elif keyword == "ORCPT" and "DSN" in offered:
            # RFC 3461 section 4.2: addr-type ";" xtext, at most 500 characters.
            if value is None or len(value) > _ORCPT_MAX or ";" not in value:
                return _bad_value(keyword, value)
            addr_type, _, encoded = value.partition(";")
            decoded = xtext_decode(encoded)
            if not _KEYWORD_RE.fullmatch(addr_type) or decoded is None or not decoded:
                return _bad_value(keyword, value)
            orcpt = OriginalRecipient(addr_type.lower(), decoded)
        else:
            return _unsupported(keyword, value)
    return RcptParams(notify=notify, orcpt=orcpt)
