"""Matching features of one record: the normalized values the probabilistic
model compares and the blocking keys that find candidates.

Features are derived from the stored (decrypted) payload, never persisted in
clear; blocking keys are stored only as blind indexes.
"""
from __future__ import annotations

import marshal
import re
from dataclasses import dataclass, field
from functools import lru_cache

from cdp import crypto
from identity.normalize import name_tokens, normalize_name

# Common Brazilian nicknames → formal given name (a small table; extend freely).
NICKNAMES = {
    "ze": "jose", "zezinho": "jose", "chico": "francisco", "xico": "francisco", "paco": "francisco",
    "bia": "beatriz", "duda": "eduarda", "dudu": "eduardo", "gabi": "gabriela", "juju": "julia",
    "tonho": "antonio", "toninho": "antonio", "beto": "roberto", "betinho": "roberto", "guto": "augusto",
    "nando": "fernando", "fer": "fernanda", "lu": "luciana", "manu": "manuela", "rafa": "rafael",
    "tati": "tatiana", "dani": "daniela", "carol": "carolina", "pedrinho": "pedro", "joaozinho": "joao",
    "zeca": "jose", "quinzinho": "joaquim", "tiao": "sebastiao", "chica": "francisca", "nanda": "fernanda",
    "lari": "larissa", "mari": "mariana", "leo": "leonardo", "gui": "guilherme", "vini": "vinicius",
    "cacau": "claudia", "tete": "teresa", "dri": "adriana", "fabi": "fabiana", "bel": "isabel",
}

_PHONETIC_RULES = [
    # Portuguese spelling variants that sound alike (after accents are removed).
    (r"ph", "f"), (r"th", "t"), (r"ch", "x"), (r"sh", "x"), (r"lh", "li"), (r"nh", "ni"),
    (r"sc([ei])", r"s\1"), (r"ç", "s"), (r"c([ei])", r"s\1"), (r"q[u]?", "k"), (r"c", "k"),
    (r"gu([ei])", r"g\1"), (r"g([ei])", r"j\1"), (r"y", "i"), (r"w", "v"), (r"z", "s"),
    (r"x", "s"), (r"ss", "s"), (r"rr", "r"), (r"ll", "l"), (r"mn", "n"), (r"n$", "m"),
    (r"^h", ""), (r"([aeiou])h", r"\1"), (r"ao$", "am"), (r"l$", "u"),
]


@lru_cache(maxsize=100_000)
def phonetic(token: str) -> str:
    """A Portuguese phonetic key (BuscaBR-style rules; no maintained library
    exists for Portuguese): 'Souza' = 'Sousa', 'Thiago' = 'Tiago',
    'Luiz' = 'Luis', 'Rafaella' = 'Rafaela'. Repeated letters are collapsed."""
    if not token:
        return ""
    s = token.lower()
    for pattern, repl in _PHONETIC_RULES:
        s = re.sub(pattern, repl, s)
    return re.sub(r"(.)\1+", r"\1", s)


@dataclass(slots=True)  # slots: a worker keeps many of these in its cache
class Features:
    given: str | None = None              # first given name, nickname-resolved
    given_all: str | None = None          # every given-name token ("maria eduarda")
    surnames: tuple[str, ...] = ()        # surname tokens, particles dropped
    birth_date: str | None = None         # digits, yyyymmdd
    postal_code: str | None = None
    city: str | None = None
    neighborhood: str | None = None
    street: str | None = None
    street_number: str | None = None
    state: str | None = None
    emails: frozenset = frozenset()
    phones: frozenset = frozenset()
    cpfs: frozenset = frozenset()         # valid
    cpfs_unverified: frozenset = frozenset()
    fuzzy_ids: dict = field(default_factory=dict)  # custom kind -> frozenset of values
    # E-mail user parts (letters and digits only) that say something beyond
    # the record's own name: "carlos.souza" on a record named Carlos Souza
    # repeats the name, and counting it again would double the evidence.
    informative_users: frozenset = frozenset()
    email_users: frozenset = frozenset()  # every e-mail's user part (letters and digits)

    @property
    def surname(self) -> str | None:
        return self.surnames[-1] if self.surnames else None

    def pack(self) -> bytes:
        """Compact bytes (~200), for the encrypted copies kept beside a record's
        payload and in a batch rebuild's scratch table. marshal: the fastest
        to read back of the standard formats; only ever unpacked after the
        ciphertext around it authenticated, so the bytes are ones this code
        (or an earlier release, told apart by FEATURES_VERSION) wrote."""
        return marshal.dumps((FEATURES_VERSION, tuple(getattr(self, name) for name in self.__slots__)), 4)

    @classmethod
    def unpack(cls, data: bytes) -> "Features | None":
        """None for a copy an earlier release wrote: derive it from the payload again."""
        version, values = marshal.loads(data)
        if version != FEATURES_VERSION or len(values) != len(cls.__slots__):
            return None
        return cls(*values)


