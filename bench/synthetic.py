"""Identity resolution at scale on realistic Brazilian data: the `cdp demo`
generator (several sources per person, typos, missing CPFs, other e-mail or
phone per source, family-shared contacts), ingested and resolved
incrementally through the product, then a batch rebuild; Splink on the same
records for comparison.

    .venv/bin/python bench/synthetic.py --people 20000 [--backends sqlite,postgresql] [--splink] [--backfill]

Prints records/s of incremental ingest+resolve, rebuild time, peak memory
(each run in its own process, the data generated once beforehand) and pairwise
F1 against the generator's truth; progress (records/s and resident memory
every 50,000 records) on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_dataset(people: int, data_dir: Path) -> None:
    """Generate once, in the parent: each measured child reads the files, so
    its peak memory is the product's, not the generator's."""
    from cdp.demo.dataset import generate

    ds = generate(data_dir, people=people, seed=5)
    (data_dir / "dataset.json").write_text(json.dumps({
        "files": [[str(d), str(m) if m else None] for d, m in ds.files], "truth": str(ds.truth_path),
        "records": ds.records}))


class Dataset:
    def __init__(self, data_dir: Path):
        meta = json.loads((data_dir / "dataset.json").read_text())
        self.files = [(Path(d), Path(m) if m else None) for d, m in meta["files"]]
        self.truth_path, self.records = Path(meta["truth"]), meta["records"]

    def ingest(self, runtime, resolve: bool, bar=None) -> None:
        """Every file through the file connector, as an operator would load them."""
        from cdp.cli import ingest_connector
        from plugins.file_source import FileSource

        for data, mapping in self.files:
            config = {"path": str(data)} | ({"mapping": str(mapping)} if mapping else {})
            ingest_connector(runtime, FileSource(config), quiet=True, bar=bar, resolve=resolve)

    def score(self, runtime) -> dict:
        """Pairwise precision, recall and F1 of the stored clusters against the truth."""
        from cdp.links import iter_links
        from identity.evaluate import pairwise

        return pairwise({(s, e): p for s, e, p in iter_links(runtime)}, self.truth).as_dict()

    @cached_property
    def truth(self):
        from identity.evaluate import read_truth

        return read_truth(self.truth_path)  # read once: a million lines at 1M records


def run_cdp(data_dir: Path, database_url: str | None, backfill: bool = False) -> dict:
    from identity.rebuild import rebuild
    from identity.training import train
    from tests.conftest import make_runtime, make_settings

    ds = Dataset(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = make_runtime(make_settings(Path(tmp) / "instance", database_url))

        class Bar:
            """Progress every 50,000 records (to stderr): throughput of the last
            window and resident memory, to show neither degrades as the base grows."""

            def __init__(self):
                self.done, self.mark, self.last = 0, 0, time.perf_counter()

            def update(self, n):
                self.done += n
                if self.done - self.mark >= 50_000:
                    now = time.perf_counter()
                    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
                    anon = int(status["RssAnon"].split()[0]) >> 10  # the process's own memory, not mapped files
                    print(f"progress records={self.done} window_rec_s={(self.done - self.mark) / (now - self.last):.0f}"
                          f" rss_anon_mb={anon}", file=sys.stderr, flush=True)
                    self.done, self.mark, self.last = self.done, self.done, now

        bar = Bar()
        t0 = time.perf_counter()
        ds.ingest(runtime, resolve=not backfill, bar=bar)
        incremental = time.perf_counter() - t0
        peak_incremental = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"progress {'stored' if backfill else 'incremental done'} in {incremental:.0f} s",
              file=sys.stderr, flush=True)
        out = {"records": ds.records}
        if backfill:  # the backfill path: stored without resolution, resolved by one rebuild
            out.update(stored_s=round(incremental, 1), stored_per_s=round(ds.records / incremental, 1))
            t = time.perf_counter()
            stats = rebuild(runtime)
            out.update(backfill_rebuild_s=round(time.perf_counter() - t, 1), backfill_phase_s=stats["phase_seconds"])
            backfilled = ds.score(runtime)
            print(f"progress backfill rebuilt in {out['backfill_rebuild_s']:.0f} s (phases {stats['phase_seconds']},"
                  f" F1 {backfilled['f1']}, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10} MB)",
                  file=sys.stderr, flush=True)
        else:
            out.update(incremental_s=round(incremental, 1), records_per_s=round(ds.records / incremental, 1))
        out["peak_mb_incremental"] = round(peak_incremental)
        out.update(ds.score(runtime))
        # What an operator does after the first load: train on the data,
        # then rebuild every cluster with the trained model.
        t1 = time.perf_counter()
        train(runtime)
        out["train_s"] = round(time.perf_counter() - t1, 1)
        print(f"progress trained in {out['train_s']:.0f} s", file=sys.stderr, flush=True)
        t2 = time.perf_counter()
        stats = rebuild(runtime)
        out.update(rebuild_s=round(time.perf_counter() - t2, 1), rebuild_phase_s=stats["phase_seconds"],
                   rebuild_changed=stats["changed_records"])
        print(f"progress rebuilt in {out['rebuild_s']:.0f} s", file=sys.stderr, flush=True)
        trained = ds.score(runtime)
        out["trained"] = {k: trained[k] for k in ("precision", "recall", "f1")}
    return out


def run_splink(data_dir: Path) -> dict:
    """The same records, flattened to one row each, through Splink (DuckDB)."""
    import pandas as pd
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    from cdp.ingest import normalize_record
    from identity.evaluate import pairwise
    from plugins.file_source import FileSource
    from schemas.record import load_record

    ds = Dataset(data_dir)
    rows = []
    for data, mapping in ds.files:
        config = {"path": str(data)} | ({"mapping": str(mapping)} if mapping else {})
        source = FileSource(config)
        for batch in source.read(batch_size=5000):
            for raw in batch.records:
                rec = load_record(raw, source.source_name or raw.get("source"))
                p = normalize_record(rec, {})
                ids = {}
                for ident in p["identifiers"]:
                    ids.setdefault(ident["kind"], ident["value"])
                t = p["traits"]
                name = (p.get("name") or {}).get("match") or ""
                parts = name.split()
                rows.append({"uid": f"{rec['source']}|{rec['external_id']}", "first_name": parts[0] if parts else None,
                             "surname": parts[-1] if len(parts) > 1 else None, "dob": t.get("birth_date"),
                             "email": ids.get("email"), "phone": ids.get("phone"), "cpf": ids.get("cpf"),
                             "postcode": t.get("postal_code"), "city": t.get("city")})
    df = pd.DataFrame(rows)
    t0 = time.perf_counter()
    db_api = DuckDBAPI()
    table = db_api.register(df)
    settings = SettingsCreator(
        unique_id_column_name="uid", link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[block_on("cpf"), block_on("email"), block_on("phone"),
                                                block_on("first_name", "surname"), block_on("surname", "dob"),
                                                block_on("postcode", "first_name")],
        comparisons=[cl.NameComparison("first_name"), cl.NameComparison("surname"),
                     cl.DateOfBirthComparison("dob", input_is_string=True), cl.ExactMatch("cpf"),
                     cl.EmailComparison("email"), cl.ExactMatch("phone"), cl.ExactMatch("postcode"),
                     cl.ExactMatch("city")],
    )
    linker = Linker(table, settings, log_level=None)
    linker.training.estimate_probability_two_random_records_match([block_on("cpf"), block_on("email")], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("first_name", "surname"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, 0.95).as_pandas_dataframe()
    seconds = time.perf_counter() - t0
    predicted = {tuple(uid.split("|", 1)): str(c) for uid, c in zip(clusters["uid"], clusters["cluster_id"])}
    score = pairwise(predicted, ds.truth).as_dict()
    return {"records": len(df), "seconds": round(seconds, 1), **score}


def child(kind: str, data_dir: Path, database_url: str | None) -> None:
    result = run_splink(data_dir) if kind == "splink" else run_cdp(data_dir, database_url, backfill=kind == "backfill")
    result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(result))


def main() -> None:
    from cdp.store import tune_gc

    tune_gc()  # as the `cdp` command does
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=20000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--splink", action="store_true")
    parser.add_argument("--backfill", action="store_true",
                        help="store without resolving (ingest --no-resolve), then resolve with one rebuild")
    parser.add_argument("--pg", default=os.environ.get("CDP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, url, data_dir = args.child
        return child(kind, Path(data_dir), None if url == "-" else url)
    data = tempfile.TemporaryDirectory()
    write_dataset(args.people, Path(data.name))
    runs = []
    for backend in args.backends.split(","):
        url, cleanup = "-", None
        if backend == "postgresql":
            import psycopg

            name = f"cdp_bench_{secrets.token_hex(4)}"
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            url = args.pg.rsplit("/", 1)[0] + "/" + name
            cleanup = name
        runs.append((backend, ["backfill" if args.backfill else "cdp", url], cleanup))
    if args.splink:
        runs.append(("splink", ["splink", "-"], None))
    for label, child_args, cleanup in runs:
        # The child's stderr passes through: its progress lines show as it runs.
        proc = subprocess.run([sys.executable, __file__, "--child", *child_args, data.name],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if cleanup:
            import psycopg

            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{cleanup}" WITH (FORCE)')
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        print(f"{label}: " + (line[7:] if line else f"failed (exit {proc.returncode}; its error is above)"), flush=True)


if __name__ == "__main__":
    main()
