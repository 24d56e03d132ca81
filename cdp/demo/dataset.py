"""Synthetic Brazilian customer data for ``cdp demo``.

One population of people is written out through five sources, the way a
mid-size Brazilian retailer would have them:

* ``erp_clientes.csv`` (+ ``.yml`` mapping): TOTVS Protheus SA1 export;
* ``loja_pedidos.jsonl``: e-commerce orders (source ``loja_virtual``);
* ``reclame_aqui.jsonl``: public complaints, partial identifiers only;
* ``formularios.jsonl``: web-form leads with consent evidence;
* ``pesquisa_nps.csv`` (+ ``.yml`` mapping): NPS/CSAT/CES survey answers.

Each source renders the same person with the inconsistencies real data has
(formats, typos, stripped accents, missing fields, other e-mails or phones)
plus identity-resolution traps: invalid CPFs and relatives who share an
e-mail or phone but have their own CPF.  ``gabarito.csv`` records which true
person every record belongs to so resolution quality can be measured.

This module only writes files; ingestion is done by the caller.

``people`` is the number of distinct true persons.  About 1 in 11 of them are
leads that only ever filled in a web form (the "10% extra" on top of the
customer base); the others are customers and appear in at least one of the
ERP or the store.
"""
from __future__ import annotations

import csv
import json
import random
import string
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from faker import Faker

BRT = timezone(timedelta(hours=-3))
# Fixed "today": output must not depend on when the demo runs.
REFERENCE = datetime(2026, 11, 1, tzinfo=BRT)
WINDOW_SECONDS = 730 * 24 * 3600

TRUTH_FILE = "gabarito.csv"

# --------------------------------------------------------------------------
# reference tables


@dataclass(frozen=True)
class City:
    name: str
    state: str
    ddd: str
    cep_range: tuple[int, int]  # first five CEP digits
    weight: int


# Real cities with their area code and CEP range, weighted roughly by the
# customer base of a national e-commerce (São Paulo heavy).  The São Paulo
# ranges start with 0, which is what makes "lost leading zero" CEPs possible.
CITIES = (
    City("São Paulo", "SP", "11", (1000, 5999), 30),
    City("Guarulhos", "SP", "11", (7000, 7399), 3),
    City("Campinas", "SP", "19", (13000, 13139), 4),
    City("Santos", "SP", "13", (11000, 11099), 2),
    City("Ribeirão Preto", "SP", "16", (14000, 14114), 2),
    City("Rio de Janeiro", "RJ", "21", (20000, 23799), 14),
    City("Niterói", "RJ", "21", (24000, 24399), 2),
    City("Belo Horizonte", "MG", "31", (30000, 31999), 6),
    City("Curitiba", "PR", "41", (80000, 82999), 5),
    City("Porto Alegre", "RS", "51", (90000, 91999), 4),
    City("Florianópolis", "SC", "48", (88000, 88099), 2),
    City("Salvador", "BA", "71", (40000, 42499), 5),
    City("Recife", "PE", "81", (50000, 52999), 4),
    City("Fortaleza", "CE", "85", (60000, 61599), 4),
    City("Brasília", "DF", "61", (70000, 72799), 5),
    City("Goiânia", "GO", "62", (74000, 74899), 3),
    City("Manaus", "AM", "92", (69000, 69099), 3),
    City("Belém", "PA", "91", (66000, 66999), 2),
    City("Vitória", "ES", "27", (29000, 29099), 1),
    City("Natal", "RN", "84", (59000, 59139), 1),
)
CITY_WEIGHTS = [c.weight for c in CITIES]

STREET_TYPES = {"Rua": 70, "Avenida": 18, "Travessa": 5, "Alameda": 4, "Praça": 3}
CLASSIC_STREETS = (
    "Sete de Setembro", "XV de Novembro", "Tiradentes", "Duque de Caxias",
    "Marechal Deodoro", "Santos Dumont", "Dom Pedro II", "Getúlio Vargas",
    "das Flores", "São João", "Brasil", "Barão do Rio Branco", "Rui Barbosa",
    "Castro Alves", "Machado de Assis", "José Bonifácio", "Princesa Isabel",
    "das Palmeiras", "da Independência", "Osvaldo Cruz",
)
NEIGHBORHOODS = (
    "Centro", "Jardim América", "Vila Nova", "Boa Vista", "Santa Cecília",
    "Bela Vista", "Jardim das Flores", "Vila Operária", "Cidade Nova",
    "São Cristóvão", "Santo Antônio", "Jardim Europa", "Vila Esperança",
    "Alto da Boa Vista", "Parque Industrial", "Jardim Primavera",
    "Vila São José", "Nossa Senhora Aparecida", "Planalto", "Jardim Botânico",
)
# The most common Brazilian surnames; Faker's list under-represents them.
COMMON_SURNAMES = ("da Silva", "dos Santos", "de Oliveira", "de Souza", "Pereira", "Ferreira")

