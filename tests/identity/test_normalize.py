from datetime import date, datetime

import pytest

from identity.normalize import (
    NameForms,
    Normalized,
    NormalizationError,
    name_tokens,
    normalize_cnpj,
    normalize_cpf,
    normalize_document,
    normalize_email,
    normalize_name,
    normalize_phone,
    normalize_postal_code,
    parse_date,
)

VALID_CPF = "39053344705"
VALID_CNPJ = "11222333000181"


# --- CPF -------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["390.533.447-05", "39053344705", " 390 533 447 05 ", 39053344705, 39053344705.0])
def test_cpf_accepts_punctuated_plain_and_numeric(raw):
    assert normalize_cpf(raw) == Normalized(VALID_CPF, True)


def test_cpf_wrong_check_digit_is_kept_but_invalid():
    assert normalize_cpf("390.533.447-06") == Normalized("39053344706", False)


@pytest.mark.parametrize("digit", "0123456789")
def test_cpf_repeated_digits_are_invalid(digit):
    assert normalize_cpf(digit * 11) == Normalized(digit * 11, False)


@pytest.mark.parametrize("raw", [1234567890, "1234567890", "123456790"])
def test_cpf_leading_zeros_restored_for_9_or_10_digits(raw):
    result = normalize_cpf(raw)
    assert len(result.value) == 11 and result.value.startswith("0")


def test_cpf_padded_value_validates():
    # 012.345.678-90 loses its zero in Excel
    assert normalize_cpf(1234567890) == Normalized("01234567890", True)


@pytest.mark.parametrize("raw, value", [("12345678", "12345678"), ("390533447051", "390533447051"), ("390.533.447-0X", "3905334470X")])
def test_cpf_wrong_length_or_letters_invalid(raw, value):
    assert normalize_cpf(raw) == Normalized(value, False)


@pytest.mark.parametrize("raw", [None, "", "   ", " .-/ "])
def test_cpf_blank_is_none(raw):
    assert normalize_cpf(raw) is None


# --- CNPJ ------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["11.222.333/0001-81", "11222333000181", 11222333000181])
def test_cnpj_formats(raw):
    assert normalize_cnpj(raw) == Normalized(VALID_CNPJ, True)


def test_cnpj_wrong_check_digit_invalid():
    assert normalize_cnpj("11.222.333/0001-82") == Normalized("11222333000182", False)


def test_cnpj_repeated_digits_invalid():
    assert normalize_cnpj("11111111111111").valid is False


@pytest.mark.parametrize("raw", ["000000000191", "0000000000191"])
def test_cnpj_leading_zeros_restored_for_12_or_13_digits(raw):
    # Banco do Brasil, 00.000.000/0001-91, after a spreadsheet drops zeros
    assert normalize_cnpj(raw) == Normalized("00000000000191", True)


def test_cnpj_too_short_not_padded():
    assert normalize_cnpj(191) == Normalized("191", False)


def test_cnpj_alphanumeric_format_from_2026():
    assert normalize_cnpj("12.abc.345/01de-35") == Normalized("12ABC34501DE35", True)


def test_cnpj_blank_is_none():
    assert normalize_cnpj("  ") is None


# --- document auto-detect ----------------------------------------------------

@pytest.mark.parametrize(
    "raw, kind, expected",
    [
        ("390.533.447-05", "cpf", Normalized(VALID_CPF, True)),
        (1234567890, "cpf", Normalized("01234567890", True)),
        ("11.222.333/0001-81", "cnpj", Normalized(VALID_CNPJ, True)),
        ("123456789012", "document", Normalized("123456789012", False)),
        ("1234567890123456", "document", Normalized("1234567890123456", False)),
    ],
)
def test_document_auto_detect(raw, kind, expected):
    assert normalize_document(raw) == (kind, expected)


def test_document_blank_is_none():
    assert normalize_document(None) is None


# --- phone -----------------------------------------------------------------

@pytest.mark.parametrize(
    "raw",
    [
        "+55 (11) 98765-4321",
        "+5511987654321",
        "11987654321",
        11987654321,
        "(11) 98765-4321",
        "55 11 98765-4321",
        "011 98765-4321",
        "0xx11 98765-4321",
        "0 15 11 98765-4321",
        "0 21 11 98765-4321",
    ],
)
def test_phone_brazilian_mobile_variants(raw):
    assert normalize_phone(raw) == Normalized("+5511987654321", True)


@pytest.mark.parametrize("raw", ["(11) 8765-4321", "+55 11 8765-4321", "011 8765-4321", "0 21 11 8765-4321"])
def test_phone_old_eight_digit_mobile_gets_ninth_digit(raw):
    assert normalize_phone(raw) == Normalized("+5511987654321", True)


@pytest.mark.parametrize("raw, expected", [("(11) 3456-7890", "+551134567890"), ("0xx21 2345 6789", "+552123456789")])
def test_phone_landline_kept_as_is(raw, expected):
    assert normalize_phone(raw) == Normalized(expected, True)


@pytest.mark.parametrize("raw, expected", [("+1 650 253 0000", "+16502530000"), ("+44 20 7946 0958", "+442079460958")])
def test_phone_international_kept(raw, expected):
    assert normalize_phone(raw) == Normalized(expected, True)


def test_phone_other_default_region():
    assert normalize_phone("(650) 253-0000", region="US") == Normalized("+16502530000", True)


@pytest.mark.parametrize("raw, digits", [("12", "12"), ("call 98765", "98765"), ("(00) 0000-0000", "0000000000")])
def test_phone_garbage_with_digits_is_invalid(raw, digits):
    assert normalize_phone(raw) == Normalized(digits, False)