# Bump when from_payload's output changes: stored copies of older features
# are then derived again from their payloads (bump KEYS_VERSION with it, so
# the key refresh that starts `cdp identity rebuild` also rewrites the copies).
FEATURES_VERSION = 1


def seal(dek: bytes, record_id: str, f: Features) -> bytes:
    """A record's features, encrypted with its own data key (erasing the
    record's key erases the copy too), stored beside its payload: a worker
    whose cache lacks the record reads these ~200 bytes instead of decrypting
    and normalizing the whole payload again."""
    return crypto.encrypt_field(dek, f.pack(), _copy_aad(record_id))


def unseal(dek: bytes, record_id: str, features_ct: bytes | None) -> Features | None:
    """None where there is no copy (stored before copies existed) or an earlier release wrote it."""
    if features_ct is None:
        return None
    return Features.unpack(crypto.decrypt_field(dek, features_ct, _copy_aad(record_id)))


def _copy_aad(record_id: str) -> bytes:
    return crypto.field_aad("source_records", record_id, "features")


@lru_cache(maxsize=100_000)
def _match(text: str | None) -> str | None:
    forms = normalize_name(text) if text else None
    return forms.match if forms else None


def from_payload(payload: dict) -> Features:
    traits = payload.get("traits", {})
    given_tokens: list[str] = []
    surname_tokens: list[str] = []
    first, last = _match(traits.get("first_name")), _match(traits.get("last_name"))
    if first or last:
        given_tokens = name_tokens(first or "")
        surname_tokens = name_tokens(last or "")
    full = _match(traits.get("full_name"))
    if full and not (given_tokens and surname_tokens):
        tokens = name_tokens(full)
        if tokens:
            given_tokens = given_tokens or tokens[:1]
            surname_tokens = surname_tokens or tokens[1:]
    given = NICKNAMES.get(given_tokens[0], given_tokens[0]) if given_tokens else None

    birth = traits.get("birth_date") or traits.get("birth_date_unverified")
    digits = re.sub(r"\D", "", birth) if birth else ""
    ids = payload.get("identifiers", [])

    def values(kind: str, valid: bool | None = None) -> frozenset:
        return _frozen(i["value"] for i in ids if i["kind"] == kind and (valid is None or i["valid"] == valid))

    fuzzy: dict[str, frozenset] = {}
    for ident in ids:
        if ident["kind"].startswith("custom:") and ident.get("match") == "fuzzy":
            fuzzy.setdefault(ident["kind"][7:], set()).add(ident["value"])
    postal = re.sub(r"\D", "", traits.get("postal_code", "")) or None
    emails = values("email", True)
    pieces = set(given_tokens) | set(surname_tokens) | _PARTICLES
    pieces |= {t[0] for t in given_tokens + surname_tokens}
    users = _frozen(email_user(e) for e in emails)
    informative = _frozen(u for u in users
                            if not (given_tokens or surname_tokens) or not _spelled_from(re.sub(r"\d", "", u), pieces))
    return Features(
        given=given,
        given_all=" ".join(given_tokens) or None,
        surnames=tuple(surname_tokens),
        birth_date=digits or None,
        postal_code=postal,
        city=_match(traits.get("city")),
        neighborhood=_match(traits.get("neighborhood")),
        street=_match(traits.get("street")),
        street_number=re.sub(r"\s", "", traits.get("street_number", "")).lower() or None,
        state=(traits.get("state") or "").lower() or None,
        emails=emails,
        phones=values("phone", True),
        cpfs=values("cpf", True),
        cpfs_unverified=values("cpf", False),
        fuzzy_ids={k: frozenset(v) for k, v in fuzzy.items()},
        informative_users=informative,
        email_users=users,
    )