PERSONAL_DOMAINS = {"gmail.com": 55, "hotmail.com": 18, "outlook.com": 6, "yahoo.com.br": 7,
                    "icloud.com": 5, "uol.com.br": 4, "bol.com.br": 3, "terra.com.br": 2}
# Older addresses people registered with years ago and still sit in the ERP.
LEGACY_DOMAINS = {"hotmail.com": 40, "bol.com.br": 20, "uol.com.br": 20, "ig.com.br": 10, "terra.com.br": 10}
WORK_SUFFIXES = ("", "contabil", "engenharia", "advocacia", "consultoria", "tech")

# (sku, name, price in cents)
CATALOG = (
    ("ELE-0001", "Fone de ouvido Bluetooth", 19990), ("ELE-0002", "Carregador USB-C 20W", 8990),
    ("ELE-0003", "Smartwatch Fit", 34990), ("ELE-0004", "Caixa de som portátil", 24990),
    ("CAS-0001", "Jogo de panelas antiaderente 5 peças", 42990), ("CAS-0002", "Liquidificador 900W", 18990),
    ("CAS-0003", "Cafeteira elétrica", 15990), ("CAS-0004", "Jogo de toalhas 4 peças", 11990),
    ("CAS-0005", "Edredom casal", 22990), ("CAS-0006", "Air fryer 4L", 39990),
    ("MOD-0001", "Camiseta básica algodão", 4990), ("MOD-0002", "Tênis de corrida", 29990),
    ("MOD-0003", "Mochila executiva", 17990), ("BEL-0001", "Kit shampoo e condicionador", 6990),
    ("BEL-0002", "Perfume 100ml", 25990), ("LIV-0001", "Livro: Guia prático da LGPD", 7990),
    ("INF-0001", "Mouse sem fio", 7990), ("INF-0002", "Teclado mecânico", 32990),
    ("BRI-0001", "Quebra-cabeça 1000 peças", 5990), ("ESP-0001", "Garrafa térmica 1L", 8990),
)
ORDER_STATUS = {"entregue": 72, "cancelado": 10, "devolvido": 6, "enviado": 7, "pago": 5}

COMPLAINT_TITLES = (
    "Pedido {order} não foi entregue", "Produto chegou com defeito", "Cobrança indevida no cartão",
    "Estorno não realizado após cancelamento", "Atraso na entrega do pedido {order}",
    "Produto diferente do anunciado", "Não consigo cancelar minha compra",
    "Atendimento não responde no chat", "Troca negada sem justificativa",
    "Recebo e-mails mesmo após pedir descadastro",
)
NPS_COMMENTS = {
    "promotor": ("Entrega rápida e produto de qualidade.", "Adorei, vou comprar de novo!",
                 "Atendimento excelente.", "Site fácil de usar e frete barato."),
    "neutro": ("Bom, mas o frete poderia ser mais barato.", "Demorou um pouco para chegar.",
               "Produto ok, embalagem simples."),
    "detrator": ("Pedido atrasou mais de uma semana.", "Tive problema com a troca e ninguém resolveu.",
                 "Cobrança em duplicidade, péssimo.", "Produto veio com defeito."),
}
FORMS = {"newsletter": 50, "contato": 25, "ebook-lgpd": 25}
# Privacy notice in force at a given moment: consent evidence must point at
# the notice the person actually saw.
NOTICE_VERSIONS = ((datetime(2026, 1, 1, tzinfo=BRT), "aviso-2026-01"),
                   (datetime(2025, 6, 1, tzinfo=BRT), "aviso-2025-06"),
                   (datetime(2000, 1, 1, tzinfo=BRT), "aviso-2024-08"))

ERP_MAPPING = """\
# Exportação da tabela SA1 (clientes) do TOTVS Protheus.
source: erp_clientes
format: csv
delimiter: ","
external_id: A1_COD
observed_at: {column: A1_DTCAD, format: "%Y%m%d"}
identifiers:
  cpf: A1_CGC
  email: A1_EMAIL
  phone: {columns: [A1_DDD, A1_TEL], join: ""}
  custom:
    protheus_code: {column: A1_COD, match: exact}
traits:
  full_name: A1_NOME
  birth_date: {column: A1_DTNASC, format: "%Y%m%d"}
  street: A1_END
  complement: A1_COMPLEM
  neighborhood: A1_BAIRRO
  city: A1_MUN
  state: A1_EST
  postal_code: A1_CEP
"""

NPS_MAPPING = """\
# Respostas da pesquisa de satisfação (NPS, CSAT e CES) enviada por e-mail.
source: pesquisa_nps
format: csv
delimiter: ","
external_id: resposta_id
observed_at: {column: data, format: "%d/%m/%Y"}
identifiers:
  email: email
events:
  - type: nps_response
    id: resposta_id
    occurred_at: {column: data, format: "%d/%m/%Y"}
    attributes: {nps: nps, csat: csat, ces: ces, comment: comentario}
"""

