"""Canonical forms for identity attributes (documents, contacts, names, dates).

Outputs feed blind indexes and matching, so the same person must always
normalize to the same string.  Errors never echo the raw value (no PII in logs).
"""
from __future__ import annotations

import re
from functools import lru_cache, wraps
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from stdnum.br import cnpj as _cnpj
from stdnum.br import cpf as _cpf


@dataclass(frozen=True)
class Normalized:
    value: str  # canonical form used for blind indexes / matching
    valid: bool  # False => unverified attribute, never a strong identifier


@dataclass(frozen=True)
class NameForms:
    display: str  # whitespace collapsed; accents and case kept
    match: str  # accent-free, casefolded, no punctuation, single spaces


def _memo(fn):
    """Cache a pure normalizer: the same people recur across records and
    sources. Unhashable input (a list where a string belongs) skips the cache
    and gets the function's own clear error."""
    cached = lru_cache(maxsize=65_536)(fn)

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            hash(args)
        except TypeError:
            return fn(*args, **kwargs)
        return cached(*args, **kwargs)

    return wrapper


class NormalizationError(ValueError):
    """Raised with a message that describes the problem, never the value."""


_NAME_PARTICLES = frozenset({"da", "de", "do", "das", "dos", "e", "d"})  # "d" is d' after punctuation removal
_DATE_FORMATS = ("%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y")


def _clean(raw: object, what: str) -> str | None:
    """Text form with separators removed; None for blank."""
    if raw is None:
        return None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # spreadsheets/pandas hand over 12345678909.0
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise NormalizationError(f"unsupported {what} type: {type(raw).__name__}")
    cleaned = re.sub(r"[\W_]", "", str(raw)).upper()
    return cleaned or None


def _is_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()  # str.isdigit alone accepts "²", "٣"...


def _tax_id(raw: object, length: int, module, what: str, alnum: bool = False) -> Normalized | None:
    s = _clean(raw, what)
    if s is None:
        return None
    if _is_digits(s) and length - 2 <= len(s) < length:
        s = s.zfill(length)  # Excel drops up to two leading zeros
    ok_chars = (s.isascii() and s.isalnum()) if alnum else _is_digits(s)
    # stdnum accepts 111.111.111-11 etc.; such sequences are placeholders, not people
    valid = ok_chars and len(s) == length and len(set(s)) > 1 and module.is_valid(s)
    return Normalized(s, valid)


@_memo
def normalize_cpf(raw: str | int | None) -> Normalized | None:
    return _tax_id(raw, 11, _cpf, "cpf")


@_memo
def normalize_cnpj(raw: str | int | None) -> Normalized | None:
    # Letters allowed: alphanumeric CNPJs are issued from July 2026 (stdnum supports them).
    return _tax_id(raw, 14, _cnpj, "cnpj", alnum=True)


def normalize_document(raw: str | int | None) -> tuple[str, Normalized] | None:
    s = _clean(raw, "document")
    if s is None:
        return None
    if len(s) <= 11:
        return "cpf", normalize_cpf(s)
    if len(s) == 14:
        return "cnpj", normalize_cnpj(s)
    return "document", Normalized(s, False)


@_memo
def normalize_email(raw: str | None) -> Normalized | None:
    if raw is None:
        return None
    s = raw.strip()
    if s[:7].lower() == "mailto:":
        s = s[7:].strip()
    if not s:
        return None
    try:
        s = validate_email(s, check_deliverability=False).normalized
        valid = True
    except EmailNotValidError:
        valid = False
    # Product decision: local parts are treated case-insensitively, like every major provider.
    return Normalized(s.lower(), valid)


@_memo
def normalize_phone(raw: str | int | None, region: str = "BR") -> Normalized | None:
    if raw is None:
        return None
    text = str(raw)
    digits = re.sub(r"\D", "", text)
    if not digits:
        return None
    try:
        # phonenumbers already strips "+55", trunk "0", "0xx" and carrier codes ("0 15 11 ...").
        num = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return Normalized(digits, False)
    national = str(num.national_number)
    if num.country_code == 55 and len(national) == 10 and national[2] in "6789":
        # Pre-2016 8-digit mobile: every Brazilian mobile gained a leading 9.
        num = phonenumbers.parse(f"+55{national[:2]}9{national[2:]}")
    if not phonenumbers.is_valid_number(num):
        return Normalized(digits, False)
    return Normalized(phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164), True)


@_memo
def normalize_name(raw: str | None) -> NameForms | None:
    if raw is None:
        return None
    display = " ".join(unicodedata.normalize("NFC", raw).split())  # NFC: macOS input arrives decomposed
    folded = unicodedata.normalize("NFKD", display.casefold())
    # Punctuation/symbols become spaces ("Maria-Clara" -> "maria clara", "d'Ávila" -> "d avila");
    # accents (combining marks) and invisible controls such as zero-width spaces are dropped.
    spaced = "".join(
        " " if unicodedata.category(c)[0] in "PS" else c
        for c in folded
        if not unicodedata.combining(c) and unicodedata.category(c)[0] != "C"
    )
    match = " ".join(spaced.split())
    if not match:
        return None  # nothing matchable; an empty match key would link unrelated records
    return NameForms(display, match)


def name_tokens(match_form: str) -> list[str]:
    return [t for t in match_form.split() if t not in _NAME_PARTICLES]


@_memo
def normalize_postal_code(raw: str | int | None) -> Normalized | None:
    s = _clean(raw, "postal code")
    if s is None:
        return None
    if _is_digits(s) and len(s) == 7:
        s = s.zfill(8)  # CEPs start at 01000-000, so a spreadsheet can drop only one zero
    return Normalized(s, _is_digits(s) and len(s) == 8 and s != "00000000")


def parse_date(raw: str | date | datetime | None, fmt: str | None = None) -> date | None:
    if isinstance(raw, datetime):  # check first: datetime is a date subclass
        return raw.date()
    if isinstance(raw, date):
        return raw
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise NormalizationError(f"unsupported date type: {type(raw).__name__}")
    s = raw.strip()
    if not s:
        return None
    # `from None`: strptime's own message quotes the input, keep it out of tracebacks.
    if fmt is not None:
        try:
            return datetime.strptime(s, fmt).date()
        except ValueError:
            raise NormalizationError("date does not match the given format") from None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{8}", s):  # ISO, extended or basic
        try:
            return date.fromisoformat(s)
        except ValueError:
            raise NormalizationError("unrecognized date format") from None
    for f in _DATE_FORMATS:
        try:
            return datetime.strptime(s, f).date()
        except ValueError:
            pass
    raise NormalizationError("unrecognized date format")
