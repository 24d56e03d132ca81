import pytest

from identity.features import Features, blocking_keys, from_payload, phonetic


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


def test_packed_features_come_back_equal():
    f = from_payload({"traits": {"full_name": "Maria Eduarda da Silva", "birth_date": "1990-05-17",
                                 "postal_code": "01310-100", "city": "São Paulo", "street": "Rua Augusta",
                                 "street_number": "10"},
                      "identifiers": [{"kind": "email", "value": "duda1990@x.com", "valid": True},
                                      {"kind": "phone", "value": "+5511987654321", "valid": True},
                                      {"kind": "cpf", "value": "52998224752", "valid": False},
                                      {"kind": "custom:loyalty", "value": "AB123", "valid": True, "match": "fuzzy"}]})
    assert f.emails and f.phones and f.cpfs_unverified and f.fuzzy_ids and f.informative_users
    assert Features.unpack(f.pack()) == f
    assert len(f.pack()) < 400


def test_the_feature_cache_is_bounded_and_versioned():
    from identity.resolve import FeatureCache

    cache = FeatureCache(2)
    a, b, c = (from_payload({"traits": {"full_name": name}}) for name in ("Ana Lima", "Bia Souza", "Caio Reis"))
    cache.put("r1", 1, a)
    cache.put("r2", 1, b)
    assert cache.get("r1", 1) == a and cache.get("r1", 2) is None  # another version is another payload
    cache.put("r1", 2, c)  # a new version replaces the old and counts as stored now
    cache.put("r3", 1, a)
    assert len(cache) == 2 and cache.get("r2", 1) is None  # the oldest stored went out
    assert cache.get("r1", 2) == c and cache.get("r3", 1) == a
    off = FeatureCache(0)
    assert off.put("r1", 1, a) == a and len(off) == 0 and off.get("r1", 1) is None


def test_the_most_recently_used_features_stay_objects():
    from identity.resolve import FeatureCache

    cache = FeatureCache(10)  # a fifth of it as objects: two
    people = [from_payload({"traits": {"full_name": f"Pessoa {name} Lima"}}) for name in "abcde"]
    for i, f in enumerate(people):
        cache.put(f"r{i}", 1, f)
    assert cache.get("r4", 1) is people[4]  # still an object: no unpacking
    first = cache.get("r0", 1)
    assert first == people[0] and first is not people[0]  # unpacked from the packed tier
    assert cache.get("r0", 1) is first  # and kept as an object from then on
    cache.put("r0", 2, people[1])
    assert cache.get("r0", 1) is None and cache.get("r0", 2) is people[1]  # never an old version