ERP_COLUMNS = ("A1_FILIAL", "A1_COD", "A1_LOJA", "A1_PESSOA", "A1_NOME", "A1_CGC", "A1_EMAIL",
               "A1_DDD", "A1_TEL", "A1_END", "A1_COMPLEM", "A1_BAIRRO", "A1_MUN", "A1_EST",
               "A1_CEP", "A1_DTNASC", "A1_DTCAD")
NPS_COLUMNS = ("resposta_id", "email", "data", "nps", "csat", "ces", "comentario")

# --------------------------------------------------------------------------
# model


@dataclass
class Address:
    street: str
    number: str
    complement: str
    neighborhood: str
    city: City
    cep: str  # 8 digits


@dataclass
class Person:
    first_name: str  # may be compound: "Maria Eduarda"
    last_name: str  # may carry particles: "da Silva Santos"
    gender: str
    cpf: str  # 11 digits, valid
    birth_date: date
    email: str  # current personal e-mail
    phone: str  # current mobile, national digits: DDD + 9 digits
    address: Address
    entity_id: str = ""
    alt_email: str | None = None  # older/work e-mail the ERP still holds
    old_phone: str | None = None  # previous mobile the ERP still holds
    landline: str | None = None
    shares: str | None = None  # "email"/"phone" shared with a relative
    lead_only: bool = False

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass
class DemoDataset:
    directory: Path
    files: list[tuple[Path, Path | None]]  # (data file, mapping file or None) in ingestion order
    truth_path: Path  # CSV: source,external_id,entity_id
    people: int
    records: int
    known_pii: dict[str, set[str]]  # names/emails/phones/cpfs as written + canonical forms


class _Ledger:
    """Collects ground truth and every PII string written, as files are produced."""

    def __init__(self) -> None:
        self.truth: list[tuple[str, str, str]] = []
        self.pii: dict[str, set[str]] = {"names": set(), "emails": set(), "phones": set(), "cpfs": set()}

    def record(self, source: str, external_id: str, person: Person) -> None:
        self.truth.append((source, external_id, person.entity_id))

    def name(self, person: Person, *written: str) -> None:
        self.pii["names"].update(w for w in written if w)
        self.pii["names"].add(person.full_name)

    def email(self, *written: str) -> None:
        for w in written:
            if w:
                self.pii["emails"].update((w, w.strip().lower()))

    def phone(self, written: str, *national: str) -> None:
        if written:
            self.pii["phones"].add(written)
            self.pii["phones"].update("+55" + n for n in national)

    def cpf(self, person: Person, written: str) -> None:
        if written:
            self.pii["cpfs"].update((written, _digits(written).zfill(11), person.cpf))


# --------------------------------------------------------------------------
# small helpers


def _pick(rng: random.Random, weighted: dict[str, int]) -> str:
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _slug(text: str) -> str:
    return "".join(c for c in _strip_accents(text).lower() if c.isalnum() or c == " ")


def _unique(pool: set[str], make: Callable[[], str]) -> str:
    while (value := make()) in pool:
        pass
    pool.add(value)
    return value


def _moment(rng: random.Random) -> datetime:
    """A moment within the two years before REFERENCE."""
    return REFERENCE - timedelta(seconds=rng.randrange(1, WINDOW_SECONDS))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _notice_version(moment: datetime) -> str:
    return next(version for since, version in NOTICE_VERSIONS if moment >= since)


def _compact(mapping: dict) -> dict:
    """Drop empty values: the record model omits keys that have no value."""
    return {k: v for k, v in mapping.items() if v not in (None, "", [], {})}


def cpf_is_valid(cpf: str) -> bool:
    """Check digits of an 11-digit CPF (repeated digits are invalid)."""
    if len(cpf) != 11 or not cpf.isdigit() or len(set(cpf)) == 1:
        return False
    for size in (9, 10):
        total = sum(int(d) * w for d, w in zip(cpf[:size], range(size + 1, 1, -1)))
        if (total * 10 % 11) % 10 != int(cpf[size]):
            return False
    return True


def _format_cpf(cpf: str) -> str:
    return f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}"


def _break_cpf(rng: random.Random, cpf: str) -> str:
    """A data-entry typo: one digit wrong.  Retried because a few
    substitutions happen to keep the check digits valid."""
    while True:
        i = rng.randrange(11)
        wrong = cpf[:i] + rng.choice([d for d in string.digits if d != cpf[i]]) + cpf[i + 1:]
        if not cpf_is_valid(wrong):
            return wrong


def _typo(rng: random.Random, name: str) -> str:
    """Swap two adjacent letters or drop one, in a word long enough to stay recognisable."""
    words = name.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 4]
    if not candidates:
        return name
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)  # keep the initial: people rarely get it wrong
    if rng.random() < 0.5 and w[j] != w[j + 1]:
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    else:
        words[i] = w[:j] + w[j + 1:]
    return " ".join(words)


def _fmt_phone(national: str, style: str) -> str:
    ddd, number = national[:2], national[2:]
    head, tail = number[:-4], number[-4:]
    return {
        "intl": f"+55 ({ddd}) {head}-{tail}",
        "pretty": f"({ddd}) {head}-{tail}",
        "tight": f"({ddd}){head}-{tail}",
        "spaced": f"{ddd} {head} {tail}",
        "digits": national,
        "e164": f"+55{national}",
    }[style]