@pytest.mark.parametrize("raw", [None, "", "n/a", "---"])
def test_phone_without_digits_is_none(raw):
    assert normalize_phone(raw) is None


# --- e-mail ------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["Jose.Silva@Exemplo.COM.br", "  jose.silva@exemplo.com.br\t", "mailto:JOSE.SILVA@exemplo.com.br", "MAILTO: jose.silva@exemplo.com.br"])
def test_email_lowercased_trimmed(raw):
    assert normalize_email(raw) == Normalized("jose.silva@exemplo.com.br", True)


def test_email_unicode_domain_kept_lowercase():
    assert normalize_email("Maria@ÉXEMPLO.com.br") == Normalized("maria@éxemplo.com.br", True)


@pytest.mark.parametrize("raw, value", [("Jose@", "jose@"), (" no-at-sign.com ", "no-at-sign.com"), ("a b@x.com", "a b@x.com"), ("x@localhost", "x@localhost")])
def test_email_invalid_syntax_kept_unverified(raw, value):
    assert normalize_email(raw) == Normalized(value, False)


@pytest.mark.parametrize("raw", [None, "", "   ", "mailto:"])
def test_email_blank_is_none(raw):
    assert normalize_email(raw) is None


# --- names -------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw, display, match",
    [
        ("José  da silva ", "José da silva", "jose da silva"),
        ("  MARIA   CONCEIÇÃO\tDOS SANTOS", "MARIA CONCEIÇÃO DOS SANTOS", "maria conceicao dos santos"),
        ("Ana D'Ávila-Souza", "Ana D'Ávila-Souza", "ana d avila souza"),
        ("Jose\u0301 Sa\u0303o", "José São", "jose sao"),  # decomposed (NFD) input
        ("João P. Gonçalves Jr.", "João P. Gonçalves Jr.", "joao p goncalves jr"),
    ],
)
def test_name_forms(raw, display, match):
    assert normalize_name(raw) == NameForms(display, match)


@pytest.mark.parametrize("raw", [None, "", "   ", "-- . --"])
def test_name_blank_or_punctuation_only_is_none(raw):
    assert normalize_name(raw) is None


@pytest.mark.parametrize(
    "match_form, tokens",
    [
        ("jose da silva", ["jose", "silva"]),
        ("maria das dores e souza", ["maria", "dores", "souza"]),
        ("pedro de oliveira do carmo dos anjos", ["pedro", "oliveira", "carmo", "anjos"]),
        ("ana d avila", ["ana", "avila"]),
        ("davi dantas", ["davi", "dantas"]),  # particles only dropped as whole tokens
    ],
)
def test_name_tokens_drop_particles(match_form, tokens):
    assert name_tokens(match_form) == tokens


def test_name_tokens_from_normalized_name():
    assert name_tokens(normalize_name("Joana D'Arc de Souza").match) == ["joana", "arc", "souza"]


# --- CEP ---------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["01310-100", "01310100", "1310100", 1310100, " 01.310-100 "])
def test_postal_code_formats(raw):
    assert normalize_postal_code(raw) == Normalized("01310100", True)


@pytest.mark.parametrize("raw, value", [("00000-000", "00000000"), ("1310-10", "131010"), ("013101000", "013101000"), ("0131O-100", "0131O100")])
def test_postal_code_invalid(raw, value):
    assert normalize_postal_code(raw) == Normalized(value, False)


def test_postal_code_blank_is_none():
    assert normalize_postal_code(" - ") is None


# --- dates -------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw",
    ["1990-05-17", "17/05/1990", "17-05-1990", "17.05.1990", "19900517", " 17/05/1990 ", date(1990, 5, 17), datetime(1990, 5, 17, 13, 45)],
)
def test_parse_date_formats(raw):
    assert parse_date(raw) == date(1990, 5, 17)


def test_parse_date_is_day_first():
    assert parse_date("03/04/2001") == date(2001, 4, 3)


def test_parse_date_explicit_format():
    assert parse_date("05/17/1990", fmt="%m/%d/%Y") == date(1990, 5, 17)


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_parse_date_blank_is_none(raw):
    assert parse_date(raw) is None


@pytest.mark.parametrize("raw", ["31/02/1990", "05/17/1990", "17/05/90", "1990-13-01", "19901301", "amanhã", "17 de maio"])
def test_parse_date_garbage_raises(raw):
    with pytest.raises(NormalizationError, match="unrecognized date format"):
        parse_date(raw)


# --- no PII in errors ----------------------------------------------------------

SECRET = "17/05/1990 joao@x.com"


@pytest.mark.parametrize(
    "call",
    [
        lambda: parse_date(SECRET),
        lambda: parse_date(SECRET, fmt="%Y-%m-%d"),
        lambda: parse_date("1990-02-30"),
        lambda: parse_date(["390.533.447-05"]),
        lambda: normalize_cpf(["390.533.447-05"]),
        lambda: normalize_document({"cpf": "390.533.447-05"}),
        lambda: normalize_postal_code(b"01310-100"),
    ],
)
def test_errors_do_not_echo_raw_value(call):
    with pytest.raises(NormalizationError) as info:
        call()
    exc = info.value
    text = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__ if not exc.__suppress_context__ else None) if e)
    for fragment in ("17/05/1990", "joao", "390", "01310", "1990-02-30"):
        assert fragment not in text


def test_normalization_error_is_value_error():
    assert issubclass(NormalizationError, ValueError)
