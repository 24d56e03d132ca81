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


def _random_features(rng: random.Random) -> Features:
    """Small vocabularies, so every level of every field turns up, values missing now and then."""
    def maybe(value):
        return value if rng.random() > 0.2 else None

    def some(values):
        return frozenset(rng.sample(values, rng.randint(0, min(2, len(values)))))

    givens, surnames = ["ana", "anna", "maria", "mario", "joao"], ["silva", "silvia", "souza", "lima"]
    given = maybe(rng.choice(givens))
    return Features(
        given=given, given_all=given, surnames=tuple(rng.sample(surnames, rng.randint(0, 2))),
        birth_date=maybe(rng.choice(["19900517", "19901705", "19900518", "19851231"])),
        postal_code=maybe(rng.choice(["01310100", "01310101", "22041001"])),
        city=maybe(rng.choice(["sao paulo", "sao paolo", "rio de janeiro"])),
        street=maybe(rng.choice(["rua augusta", "r augusta", "avenida atlantica"])),
        street_number=maybe(rng.choice(["10", "12"])),
        emails=some(["ana@x.com", "ana.silva@y.com", "m2@z.com"]),
        phones=some(["5511987654321", "5521987654321", "5511912345678"]),
        cpfs=some(["52998224725", "11144477735"]), cpfs_unverified=some(["52998224752"]),
    )


def test_the_bounded_vector_gives_up_only_on_pairs_below_the_floor():
    """vector_above may stop early, and only when the full vector scores
    below the floor; otherwise it is the full vector. Checked on the priors
    and on a model whose weights are all over the place (some fields all
    negative), at floors from very low to very high."""
    rng = random.Random(5)
    skewed = Model.default()
    for c in skewed.comparisons:
        skewed.m[c.name] = [rng.random() + 1e-3 for _ in c.levels]
        skewed.u[c.name] = [rng.random() + 1e-3 for _ in c.levels]
    skewed.changed()
    gave_up = kept = 0
    for model in (Model.default(), skewed):
        for _ in range(3000):
            a, b = _random_features(rng), _random_features(rng)
            full = model.vector(a, b)
            weight, _ = model.score(full)
            for floor in (-40.0, -10.0, 0.0, 0.585, 8.0, 30.0):
                bounded = model.vector_above(a, b, floor)
                if bounded is None:
                    gave_up += 1
                    assert weight < floor
                else:
                    kept += 1
                    assert bounded == full
    assert gave_up > 1000 and kept > 1000  # both ways were exercised


def test_decisions_at_the_extreme_review_thresholds(tmp_path):
    """At review threshold 0 every scored pair is kept for review, however
    different; at 1 only a pair whose probability rounds to 1 (past 53 bits)."""
    from cdp.config import Settings
    from identity.pairs import decide

    a, b = person("ana", "lima", "19900517", "01310100"), person("bruno", "costa", "19650101", "22041001")
    model = Model.default()
    env = {"CDP_INSTANCE_PATH": str(tmp_path)}
    kept = decide(a, b, "r2", set(), model, Settings.from_env(env, review_threshold=0.0))
    assert kept is not None and kept.review and kept.probability < 1e-6
    assert decide(a, b, "r2", set(), model, Settings.from_env(env, review_threshold=0.6)) is None
    at_one = Settings.from_env(env, review_threshold=1.0)
    assert decide(a, a, "r2", set(), model, at_one) is None  # about 30 bits: probability below 1
    rich = Features(given="ana", given_all="ana", surnames=("lima",), birth_date="19900517", postal_code="01310100",
                    emails=frozenset({"ana@x.com"}), phones=frozenset({"5511987654321"}),
                    cpfs=frozenset({"52998224725"}))
    kept = decide(rich, rich, "r2", set(), model, at_one)
    assert kept is not None and kept.probability == 1.0 and not kept.review
