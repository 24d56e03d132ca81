import random

from identity.features import Features
from identity.scoring import Model, estimate_m, estimate_u


def person(given, surname, dob, cep=None):
    return Features(given=given, given_all=given, surnames=(surname,), birth_date=dob, postal_code=cep)


def test_agreement_scores_higher_than_disagreement():
    model = Model.default()
    same = model.score(model.vector(person("ana", "lima", "19900517", "01310100"),
                                    person("ana", "lima", "19900517", "01310100")))
    typo = model.score(model.vector(person("ana", "lima", "19900517"), person("anna", "lima", "19900571")))
    other = model.score(model.vector(person("ana", "lima", "19900517"), person("bruno", "costa", "19650101")))
    assert same[1] > typo[1] > other[1]
    assert same[1] > 0.99 and other[1] < 0.01


def test_missing_fields_add_no_evidence():
    model = Model.default()
    vector = model.vector(person("ana", "lima", None), person("ana", "lima", "19900517"))
    assert vector[[c.name for c in model.comparisons].index("birth_date")] is None
    assert "birth_date" not in model.explain(vector)["fields"]


def test_explanation_has_levels_and_weights_but_no_values():
    model = Model.default()
    explained = model.explain(model.vector(person("ana", "lima", "19900517"), person("ana", "lima", "19900517")))
    assert explained["fields"]["given_name"] == {"level": "exact", "weight": explained["fields"]["given_name"]["weight"]}
    assert "ana" not in str(explained) and "1990" not in str(explained)


def test_em_learns_from_unlabelled_pairs():
    rng = random.Random(1)
    model = Model.default()
    people = [person(f"g{i}", f"s{i % 50}", f"19{i % 90:02d}0101") for i in range(400)]
    estimate_u(model, people, pairs=5000)
    matches = [model.vector(p, p) for p in people[:100]]
    non = [model.vector(rng.choice(people), rng.choice(people)) for _ in range(300)]
    model.prior = 0.1
    estimate_m(model, matches + non)
    assert 0.15 < model.prior < 0.4  # about a quarter of the pairs were matches
    assert model.m["given_name"][0] > 0.8


def test_labelled_pairs_count_as_fixed_truth():
    model = Model.default()
    a, b = person("ana", "lima", "19900517"), person("beatriz", "lima", "19900517")
    before = model.m["given_name"][3]
    estimate_m(model, [], labelled=[(model.vector(a, b), True)] * 200)
    assert model.m["given_name"][3] > before  # matches with different given names are now known to happen


def test_em_leaves_the_blocking_fields_alone():
    """A session blocked on birth date must not learn birth date's m: every
    pair agrees on it by construction."""
    rng = random.Random(2)
    model = Model.default()
    people = [person(f"g{i}", f"s{i % 50}", "19800101") for i in range(200)]
    estimate_u(model, people, pairs=2000)
    before = list(model.m["birth_date"])
    vectors = [model.vector(p, p) for p in people[:50]] + [model.vector(rng.choice(people), rng.choice(people))
                                                            for _ in range(200)]
    model.prior = 0.3
    rate = estimate_m(model, vectors, exclude=frozenset({"birth_date"}))
    assert model.m["birth_date"] == before
    assert 0.1 < rate < 0.4  # 50 of 250 pairs are the same person


def test_exact_agreement_u_comes_from_value_frequencies():
    model = Model.default()
    # 10 records, two share a birth date: 2 of 90 ordered pairs agree exactly.
    people = [person(f"g{i}", "s", f"1980010{i}" if i < 9 else "19800101") for i in range(10)]
    estimate_u(model, people, pairs=10)
    assert abs(model.u["birth_date"][0] - 2 / 90) < 1e-9
    assert abs(sum(model.u["birth_date"]) - 1.0) < 1e-9


def test_an_email_user_that_spells_the_name_is_not_counted_twice():
    from identity.features import from_payload
    from identity.scoring import cmp_email

    def rec(first, last, email):
        traits = {k: v for k, v in (("first_name", first), ("last_name", last)) if v}
        return from_payload({"traits": traits, "identifiers": [
            {"kind": "email", "value": email, "valid": True, "match": "exact"}]})

    # Two Carlos Souzas at different providers: the user part only repeats the name.
    assert cmp_email(rec("Carlos", "Souza", "carlos.souza@yahoo.com.br"),
                     rec("Carlos", "Souza", "carlossouza@terra.com.br")) is None
    # Without a name on one side, the user part is the evidence.
    assert cmp_email(rec("Carlos", "Souza", "carlos.souza@yahoo.com.br"),
                     rec(None, None, "carlos.souza@gmail.com")) == 1
    # A nickname-like user that is not the name counts.
    assert cmp_email(rec("Carlos", "Souza", "kadu1980@yahoo.com.br"), rec("Carlos", "Souza", "kadu1980@gmail.com")) == 1
    # Same letters, other digits: other users.
    assert cmp_email(rec("Ana", "Lima", "ana1981@hotmail.com"), rec("Ana", "Lima", "ana1986@icloud.com")) == 2