# --------------------------------------------------------------------------
# population


class _Population:
    """Generates people whose CPFs, e-mails and phones are unique, except
    where relatives deliberately share one."""

    def __init__(self, fake: Faker, rng: random.Random) -> None:
        self.fake, self.rng = fake, rng
        self.cpfs: set[str] = set()
        self.emails: set[str] = set()
        self.phones: set[str] = set()

    def person(self) -> Person:
        fake, rng = self.fake, self.rng
        gender = rng.choice("FM")
        first = self._first_name(gender)
        last = self._surname()
        address = self._address()
        birth = REFERENCE.date() - timedelta(days=rng.randint(18 * 365, 80 * 365))
        ddd = address.city.ddd
        p = Person(
            first_name=first, last_name=last, gender=gender,
            cpf=_unique(self.cpfs, lambda: _digits(fake.cpf())),
            birth_date=birth,
            email=self._email(first, last, birth.year, _pick(rng, PERSONAL_DOMAINS)),
            phone=_unique(self.phones, lambda: ddd + self._mobile()),
            address=address,
        )
        if rng.random() < 0.25:
            p.alt_email = self._email(first, last, birth.year, self._other_domain(last))
        if rng.random() < 0.10:
            p.old_phone = _unique(self.phones, lambda: ddd + self._mobile())
        if rng.random() < 0.25:
            p.landline = _unique(self.phones, lambda: ddd + str(rng.randint(2, 5)) + f"{rng.randrange(10**7):07d}")
        return p

    def relative_of(self, anchor: Person) -> Person:
        """Spouse, parent or child: same surname and home, own valid CPF,
        and one contact (e-mail or phone) shared with the anchor."""
        rel = self.person()
        while rel.first_name.split()[0] == anchor.first_name.split()[0]:
            rel.first_name = self._first_name(rel.gender)
        rel.last_name, rel.address = anchor.last_name, anchor.address
        share = self.rng.choice(("email", "phone"))
        if share == "email":
            rel.email = anchor.email
            ddd = anchor.address.city.ddd  # same home town as the anchor
            rel.phone = _unique(self.phones, lambda: ddd + self._mobile())
        else:
            rel.phone = anchor.phone
        for p in (anchor, rel):
            # Sources must write the shared contact, not an older one.
            p.shares, p.alt_email, p.old_phone, p.landline = share, None, None, None
        return rel

    def _first_name(self, gender: str) -> str:
        return self.fake.first_name_female() if gender == "F" else self.fake.first_name_male()

    def _surname(self) -> str:
        rng = self.rng
        first = self.fake.last_name()
        if rng.random() < 0.55:
            second = rng.choice(COMMON_SURNAMES) if rng.random() < 0.3 else self.fake.last_name()
            if second != first:
                return f"{first} {second}"
        return first

    def _address(self) -> Address:
        rng = self.rng
        city = rng.choices(CITIES, weights=CITY_WEIGHTS)[0]
        if rng.random() < 0.5:
            name = rng.choice(CLASSIC_STREETS)
        else:
            name = f"{self.fake.first_name()} {self.fake.last_name()}"
        complement = ""
        if rng.random() < 0.35:
            complement = rng.choice((f"Apto {rng.randint(1, 24)}{rng.randint(1, 4):02d}",
                                     f"Apto {rng.randint(11, 154)} Bloco {rng.choice('ABCD')}",
                                     "Casa 2", "Fundos", f"Sala {rng.randint(101, 1210)}"))
        cep = f"{rng.randint(*city.cep_range):05d}{rng.randrange(1000):03d}"
        return Address(street=f"{_pick(rng, STREET_TYPES)} {name}", number=str(rng.randint(1, 3500)),
                       complement=complement, neighborhood=rng.choice(NEIGHBORHOODS), city=city, cep=cep)

    def _mobile(self) -> str:
        return "9" + str(self.rng.randint(6, 9)) + f"{self.rng.randrange(10**7):07d}"

    def _other_domain(self, last: str) -> str:
        if self.rng.random() < 0.4:  # work address at a small company
            return _slug(last.split()[-1]) + self.rng.choice(WORK_SUFFIXES) + ".com.br"
        return _pick(self.rng, LEGACY_DOMAINS)

    def _email(self, first: str, last: str, year: int, domain: str) -> str:
        rng = self.rng
        f, f_full = _slug(first).split()[0], _slug(first).replace(" ", "")
        surname = _slug(last).split()[-1]
        patterns = (lambda: f"{f}.{surname}", lambda: f"{f_full}{surname}",
                    lambda: f"{f}_{surname}{rng.randint(1, 99)}", lambda: f"{f[0]}{surname}",
                    lambda: f"{f}{year}", lambda: f"{f}.{surname}{rng.randint(1, 999)}")
        local = rng.choice(patterns)()
        email = f"{local}@{domain}"
        while email in self.emails:  # homonyms: add digits like the provider would suggest
            email = f"{local}{rng.randint(1, 9999)}@{domain}"
        self.emails.add(email)
        return email


