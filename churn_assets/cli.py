"""`churn`: run the graph, production's status, rollback, snapshots, contracts, data.

Plain MLflow and pandas, but for `churn run`, which imports Dagster when it runs: the other
commands work where Dagster is not installed (a restore then says how to retrain instead of
telling Dagster).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from churn_assets.ml.data import synthetic, synthetic_history
from churn_assets.ml.data.contract import ContractError, load_contract
from churn_assets.ml.data.reading import CustomerDataError
from churn_assets.ml.ports import port_in_use
from churn_assets.ml.settings import ChurnSettings
from churn_assets.ml.uris import without_credentials

# MLflow, the snapshot store and the training code are imported by the commands that use
# them: `churn ensure-data` (every `make run`) and `churn check-port` need none of them, and
# importing them costs seconds (about 4 s for MLflow alone on a 2-core machine).
if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from churn_assets.ml.campaigns.effect import Effect
    from churn_assets.ml.data import snapshots
    from churn_assets.ml.registry import model_registry as registry


def _production(args: argparse.Namespace) -> int:
    from churn_assets.ml.registry import model_registry as registry

    settings = ChurnSettings()
    opened = registry.open_registry(settings)
    version = opened.production()
    if args.markdown:
        print(_markdown_summary(settings, opened, version))
        return 0 if version is not None else 1
    if version is None:
        print(
            f"{settings.model_name} has no {settings.production_alias!r} version "
            f"in {without_credentials(settings.tracking_uri)}",
            file=sys.stderr,
        )
        return 1
    tags = version.tags
    print(f"{settings.model_name}@{settings.production_alias} = version {version.version}")
    for key in (
        "holdout_auc",
        "holdout_accuracy",
        "holdout_f1",
        "out_of_time_auc",
        "out_of_time_day",
        registry.GATE_TAG,
        registry.GATE_THRESHOLDS_TAG,
        registry.COMPARED_WITH_TAG,
        registry.PREVIOUS_TAG,
        registry.PROMOTED_AT_TAG,
        "git_sha",
        "snapshot_id",
        "dagster_run_id",
    ):
        print(f"  {key}: {tags.get(key, '-')}")
    override = registry.override_of(version)
    if override is not None:
        print(
            f"  GATE OVERRIDE: requested by {override.get('requested_by')} in Dagster run "
            f"{override.get('dagster_run_id')}: {override.get('reason')}; thresholds "
            f"{override.get('thresholds')}"
        )
    print(f"  model_uri: models:/{settings.model_name}@{settings.production_alias}")
    print(f"  tracking_uri: {without_credentials(settings.tracking_uri)}")
    return 0


def _fetch_data(args: argparse.Namespace) -> int:
    from churn_assets.ml import stores
    from churn_assets.ml.data import remote_data

    settings = ChurnSettings()
    try:
        size = remote_data.fetch_s3(args.uri, settings.data_path, stores.s3_access(settings))
    except Exception as error:
        print(f"fetch-data: {args.uri}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"fetched {args.uri} to {settings.data_path} ({size:,} bytes)")
    return 0


def _markdown_summary(
    settings: ChurnSettings, opened: registry.ModelRegistry, production: ModelVersion | None
) -> str:
    """The newest version's gate verdict and what production is: a CI job's summary."""
    from churn_assets.ml.registry import model_registry as registry

    versions = opened.client.search_model_versions(
        f"name = '{settings.model_name}'", order_by=["version_number DESC"], max_results=1
    )
    lines = [f"### {settings.model_name}", "", "| | version | quality gate | holdout AUC |"]
    lines.append("|---|---|---|---|")
    rows = [("newest", versions[0] if versions else None), ("production", production)]
    for label, version in rows:
        if version is None:
            lines.append(f"| {label} | none | - | - |")
            continue
        tags = version.tags or {}
        verdict = tags.get(registry.GATE_TAG, "-")
        if reason := tags.get(registry.GATE_REASON_TAG):
            verdict += f": {reason}"
        auc = tags.get("holdout_auc", "-")
        lines.append(f"| {label} | {version.version} | {verdict} | {auc} |")
    return "\n".join(lines)


def _rollback(args: argparse.Namespace) -> int:
    from churn_assets.ml.registry import model_registry as registry

    settings = ChurnSettings()
    name = settings.uplift_model_name if args.uplift else settings.model_name
    if args.uplift and settings.uplift_model_name == settings.model_name:
        print(
            "rollback refused: CHURN_UPLIFT_MODEL_NAME names the churn model; withdrawing it "
            "would leave the API without a model",
            file=sys.stderr,
        )
        return 1
    try:
        move = registry.open_registry(settings, name).rollback(args.to_version, args.uplift)
    except registry.WRITE_REFUSALS as refusal:
        print(f"rollback refused: {refusal}", file=sys.stderr)
        return 1
    if move.changed and move.version == registry.NO_VERSION:
        print(
            f"{move.model_name}@{move.alias}: version {move.previous_version} withdrawn; "
            "offers go by churn probability at the decision threshold again"
        )
    elif move.changed:
        print(f"{move.model_name}@{move.alias}: version {move.previous_version} -> {move.version}")
    else:
        print(f"{move.model_name}@{move.alias} already on version {move.version}")
    return 0


def _attest(args: argparse.Namespace) -> int:
    from churn_assets.ml.registry import model_registry as registry

    settings = ChurnSettings()
    try:
        attestation = registry.open_registry(settings).attest(args.version, args.by)
    except registry.WRITE_REFUSALS as refusal:
        print(f"attest refused: {refusal}", file=sys.stderr)
        return 1
    print(
        f"{settings.model_name} version {args.version}: recorded verdict passed, pipeline read "
        "as skops of the pinned types, contract digest as recorded; signed with key "
        f"{attestation['key_id']} for {args.by}"
    )
    return 0


def _snapshots(args: argparse.Namespace) -> int:
    from churn_assets.ml import stores
    from churn_assets.ml.data import snapshots
    from churn_assets.ml.registry import model_registry as registry

    settings = ChurnSettings()
    store = stores.snapshot_store(settings)
    try:
        if args.action == "restore":
            return _restore(settings, store, args.snapshot)
        if args.action == "prune":
            keep = settings.snapshot_keep if args.keep is None else args.keep
            in_use = registry.open_registry(settings).versions_by_snapshot()
            removed = store.prune(keep, in_use)
            for gone in removed:
                print(f"pruned {gone.short_id} ({gone.created_at}, {gone.rows:,} rows)")
            print(f"{len(removed)} snapshot(s) pruned; {len(store.all())} kept")
            return 0
    except snapshots.SnapshotError as error:
        print(f"churn snapshots: {error}", file=sys.stderr)
        return 1
    print(snapshots_table(store, registry.open_registry(settings).versions_by_snapshot()))
    return 0


def _keep(text: str) -> int:
    """`--keep`: a whole number, 1 or more (the newest snapshot is never pruned)."""
    try:
        keep = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if keep < 1:
        raise argparse.ArgumentTypeError(f"{keep} is not 1 or more: the newest is always kept")
    return keep


def snapshots_table(store: snapshots.SnapshotStore, trained: dict[str, list[str]]) -> str:
    """Every snapshot, oldest first, the current one marked with *."""
    current = store.current_id()
    lines = [
        f"snapshots in {without_credentials(store.uri)}",
        f"  {'id':<12}  {'created (UTC)':<19}  {'rows':>9}  {'churn':>6}  "
        f"{'kind':<5}  {'from':<28}  versions",
    ]
    for snapshot in store.all():
        mark = "*" if snapshot.id == current else " "
        source = snapshot.source.rsplit("/", 1)[-1][:28]
        versions = ", ".join(trained.get(snapshot.id, [])) or "-"
        lines.append(
            f"{mark} {snapshot.short_id}  {snapshot.created_at[:19].replace('T', ' ')}  "
            f"{snapshot.rows:>9,}  {snapshot.churn_rate:>6.1%}  {snapshot.kind:<5}  "
            f"{source:<28}  {versions}"
        )
    if current is None:
        lines.append("  (none yet: `make run` or an extract in the landing folder makes one)")
    return "\n".join(lines)


def _restore(settings: ChurnSettings, store: snapshots.SnapshotStore, name: str) -> int:
    from churn_assets.ml.data import snapshots

    previous, target = snapshots.restore(store, name)
    if previous == target.id:
        print(f"snapshot {target.short_id} is already the current one")
        return 0
    print(
        f"current snapshot: {(previous or 'none')[: snapshots.SHORT_ID]} -> {target.short_id} "
        f"({target.rows:,} rows, churn rate {target.churn_rate:.1%})"
    )
    print(report_restore(target, previous))
    return 0


def report_restore(target: snapshots.SnapshotInfo, previous: str | None) -> str:
    """Tell Dagster the snapshot changed, so automation retrains behind the quality gate.

    A runless materialization of customer_snapshot is what a merge would record; the
    declarative automation downstream of it treats both alike. Without Dagster here (the
    serving image) or a DAGSTER_HOME, the message says how to retrain by hand.
    """
    if not os.environ.get("DAGSTER_HOME"):
        return "DAGSTER_HOME is not set: retrain with `make run` to train on it"
    try:
        import dagster as dg
    except ImportError:
        return "Dagster is not installed here: retrain with `make run` to train on it"
    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "customer_snapshot",
                description=f"restored snapshot {target.short_id} with `churn snapshots restore`",
                metadata={
                    "snapshot_id": target.id,
                    "restored_from": previous or "none",
                    "snapshot_rows_after": target.rows,
                    "snapshot_churn_rate": target.churn_rate,
                },
                tags={"dagster/data_version": target.id},
            )
        )
    return (
        "recorded as a customer_snapshot materialization in Dagster: automation retrains "
        "on it behind the quality gate (or run `make run`)"
    )


def _reproduce(args: argparse.Namespace) -> int:
    from churn_assets.ml.data import snapshots
    from churn_assets.ml.evaluation import reproduce
    from churn_assets.ml.registry import model_registry as registry

    # Why a version cannot be retrained: no snapshot recorded or kept, no such version.
    refusals: tuple[type[Exception], ...] = (
        reproduce.ReproductionError,
        snapshots.SnapshotError,
        *registry.WRITE_REFUSALS,
    )
    settings = ChurnSettings()
    try:
        result = reproduce.reproduce(settings, args.version)
    except refusals as err:
        print(f"churn reproduce: {err}", file=sys.stderr)
        return 1
    print(
        f"{settings.model_name} version {result.version}, snapshot "
        f"{result.snapshot_id[: snapshots.SHORT_ID]}, trained by code {result.recorded_git_sha}, "
        f"retrained by {result.current_git_sha}"
    )
    print(f"  {'holdout metric':<16} {'recorded':>12} {'reproduced':>12}")
    for name, value in result.recorded.items():
        print(f"  {name:<16} {value:>12.6f} {result.reproduced[name]:>12.6f}")
    if result.matches:
        print("reproduced: every holdout metric matches")
        return 0
    cause = (
        "with the same code, so training is not deterministic: please report it"
        if result.same_code
        else "the code differs, which may explain it"
    )
    print(f"NOT reproduced: {', '.join(result.differences)} differ, {cause}")
    return 1


def _realized(args: argparse.Namespace) -> int:
    """The realized_performance table from the shell, for those without the Dagster UI."""
    import pandas as pd

    from churn_assets.ml.data import snapshots
    from churn_assets.ml.evaluation import realized

    settings = ChurnSettings()
    try:
        as_of, table = realized.realized_now(settings)
    except snapshots.SnapshotError as error:
        print(f"churn realized: {error}", file=sys.stderr)
        return 1
    print(
        f"scorings in {settings.scores_folder / realized.HISTORY_FOLDER}, outcomes as of "
        f"{as_of}, window {settings.outcome_window_days} days"
    )
    if table.empty:
        print("  no scoring has outcomes yet")
        return 0
    print(
        f"  {'scored on':<10}  {'version':>7}  {'customers':>9}  {'days':>4}  {'churned':>7}  "
        f"{'AUC':>5}  {'offered':>7}  {'precision':>9}  {'recall':>6}  {'value/1000':>10}  "
        "offers by"
    )
    for row in table.itertuples():

        def shown(value: object, spec: str) -> str:
            return "-" if value is None or pd.isna(value) else format(value, spec)

        days = f"{row.days_observed}" + ("" if row.window_complete else "*")
        print(
            f"  {row.scoring_date:<10}  {row.model_version:>7}  {row.customers:>9,}  "
            f"{days:>4}  {row.churners:>7,}  {shown(row.realized_auc, '.3f'):>5}  "
            f"{row.offered:>7,}  {shown(row.precision_at_offer, '.1%'):>9}  "
            f"{shown(row.recall_at_offer, '.1%'):>6}  {row.realized_value_per_1000:>10,.0f}  "
            f"{row.offers_by}"
        )
    if not table["window_complete"].all():
        print("  (* window still open: figures so far)")
    return 0


def _campaigns(args: argparse.Namespace) -> int:
    """Every campaign, its arms and, once outcomes arrived, what its offers did."""
    from churn_assets.ml.campaigns import effect, ledger, measured, uplift
    from churn_assets.ml.data import snapshots

    settings = ChurnSettings()
    kept = ledger.campaigns(settings.scores_folder)
    if not kept:
        print(f"no campaign in {settings.scores_folder / ledger.FOLDER} yet: make run makes one")
        return 0
    try:
        as_of, effects = measured.measured_now(settings)
    except snapshots.SnapshotError as error:
        print(f"churn campaigns: {error}", file=sys.stderr)
        return 1
    judged = {(e.campaign.id, e.policy): e for e in effects}
    print(
        f"campaigns in {settings.scores_folder / ledger.FOLDER}, outcomes as of {as_of}; "
        "reduction = control churn - treatment churn, 95% interval; reached and per contact "
        "from the contact logs"
    )
    print(
        f"  {'campaign':<16}  {'treated':>7}  {'control':>7}  {'explore':>7}  {'held':>6}  "
        f"{'days':>4}  {'churn T':>7}  {'churn C':>7}  {'reduction [95% interval]':<26}  "
        f"{'kept/1000':>9}  {'reached':>7}  {'per contact':>11}"
    )
    for campaign in kept:
        policies = campaign.by_policy or {"production": campaign.counts}
        for policy, c in policies.items():
            label = (
                campaign.id
                if policy == "production"
                else f"  challenger v{campaign.versions[policy]}"
            )
            print(_campaign_line(label, c, judged.get((campaign.id, policy))))
    duels = effect.compare_policies(effects, settings.offer_cost, settings.saved_customer_value)
    for duel in duels:
        champion, challenger = duel.production, duel.challenger
        print(
            f"  {duel.campaign}: {duel.verdict}: per 1,000 customers production "
            f"v{champion.version} (threshold {champion.threshold:.3f}) "
            f"{champion.value_per_1000 + 0.0:+.1f}, challenger v{challenger.version} (threshold "
            f"{challenger.threshold:.3f}) {challenger.value_per_1000 + 0.0:+.1f}, difference "
            f"{duel.difference + 0.0:+.1f} [{duel.difference_low + 0.0:+.1f}, "
            f"{duel.difference_high + 0.0:+.1f}]"
            + ("" if duel.window_complete else " (window open)")
        )
    said = uplift.latest_verdict(settings.scores_folder)
    if said is not None:
        line = (
            f"  uplift model (outcomes as of {said.get('outcomes_as_of', '?')}): {said['verdict']}"
        )
        if "difference_per_1000" in said:
            line += (
                f"; on {said['held_out_customers']:,} held-out customers per 1,000: uplift "
                f"targeting {said['uplift_value_per_1000']:+,.0f} vs probability "
                f"{said['probability_value_per_1000']:+,.0f}, difference "
                f"{said['difference_per_1000']:+,.0f} [{said['difference_low']:+,.0f}, "
                f"{said['difference_high']:+,.0f}]"
            )
        print(line)

        def production_now() -> str | None:
            from churn_assets.ml.registry import model_registry as registry

            return registry.open_registry(settings, settings.uplift_model_name).production_number()

        warning = uplift.production_alert(said, production_now)
        if warning is not None:
            print(f"  warning: {warning}")
    if any(not e.window_complete for e in effects):
        print("  (* window still open: figures so far)")
    return 0


def _campaign_line(label: str, counts: dict[str, int], found: Effect | None) -> str:
    """One campaign's (or one policy's) line of `churn campaigns`."""
    line = (
        f"  {label:<16}  {counts.get('treatment', 0):>7,}  {counts.get('control', 0):>7,}  "
        f"{counts.get('explore', 0):>7,}  {counts.get('held', 0):>6,}"
    )
    t = found.targets if found is not None else None
    if found is None or t is None:
        return line + (
            f"  {'-':>4}  no outcomes yet" if found is None else "  no treated or control"
        )
    days = f"{found.days_observed}" + ("" if found.window_complete else "*")
    interval = f"{t.reduction:+.3f} [{t.reduction_low:+.3f}, {t.reduction_high:+.3f}]"
    line += (
        f"  {days:>4}  {t.churn_rate_offered:>7.1%}  {t.churn_rate_held_back:>7.1%}  "
        f"{interval:<26}  {1000 * t.reduction:>9.1f}"
    )
    p = found.protocol
    if p is not None:
        per_contact = p.reduction_per_contact
        line += f"  {p.contact_rate:>7.0%}  " + (
            f"{per_contact:>+11.3f}" if per_contact is not None else f"{'-':>11}"
        )
    return line


def _ensure_data(args: argparse.Namespace) -> int:
    return ensure_data(ChurnSettings())


def ensure_data(settings: ChurnSettings) -> int:
    """Demo data only where nobody asked for a file of their own; 2 when the asked-for file
    is missing."""
    path = settings.data_path
    if path.is_file():
        print(f"using existing {path}")
        return 0
    if "data_path" in settings.model_fields_set:  # CHURN_DATA_PATH, in the env or .env
        print(
            f"CHURN_DATA_PATH is {path}, which does not exist: nothing was trained or "
            "promoted. Fix the path, or unset CHURN_DATA_PATH to train on synthetic demo data.",
            file=sys.stderr,
        )
        return 2
    rows = synthetic.DEFAULT_ROWS
    own = settings.contract_path is not None  # CHURN_CONTRACT_PATH: demo data in its shape
    synthetic.write_customers(
        synthetic.generate_for_contract(settings.contract(), rows)
        if own
        else synthetic.generate_customers(rows),
        path,
    )
    print(
        f"{path} did not exist: wrote {rows:,} SYNTHETIC demo customers there; "
        "set CHURN_DATA_PATH to your export to train on real customers"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    """The whole graph (or another job) from a terminal: a line per step, the log in a file."""
    status = ensure_data(ChurnSettings())
    if status:
        return status
    from churn_assets import start_up

    started = time.perf_counter()
    path = start_up.announce(ChurnSettings(), args.job, sys.stdout)
    with start_up.bulk_imports():
        from churn_assets import run_console
    config = run_console.load_run_config(args.config)
    status = run_console.run(args.job, config, path, started)
    start_up.before_exit()
    return status


def _demo_campaigns(args: argparse.Namespace) -> int:
    from churn_assets import demo_campaigns

    return demo_campaigns.run(args)


def _check_port(args: argparse.Namespace) -> int:
    busy = port_in_use(args.host, args.port)
    if busy:
        print(f"{busy}; {args.hint}", file=sys.stderr)
        return 2
    return 0


def _mlflow_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the store these settings use, wherever MLFLOW_TRACKING_URI points.

    While it runs, its URL is recorded in <state>/mlflow-ui.url, so the MLflow links Dagster
    writes into metadata (ChurnSettings.ui_url) open this port, whichever was chosen.
    """
    import signal

    settings = ChurnSettings()
    location = settings.artifact_location
    if location is None:  # a server: it keeps its own artifacts and serves its own UI
        print(f"MLFLOW_TRACKING_URI is a server: its UI is {settings.ui_url}")
        return 0
    busy = port_in_use("127.0.0.1", args.port)
    if busy:
        print(f"{busy}; choose another: make mlflow-ui PORT=5001", file=sys.stderr)
        return 2
    from churn_assets.ml.registry import tracking

    tracking.configure_mlflow(settings)
    command = [
        # this interpreter's MLflow, found whether or not its scripts folder is on PATH
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        settings.tracking_uri,
        "--default-artifact-root",
        location,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        # one person's UI on a laptop: one worker, not MLflow's default four processes
        "--workers",
        "1",
    ]
    url = f"http://127.0.0.1:{args.port}"
    record = settings.ui_url_file

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    # make forwards SIGTERM to this process only: the UI stops with it, and the record goes
    signal.signal(signal.SIGTERM, stop)
    # nor MLflow's GenAI job runner: eight more processes, slower to start and to stop
    without_jobs = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, env=without_jobs)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(f"{url}\n")
        store = without_credentials(settings.tracking_uri)
        print(f"MLflow UI on {url} (store {store}); Dagster's MLflow links open it", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait()
        record.unlink(missing_ok=True)


def _contract(args: argparse.Namespace) -> int:
    """Draft a contract from an export, or check one, say what it declares and, with --data,
    judge a file by it as a run's data checks would (exit 1 on problems in the file)."""
    from churn_assets.ml.data import contract_check, contract_inference

    try:
        if args.action == "infer":
            draft = contract_inference.infer_contract(args.file)
            if args.out is not None and args.out.exists() and not args.force:
                print(f"{args.out} exists; not overwriting it (pass --force)", file=sys.stderr)
                return 2
            if args.out is None:
                print(draft, end="")
            else:
                args.out.write_text(draft, encoding="utf-8")
                print(
                    f"wrote a draft contract to {args.out}: edit it, check it against the file "
                    f"with `churn contract check {args.out} --data {args.file}`, then set "
                    "CHURN_CONTRACT_PATH"
                )
            return 0
        settings = ChurnSettings()
        path = args.file or settings.contract_path
        loaded = load_contract(path)
    except (ContractError, CustomerDataError) as error:
        print(error, file=sys.stderr)
        return 2
    print(
        f"contract {path or 'telco.yaml (shipped default)'}: version {loaded.version}, "
        f"digest {loaded.digest[:12]}"
    )
    print(f"  id: {loaded.id or f'none ({loaded.id_column}: a hash of each row)'}")
    print(f"  target: {loaded.target_column} (churned: {', '.join(loaded.target.positive)})")
    print(
        f"  features: {len(loaded.categorical_features)} categorical, "
        f"{len(loaded.numeric_features)} numeric"
    )
    print(f"  segments: {', '.join(loaded.segments) or 'none'}")
    if args.data is None:
        return 0
    try:
        report = contract_check.check_data(
            args.data, loaded, max_line_bytes=settings.extract_limits.max_line_bytes
        )
    except CustomerDataError as error:  # a file a run could not read at all
        print(error, file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0 if report.passed else 1


def _add_contract(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    contract = commands.add_parser(
        "contract", help="check the data contract (CHURN_CONTRACT_PATH), or draft one from a CSV"
    )
    contract.set_defaults(handler=_contract)
    contract_actions = contract.add_subparsers(dest="action", required=True)
    check = contract_actions.add_parser("check", help="validate a contract and summarise it")
    check.add_argument("file", nargs="?", type=Path, help="default: CHURN_CONTRACT_PATH")
    check.add_argument(
        "--data",
        type=Path,
        metavar="FILE",
        help="also judge this export as a run's data checks would (missing columns, target "
        "codes, types, levels, ranges; the first lines of each problem); exit 1 on problems",
    )
    infer = contract_actions.add_parser(
        "infer", help="draft a contract from an export (types, levels, ranges, ID, target)"
    )
    infer.add_argument("file", type=Path, help="the export (CSV)")
    infer.add_argument("--out", type=Path, help="write the draft here instead of printing it")
    infer.add_argument("--force", action="store_true", help="overwrite --out")


def _generate(args: argparse.Namespace) -> int:
    synthetic.run(args)
    return 0


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    launch = commands.add_parser(
        "run",
        help="run the whole graph here: a line per step, then the version, its gate verdict "
        "and its scores; the full log in <state>/logs (make run)",
    )
    launch.add_argument(
        "--job",
        choices=("churn_training", "merge_extract", "record_contacts"),
        default="churn_training",
        help="churn_training (default): retrain from the current snapshot; merge_extract: merge "
        "the extract its --config names (ops.customer_snapshot.config.extract_path); "
        "record_contacts: record the contact log its --config names "
        "(ops.contact_log.config.path) and measure the campaigns again",
    )
    launch.add_argument(
        "--config", type=Path, help="run config (YAML or JSON), as `dg launch --config` takes it"
    )
    launch.set_defaults(handler=_run)


def _add_attest(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    attest = commands.add_parser(
        "attest",
        help="sign a version registered before versions were signed, after checking it",
        description="A version registered before this platform signed its models has no "
        "manifest or attestation, and the API, scoring and evaluation refuse it. This checks "
        "its recorded gate verdict is passed, reads its pipeline the safe way (skops, pinned "
        "types, never pickle) and compares its contract with the digest recorded when it was "
        "registered, then signs it with CHURN_SIGNING_KEY. Example: churn attest 3 --by alice",
    )
    attest.add_argument("version", help="the registered version, e.g. 3")
    attest.add_argument("--by", required=True, help="who vouches for it (kept in the record)")
    attest.set_defaults(handler=_attest)


def _campaign_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    offers = commands.add_parser(
        "campaigns",
        help="every campaign's arms and its offers' measured effect (as campaign_effect)",
    )
    offers.set_defaults(handler=_campaigns)

    demo = commands.add_parser(
        "demo-campaigns",
        help="weeks of campaigns on a synthetic world that answers offers: measured vs true",
    )
    demo.add_argument("--out", type=Path, required=True, help="the demo's state folder")
    demo.add_argument("--weeks", type=int, default=8, help="weekly extracts after the base")
    demo.add_argument("--customers", type=int, default=5000, help="customers in the base")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument(
        "--start",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="the base's date (default: --weeks weeks before today). Campaign IDs, and so "
        "their random draws, carry the dates: a fixed start gives the same figures any day",
    )
    demo.add_argument(
        "--challenger-from",
        type=int,
        default=4,
        metavar="WEEK",
        help="from this week on, campaigns try version 1's policy as a challenger on half the "
        "customers (0: never)",
    )
    demo.set_defaults(handler=_demo_campaigns)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="churn",
        description=__doc__.splitlines()[0],
        epilog="`churn COMMAND --help` shows a command's options and examples. Most have a "
        "make target (make help).",
    )
    # the helpers make calls (ensure-data, check-port) get no `help`, so they are not listed
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser(
        "generate-data", help="write synthetic customers in the Telco export's schema"
    )
    synthetic.add_arguments(generate)
    generate.set_defaults(handler=_generate)

    _add_contract(commands)

    weekly = commands.add_parser(
        "generate-history",
        help="a synthetic customer base and weekly extracts in which customers churn over time",
    )
    synthetic_history.add_arguments(weekly)
    weekly.set_defaults(handler=lambda args: 0 if synthetic_history.run(args) else 1)

    _campaign_commands(commands)

    ensure = commands.add_parser(
        "ensure-data",
        description="(for make) synthetic demo customers at the default data path if it is "
        "missing; an explicit CHURN_DATA_PATH that is missing is an error",
    )
    ensure.set_defaults(handler=_ensure_data)

    _add_run(commands)

    production = commands.add_parser(
        "production", help="show the production version and its holdout metrics"
    )
    production.add_argument(
        "--markdown",
        action="store_true",
        help="the newest version's gate verdict and production, as a Markdown table",
    )
    production.set_defaults(handler=_production)

    fetch = commands.add_parser(
        "fetch-data",
        help="download the training snapshot from s3://bucket/key to CHURN_DATA_PATH "
        "(MLFLOW_S3_ENDPOINT_URL and the AWS_* credentials)",
    )
    fetch.add_argument("uri")
    fetch.set_defaults(handler=_fetch_data)

    check_port = commands.add_parser(
        "check-port", description="(for make) exit 2 if a port cannot be listened on"
    )
    check_port.add_argument("port", type=int)
    check_port.add_argument("--host", default="127.0.0.1")
    check_port.add_argument("--hint", default="choose another port")
    check_port.set_defaults(handler=_check_port)

    mlflow_ui = commands.add_parser(
        "mlflow-ui", help="the MLflow UI on the local store; Dagster's MLflow links follow it"
    )
    mlflow_ui.add_argument("--port", type=int, default=5000)
    mlflow_ui.set_defaults(handler=_mlflow_ui)

    _add_attest(commands)

    rollback = commands.add_parser(
        "rollback", help="move production back to the version it replaced"
    )
    rollback.add_argument(
        "--to",
        dest="to_version",
        help="roll back to this version instead (it must have passed the quality gate)",
    )
    rollback.add_argument(
        "--uplift",
        action="store_true",
        help="the uplift model (CHURN_UPLIFT_MODEL_NAME) instead; its first version is "
        "withdrawn, and offers go by churn probability again",
    )
    rollback.set_defaults(handler=_rollback)

    listing = commands.add_parser(
        "snapshots",
        help="list the training snapshots (the current one marked *), restore or prune them",
    )
    listing.set_defaults(handler=_snapshots, action="list")
    actions = listing.add_subparsers(dest="action")
    restore = actions.add_parser(
        "restore", help="make an older snapshot the current one (Dagster then retrains on it)"
    )
    restore.add_argument("snapshot", help="its ID, or 6 or more of its first characters")
    prune = actions.add_parser(
        "prune",
        help="delete snapshots beyond the newest CHURN_SNAPSHOT_KEEP that no model version uses",
    )
    prune.add_argument("--keep", type=_keep, help="newest snapshots to keep (>= 1)")

    outcomes = commands.add_parser(
        "realized",
        help="how well each kept scoring predicted who left since (as realized_performance)",
    )
    outcomes.set_defaults(handler=_realized)

    person = commands.add_parser(
        "console-user",
        help="add or replace a retention console user (password read from stdin or asked)",
    )
    person.add_argument("name", help="the login name")
    person.add_argument(
        "--role", choices=["viewer", "lead"], default="viewer", help="a lead also downloads lists"
    )
    person.add_argument(
        "--proxy",
        action="store_true",
        help="no password: signs in only through the authenticating proxy "
        "(CHURN_CONSOLE_TRUSTED_HEADER)",
    )
    person.set_defaults(handler=_console_user)

    again = commands.add_parser(
        "reproduce",
        help="retrain a version from its snapshot and parameters; exit 1 if metrics differ",
    )
    again.add_argument("--version", required=True, help="the model version to retrain")
    again.set_defaults(handler=_reproduce)
    _document(commands)
    return parser


def _console_user(args: argparse.Namespace) -> int:
    """Write the user's argon2 hash and role into the console's users file."""
    import getpass

    from console.settings import ConsoleSettings
    from console.users import Role, UsersFileError, add

    password = (
        None
        if args.proxy
        else getpass.getpass(f"password for {args.name}: ")
        if sys.stdin.isatty()
        else sys.stdin.readline().rstrip("\n")
    )
    settings = ConsoleSettings()
    try:
        add(settings.users_path, args.name, password, Role(args.role))
    except UsersFileError as error:
        print(error, file=sys.stderr)
        return 2
    how = "through the authenticating proxy" if args.proxy else "to the console"
    print(f"{args.name} ({args.role}) can log in {how}; users file {settings.users_path}")
    return 0


#: What each command's --help ends with: commands as people type them.
EXAMPLES = {
    "run": "make run\nchurn run --job merge_extract --config merge.yaml",
    "production": "make production\nchurn production --markdown >> $GITHUB_STEP_SUMMARY",
    "rollback": "make rollback\nchurn rollback --to 3\nchurn rollback --uplift",
    "snapshots": "make snapshots\n"
    "churn snapshots restore 6f01d22a\n"
    "churn snapshots prune --keep 10",
    "contract": "churn contract infer export.csv --out my_contract.yaml\n"
    "churn contract check my_contract.yaml --data export.csv",
    "generate-data": "churn generate-data --rows 100000 --out data/big.csv",
    "generate-history": "churn generate-history --weeks 8 --customers 5000 --out history/",
    "fetch-data": "churn fetch-data s3://churn-data/exports/telco_churn.csv",
    "mlflow-ui": "make mlflow-ui PORT=5001",
    "attest": "churn attest 3 --by alice",
    "realized": "make demo-history && CHURN_STATE_DIR=.churn-demo churn realized",
    "campaigns": "make demo-campaigns && CHURN_STATE_DIR=.churn-campaigns CHURN_OFFER_COST=50 "
    "churn campaigns",
    "demo-campaigns": "make demo-campaigns\nchurn demo-campaigns --weeks 8 --out .churn-campaigns\n"
    "churn demo-campaigns --weeks 4 --start 2026-11-06 --out /tmp/campaigns",
    "reproduce": "churn reproduce --version 3",
    "console-user": "churn console-user alice --role lead\nchurn console-user bob\n"
    "churn console-user carol --role lead --proxy",
}


def _document(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Each listed command's help: its one line as description, then its examples."""
    helps = {action.dest: action.help for action in commands._choices_actions}
    for name, command in commands.choices.items():
        command.formatter_class = argparse.RawDescriptionHelpFormatter
        if command.description is None:
            command.description = helps.get(name)
        if name in EXAMPLES:
            command.epilog = "examples:\n" + "\n".join(
                f"  {line}" for line in EXAMPLES[name].splitlines()
            )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.handler(args))
