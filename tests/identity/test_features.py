import pytest

from identity.features import blocking_keys, from_payload, phonetic


@pytest.mark.parametrize("a,b", [("souza", "sousa"), ("thiago", "tiago"), ("luiz", "luis"), ("rafaella", "rafaela"),
                                 ("cecilia", "sesilia"), ("guilherme", "gilherme"), ("helena", "elena"),
                                 ("queiroz", "queiros"), ("william", "wiliam"), ("sylva", "silva")])
def test_portuguese_spelling_variants_sound_alike(a, b):
    assert phonetic(a) == phonetic(b)


@pytest.mark.parametrize("a,b", [("maria", "mario"), ("souza", "silva"), ("ana", "ane")])
def test_different_names_sound_different(a, b):
    assert phonetic(a) != phonetic(b)


def payload(**traits):
    return {"traits": traits, "identifiers": []}


def test_particles_and_accents_do_not_count():
    f = from_payload(payload(full_name="José da Silva dos Santos"))
    assert f.given == "jose" and f.surnames == ("silva", "santos")


def test_nickname_resolves_to_formal_name():
    assert from_payload(payload(first_name="Zé", last_name="Lima")).given == "jose"


def test_first_and_last_name_traits_win_over_full_name():
    f = from_payload(payload(first_name="Maria Eduarda", last_name="Costa", full_name="x y"))
    assert f.given == "maria" and f.given_all == "maria eduarda" and f.surnames == ("costa",)


def test_swapped_names_share_the_name_block():
    a = dict(blocking_keys(from_payload(payload(first_name="Souza", last_name="Ana"))))
    b = dict(blocking_keys(from_payload(payload(first_name="Ana", last_name="Souza"))))
    assert a["nm"] == b["nm"]


def test_cpf_with_wrong_check_digit_meets_its_owner():
    good = {"traits": {}, "identifiers": [{"kind": "cpf", "value": "52998224725", "valid": True}]}
    typo = {"traits": {}, "identifiers": [{"kind": "cpf", "value": "52998224724", "valid": False}]}
    assert dict(blocking_keys(from_payload(good)))["cpf9"] == dict(blocking_keys(from_payload(typo)))["cpf9"]


def test_birth_date_and_cep_keys():
    pairs = blocking_keys(from_payload(payload(first_name="Ana", last_name="Lima", birth_date="1990-05-17",
                                               postal_code="01310100", street_number="100")))
    keys = dict(pairs)
    # The date with each name's initial, one kind: swapped names still meet.
    assert sorted(v for k, v in pairs if k == "di") == ["19900517|a", "19900517|l"]
    swapped = blocking_keys(from_payload(payload(first_name="Lima", last_name="Ana", birth_date="1990-05-17")))
    assert sorted(v for k, v in swapped if k == "di") == ["19900517|a", "19900517|l"]
    assert keys["ad"] == "01310100|100"
    assert sorted(v for k, v in pairs if k == "ny") == sorted([f"{phonetic('lima')}|1990|a", f"{phonetic('ana')}|1990|l"])
    assert sorted(v for k, v in swapped if k == "ny") == sorted(v for k, v in pairs if k == "ny")


def test_the_name_only_key_has_its_own_smaller_cap():
    from cdp.config import Settings

    settings = Settings.from_env({"CDP_INSTANCE_PATH": "/tmp/x", "CDP_MAX_NAME_BLOCK": "5", "CDP_MAX_BLOCK": "50"})
    assert settings.block_cap("bk:nm") == 5
    assert settings.block_cap("bk:dob") == 50 and settings.block_cap("email") == 50



def test_the_feature_cache_is_bounded_and_versioned():
    from identity.resolve import FeatureCache

    cache = FeatureCache(2)
    a, b, c = (from_payload({"traits": {"full_name": name}}) for name in ("Ana Lima", "Bia Souza", "Caio Reis"))
    cache.put("r1", 1, a)
    cache.put("r2", 1, b)
    assert cache.get("r1", 1) is a and cache.get("r1", 2) is None  # another version is another payload
    cache.put("r3", 1, c)
    assert len(cache) == 2 and cache.get("r1", 1) is None  # the oldest stored went out
    assert cache.get("r2", 1) is b and cache.get("r3", 1) is c
    off = FeatureCache(0)
    assert off.put("r1", 1, a) is a and len(off) == 0 and off.get("r1", 1) is None