def _build_people(fake: Faker, rng: random.Random, people: int) -> tuple[list[Person], list[Person]]:
    """Return (customers, form-only leads), entity ids assigned."""
    pop = _Population(fake, rng)
    n_leads = people // 11
    n_customers = people - n_leads
    # ~2% of customers are in a relative pair (at least two pairs for the trap to show up).
    n_pairs = min(max(2, round(n_customers * 0.01)), n_customers // 2)
    customers = [pop.person() for _ in range(n_customers - n_pairs)]
    anchors = rng.sample(customers, n_pairs)
    customers += [pop.relative_of(a) for a in anchors]
    rng.shuffle(customers)  # relatives should not cluster at the end of the id range
    leads = [pop.person() for _ in range(n_leads)]
    for p in leads:
        p.lead_only = True
    for i, p in enumerate(customers + leads, 1):
        p.entity_id = f"P{i:06d}"
    return customers, leads


def _assign_sources(rng: random.Random, customers: list[Person]) -> dict[str, list[Person]]:
    """Which customers each source knows.  Rates follow the brief; relative
    pairs are forced into the ERP and the store so the shared contact is
    visible next to both CPFs."""
    members: dict[str, list[Person]] = {s: [] for s in ("erp", "loja", "reclame", "forms", "nps")}
    for p in customers:
        rolls = [rng.random() for _ in range(5)]
        in_erp = p.shares is not None or rolls[0] < 0.70
        in_loja = p.shares is not None or rolls[1] < 0.60
        if not (in_erp or in_loja):  # every customer bought somewhere
            in_erp, in_loja = rolls[4] < 0.5, rolls[4] >= 0.5
        # Complaints are about the store, so store buyers complain more (~8% overall).
        in_reclame = rolls[2] < (0.11 if in_loja else 0.035)
        flags = {"erp": in_erp, "loja": in_loja, "reclame": in_reclame,
                 "forms": rolls[3] < 0.30, "nps": rng.random() < 0.25}
        for source, flag in flags.items():
            if flag:
                members[source].append(p)
    return members


# --------------------------------------------------------------------------
# source writers


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _erp_cpf(rng: random.Random, p: Person) -> str:
    strict = p.shares is not None  # keep the relative trap readable
    roll = rng.random()
    cpf = p.cpf
    if not strict and roll < 0.05:
        return ""
    if not strict and roll < 0.08:
        cpf = _break_cpf(rng, cpf)
    if rng.random() < 0.4:
        return _format_cpf(cpf)
    if cpf.startswith("0") and rng.random() < 0.5:
        return cpf.lstrip("0")  # went through a spreadsheet as a number
    return cpf


def _erp_phone(rng: random.Random, p: Person) -> tuple[str, str, list[str]]:
    """(A1_DDD, A1_TEL, canonical national forms) — Protheus splits the area
    code, often keeps a trunk 0, and old records predate the ninth digit."""
    if p.shares is None and rng.random() < 0.05:
        return "", "", []
    national = p.old_phone or (p.landline if p.landline and rng.random() < 0.5 else p.phone)
    ddd, number = national[:2], national[2:]
    canonical = [national]
    if len(number) == 9 and rng.random() < 0.15:
        number = number[1:]
        canonical.append(ddd + number)
    if rng.random() < 0.45:
        number = f"{number[:-4]}-{number[-4:]}"
    return ("0" + ddd if rng.random() < 0.2 else ddd), number, canonical


def _erp_cep(rng: random.Random, cep: str) -> str:
    if cep.startswith("0") and rng.random() < 0.4:
        return cep.lstrip("0")  # numeric column in some export
    return f"{cep[:5]}-{cep[5:]}" if rng.random() < 0.4 else cep


def _erp_row(rng: random.Random, p: Person, code: str, registered: datetime, ledger: _Ledger) -> dict:
    # Most rows were keyed into the old system: uppercase, no accents.
    legacy = rng.random() < 0.7
    text = (lambda s: _strip_accents(s).upper()) if legacy else (lambda s: s)
    name = _typo(rng, p.full_name) if rng.random() < 0.05 else p.full_name
    email = p.alt_email or p.email
    if p.shares is None and rng.random() < 0.08:
        email = ""
    elif legacy and rng.random() < 0.5:
        email = email.upper()
    cpf = _erp_cpf(rng, p)
    ddd, tel, canonical = _erp_phone(rng, p)
    a = p.address
    row = {
        "A1_FILIAL": "01", "A1_COD": code, "A1_LOJA": "01", "A1_PESSOA": "F",
        "A1_NOME": text(name), "A1_CGC": cpf, "A1_EMAIL": email, "A1_DDD": ddd, "A1_TEL": tel,
        "A1_END": text(f"{a.street}, {a.number}"), "A1_COMPLEM": text(a.complement),
        "A1_BAIRRO": text(a.neighborhood), "A1_MUN": text(a.city.name), "A1_EST": a.city.state,
        "A1_CEP": _erp_cep(rng, a.cep),
        "A1_DTNASC": "" if rng.random() < 0.12 else p.birth_date.strftime("%Y%m%d"),
        "A1_DTCAD": registered.strftime("%Y%m%d"),
    }
    ledger.name(p, row["A1_NOME"])
    ledger.email(email)
    ledger.cpf(p, cpf)
    ledger.phone(tel, *canonical)
    ledger.phone(ddd + tel if tel else "")
    return row


def _write_erp(path: Path, members: list[Person], rng: random.Random, ledger: _Ledger) -> int:
    # Customer codes are sequential in registration order, as Protheus assigns them.
    dated = sorted(((_moment(rng), p) for p in members), key=lambda t: (t[0], t[1].entity_id))
    rows = []
    for n, (registered, p) in enumerate(dated, 1):
        code = f"{n:06d}"
        rows.append(_erp_row(rng, p, code, registered, ledger))
        ledger.record("erp_clientes", code, p)
    _write_csv(path, ERP_COLUMNS, rows)
    return len(rows)


@dataclass
class _Account:
    """A store account: what the customer typed once at sign-up."""
    person: Person
    number: str
    first_name: str
    last_name: str
    phone: str
    opts_in: bool
    gives_birth_date: bool


def _loja_account(rng: random.Random, p: Person, number: str) -> _Account:
    first, last = p.first_name, p.last_name
    if " " in first and rng.random() < 0.3:
        first = first.split()[0]  # "Maria Eduarda" signs up as "Maria"
    if " " in last and rng.random() < 0.2:
        last = last.split()[-1]
    if rng.random() < 0.05:
        first = _typo(rng, first)
    if rng.random() < 0.08:
        first, last = first.lower(), last.lower()
    phone = _fmt_phone(p.phone, _pick(rng, {"intl": 70, "pretty": 20, "digits": 10}))
    return _Account(p, number, first, last, phone, opts_in=rng.random() < 0.7,
                    gives_birth_date=rng.random() < 0.4)


def _order_items(rng: random.Random) -> tuple[list[dict], int]:
    items, total = [], 0
    for sku, name, price in rng.sample(CATALOG, rng.choices((1, 2, 3, 4), weights=(55, 25, 13, 7))[0]):
        quantity = rng.choices((1, 2, 3), weights=(80, 15, 5))[0]
        items.append({"sku": sku, "name": name, "quantity": quantity, "price": f"{price / 100:.2f}"})
        total += price * quantity
    return items, total


def _loja_record(rng: random.Random, acc: _Account, order_id: str, when: datetime, ledger: _Ledger) -> dict:
    p, a = acc.person, acc.person.address
    items, total = _order_items(rng)
    recent = REFERENCE - when < timedelta(days=7)
    status = rng.choice(("pago", "enviado")) if recent else _pick(rng, ORDER_STATUS)
    email: str | list[str] = p.email
    if p.alt_email and rng.random() < 0.15:
        email = [p.email, p.alt_email]  # account with a secondary address
    identifiers = {"email": email, "cpf": _format_cpf(p.cpf), "phone": acc.phone,
                   "custom": {"customer_number": acc.number}}
    traits = _compact({
        "first_name": acc.first_name, "last_name": acc.last_name,
        "birth_date": p.birth_date.isoformat() if acc.gives_birth_date else None,
        "street": a.street, "street_number": a.number, "complement": a.complement,
        "neighborhood": a.neighborhood, "postal_code": f"{a.cep[:5]}-{a.cep[5:]}",
        "city": a.city.name, "state": a.city.state, "country": "BR",
    })
    record = {
        "source": "loja_virtual", "external_id": order_id, "observed_at": _iso(when),
        "identifiers": identifiers, "traits": traits,
        "events": [{"type": "purchase", "occurred_at": _iso(when), "id": order_id,
                    "amount": f"{total / 100:.2f}", "currency": "BRL",
                    "attributes": {"order_id": order_id, "items": items, "status": status}}],
    }
    if acc.opts_in and rng.random() < 0.85:  # opt-in box ticked at this checkout
        record["consents"] = [{"purpose": "email_marketing", "status": "granted", "legal_basis": "consent",
                               "occurred_at": _iso(when),
                               "evidence": {"channel": "checkout", "notice_version": _notice_version(when)}}]
    ledger.name(p, acc.first_name, acc.last_name)
    ledger.email(*(email if isinstance(email, list) else [email]))
    ledger.cpf(p, identifiers["cpf"])
    ledger.phone(acc.phone, p.phone)
    return record


def _write_loja(path: Path, members: list[Person], rng: random.Random, ledger: _Ledger
                ) -> dict[str, list[tuple[datetime, str]]]:
    """Write one record per order; return each person's (order time, order id)."""
    numbers: set[str] = set()
    orders = []
    for p in members:
        acc = _loja_account(rng, p, _unique(numbers, lambda: str(rng.randint(100000, 999999))))
        count = rng.choices(range(1, 7), weights=(35, 25, 15, 10, 8, 7))[0]
        orders += [(_moment(rng), acc) for _ in range(count)]
    orders.sort(key=lambda o: (o[0], o[1].person.entity_id))
    records, history = [], {}
    for n, (when, acc) in enumerate(orders, 1):
        order_id = f"PED-{n:06d}"
        records.append(_loja_record(rng, acc, order_id, when, ledger))
        ledger.record("loja_virtual", order_id, acc.person)
        history.setdefault(acc.person.entity_id, []).append((when, order_id))
    _write_jsonl(path, records)
    return history


def _complaint_outcome(rng: random.Random) -> dict:
    status = _pick(rng, {"resolvida": 45, "respondida": 35, "nao_respondida": 20})
    rating, again = None, None
    if status == "resolvida" and rng.random() < 0.8:
        rating = rng.randint(6, 10)
        again = rng.random() < 0.85
    elif status == "respondida" and rng.random() < 0.5:
        rating = rng.randint(0, 6)
        again = rng.random() < 0.2
    return {"status": status, "rating": rating, "would_do_business_again": again}


def _reclame_record(rng: random.Random, p: Person, complaint_id: str, when: datetime,
                    order_id: str | None, ledger: _Ledger) -> dict:
    # Reclame Aqui only shares what the consumer made public: a name and
    # either an e-mail or a phone.  Never a CPF.
    name = f"{p.first_name.split()[0]} {p.last_name.split()[-1]}" if rng.random() < 0.4 else p.full_name
    if rng.random() < 0.05:
        name = _typo(rng, name)
    if rng.random() < 0.55:
        email = p.alt_email if p.alt_email and rng.random() < 0.2 else p.email
        identifiers = {"email": email}
        ledger.email(email)
    else:
        identifiers = {"phone": _fmt_phone(p.phone, rng.choice(("pretty", "digits", "spaced")))}
        ledger.phone(identifiers["phone"], p.phone)
    ledger.name(p, name)
    title = rng.choice(COMPLAINT_TITLES)
    title = title.format(order=order_id) if order_id and "{order}" in title else title.replace(" {order}", "")
    return {
        "source": "reclame_aqui", "external_id": complaint_id, "observed_at": _iso(when),
        "identifiers": identifiers,
        "traits": {"full_name": name, "city": p.address.city.name, "state": p.address.city.state},
        "events": [{"type": "complaint", "occurred_at": _iso(when), "id": complaint_id,
                    "attributes": {"title": title, **_complaint_outcome(rng)}}],
    }


def _write_reclame(path: Path, members: list[Person], orders: dict[str, list[tuple[datetime, str]]],
                   rng: random.Random, ledger: _Ledger) -> int:
    complaints = []
    for p in members:
        for _ in range(rng.choices((1, 2), weights=(75, 25))[0]):
            placed = orders.get(p.entity_id)
            if placed:  # complain a few days to weeks after a real order
                when_ordered, order_id = rng.choice(placed)
                when = min(when_ordered + timedelta(days=rng.randint(2, 40), minutes=rng.randrange(1440)),
                           REFERENCE - timedelta(minutes=rng.randint(5, 600)))
            else:
                when, order_id = _moment(rng), None
            complaints.append((when, p, order_id))
    complaints.sort(key=lambda c: (c[0], c[1].entity_id))
    alphabet = string.ascii_letters + string.digits
    ids: set[str] = set()
    records = []
    for when, p, order_id in complaints:
        complaint_id = _unique(ids, lambda: "".join(rng.choices(alphabet, k=16)))
        records.append(_reclame_record(rng, p, complaint_id, when, order_id, ledger))
        ledger.record("reclame_aqui", complaint_id, p)
    _write_jsonl(path, records)
    return len(records)


def _form_record(rng: random.Random, fake: Faker, p: Person, lead_id: str, when: datetime,
                 ledger: _Ledger) -> dict:
    email = p.alt_email if p.alt_email and rng.random() < 0.15 else p.email
    if rng.random() < 0.12:
        email = f"  {email.upper()} "  # typed with caps lock, pasted with spaces
    name = p.first_name.split()[0] if rng.random() < 0.35 else p.full_name
    if rng.random() < 0.05:
        name = _typo(rng, name)
    if rng.random() < 0.10:
        name = name.lower()
    identifiers = {"email": email}
    if rng.random() < 0.45:
        identifiers["phone"] = _fmt_phone(p.phone, rng.choice(("pretty", "tight", "digits", "e164", "spaced")))
        ledger.phone(identifiers["phone"], p.phone)
    form = _pick(rng, FORMS)
    evidence = {"channel": "web_form", "notice_version": _notice_version(when), "ip": fake.ipv4_public()}
    consents = []
    # The contact form's opt-in box is optional; the other forms exist to opt in.
    if form != "contato" or rng.random() < 0.5:
        consents.append({"purpose": "email_marketing", "status": "granted", "legal_basis": "consent",
                         "occurred_at": _iso(when), "evidence": evidence})
        if rng.random() < 0.35:
            consents.append({"purpose": "personalization", "status": "granted", "legal_basis": "consent",
                             "occurred_at": _iso(when), "evidence": dict(evidence)})
    ledger.email(email)
    ledger.name(p, name)
    return _compact({
        "source": "formularios", "external_id": lead_id, "observed_at": _iso(when),
        "identifiers": identifiers,
        "traits": {"first_name": name} if " " not in name else {"full_name": name},
        "events": [{"type": "form_submission", "occurred_at": _iso(when), "id": lead_id,
                    "attributes": {"form": form}}],
        "consents": consents,
    })


def _write_forms(path: Path, members: list[Person], rng: random.Random, fake: Faker, ledger: _Ledger) -> int:
    submissions = [(_moment(rng), p) for p in members for _ in range(rng.choices((1, 2), weights=(80, 20))[0])]
    submissions.sort(key=lambda s: (s[0], s[1].entity_id))
    records = []
    for n, (when, p) in enumerate(submissions, 1):
        lead_id = f"FRM-{n:06d}"
        records.append(_form_record(rng, fake, p, lead_id, when, ledger))
        ledger.record("formularios", lead_id, p)
    _write_jsonl(path, records)
    return len(records)


def _nps_row(rng: random.Random, p: Person, answer_id: str, when: datetime, ledger: _Ledger) -> dict:
    # The survey goes to whichever address the CRM had; often the old one.
    email = p.alt_email if p.alt_email and rng.random() < 0.4 else p.email
    nps = rng.choices(range(11), weights=(2, 1, 1, 2, 2, 4, 5, 9, 16, 22, 24))[0]
    band = "promotor" if nps >= 9 else "neutro" if nps >= 7 else "detrator"
    low, high = {"promotor": (4, 5), "neutro": (3, 4), "detrator": (1, 3)}[band]
    ledger.email(email)
    return {
        "resposta_id": answer_id, "email": email, "data": when.strftime("%d/%m/%Y"), "nps": nps,
        "csat": "" if rng.random() < 0.15 else rng.randint(low, high),
        "ces": "" if rng.random() < 0.25 else rng.randint(low, high),
        "comentario": "" if rng.random() < 0.45 else rng.choice(NPS_COMMENTS[band]),
    }


def _write_nps(path: Path, members: list[Person], rng: random.Random, ledger: _Ledger) -> int:
    answers = [(_moment(rng), p) for p in members for _ in range(rng.choices((1, 2), weights=(80, 20))[0])]
    answers.sort(key=lambda a: (a[0], a[1].entity_id))
    rows = []
    for n, (when, p) in enumerate(answers, 1):
        answer_id = f"NPS-{n:06d}"
        rows.append(_nps_row(rng, p, answer_id, when, ledger))
        ledger.record("pesquisa_nps", answer_id, p)
    _write_csv(path, NPS_COLUMNS, rows)
    return len(rows)


# --------------------------------------------------------------------------
# entry point


def generate(directory: Path, people: int = 1000, seed: int = 42) -> DemoDataset:
    """Write the demo sources into ``directory`` and return what was written."""
    if people < 4:
        raise ValueError("people must be at least 4 (two relative pairs)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    fake = Faker("pt_BR")
    fake.seed_instance(seed)
    ledger = _Ledger()

    customers, leads = _build_people(fake, rng, people)
    members = _assign_sources(rng, customers)

    paths = {name: directory / name for name in (
        "erp_clientes.csv", "erp_clientes.yml", "loja_pedidos.jsonl", "reclame_aqui.jsonl",
        "formularios.jsonl", "pesquisa_nps.csv", "pesquisa_nps.yml", TRUTH_FILE)}
    _write_erp(paths["erp_clientes.csv"], members["erp"], rng, ledger)
    paths["erp_clientes.yml"].write_text(ERP_MAPPING, encoding="utf-8")
    orders = _write_loja(paths["loja_pedidos.jsonl"], members["loja"], rng, ledger)
    _write_reclame(paths["reclame_aqui.jsonl"], members["reclame"], orders, rng, ledger)
    _write_forms(paths["formularios.jsonl"], members["forms"] + leads, rng, fake, ledger)
    _write_nps(paths["pesquisa_nps.csv"], members["nps"], rng, ledger)
    paths["pesquisa_nps.yml"].write_text(NPS_MAPPING, encoding="utf-8")

    with paths[TRUTH_FILE].open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("source", "external_id", "entity_id"))
        writer.writerows(ledger.truth)

    return DemoDataset(
        directory=directory,
        files=[(paths["erp_clientes.csv"], paths["erp_clientes.yml"]),
               (paths["loja_pedidos.jsonl"], None),
               (paths["reclame_aqui.jsonl"], None),
               (paths["formularios.jsonl"], None),
               (paths["pesquisa_nps.csv"], paths["pesquisa_nps.yml"])],
        truth_path=paths[TRUTH_FILE],
        people=len({entity for _, _, entity in ledger.truth}),
        records=len(ledger.truth),
        known_pii=ledger.pii,
    )