_PARTICLES = {"da", "de", "do", "das", "dos", "e"}
_EMPTY: frozenset = frozenset()


def _frozen(items) -> frozenset:
    """A frozenset, the shared empty one when there is nothing (most fields
    of most records: a cached Features costs less memory)."""
    return frozenset(items) or _EMPTY


def email_user(email: str) -> str:
    """The user part of an e-mail, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", email.split("@", 1)[0].lower())


def _spelled_from(text: str, pieces: set[str]) -> bool:
    """Whether text is a concatenation of the pieces (name tokens, their
    initials, particles): "carlossouza", "csouza", "anadasilva"."""
    if not text:
        return True
    reached, todo = {0}, [0]
    while todo:
        i = todo.pop()
        for piece in pieces:
            if piece and text.startswith(piece, i):
                j = i + len(piece)
                if j == len(text):
                    return True
                if j not in reached:
                    reached.add(j)
                    todo.append(j)
    return False


# Version of what `cdp.ingest.identifier_rows` derives from a payload
# (normalization, blocking keys). Bump it with any change to them: stored
# records of an older version are re-derived by `cdp identity rekey` and
# before a rebuild; the current ones are left alone.
KEYS_VERSION = 2


def blocking_keys(f: Features) -> list[tuple[str, str]]:
    """(key name, value) pairs; records sharing one are compared. Several
    keys keep recall high when any one field is wrong or missing."""
    keys: list[tuple[str, str]] = []
    pg = phonetic(f.given) if f.given else ""
    ps = phonetic(f.surname) if f.surname else ""
    if pg and ps:
        # Order-free, so swapped given name and surname still meet.
        keys.append(("nm", "|".join(sorted((pg, ps)))))
    if f.birth_date and len(f.birth_date) == 8:
        # The full date with one name's initial, for each name (one kind, so
        # swapped given name and surname still meet): a bare date is shared
        # by dozens of people in a large base; with an initial it still meets
        # a record whose other name (or both phonetic keys) changed.
        initials = {name[0] for name in (f.given, f.surname) if name}
        for initial in sorted(initials) or [""]:
            keys.append(("di", f"{f.birth_date}|{initial}"))
        # One name's sound + birth year + the other name's initial (one kind,
        # order-free like the date key): meets a typo in the other name or in
        # the day and month. Without the initial, "Silva born in 1985" holds
        # a hundred people in a million records.
        year = f.birth_date[:4]
        if ps:
            keys.append(("ny", f"{ps}|{year}|{(f.given or '')[:1]}"))
        if pg:
            keys.append(("ny", f"{pg}|{year}|{(f.surname or '')[:1]}"))
    if f.postal_code and (f.given or f.surname):
        keys.append(("pc", f"{f.postal_code}|{(f.given or '?')[0]}{(f.surname or '?')[0]}"))
    if f.street_number and f.postal_code:
        keys.append(("ad", f"{f.postal_code}|{f.street_number}"))  # a household: CEP + number
    if f.street_number and f.street:
        keys.append(("st", f"{f.street}|{f.street_number}"))
    for email in f.emails:
        keys.append(("eml", email.split("@", 1)[0].replace(".", "")))
    for phone in f.phones:
        keys.append(("ph8", phone[-8:]))
    for cpf in f.cpfs | f.cpfs_unverified:
        if len(cpf) == 11:
            keys.append(("cpf9", cpf[:9]))  # a wrong check digit still meets its owner
    for kind, vals in f.fuzzy_ids.items():
        for v in vals:
            keys.append((f"id:{kind}", v))
            keys.append((f"idd:{kind}", "".join(sorted(v))))
    return keys
