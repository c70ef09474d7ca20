"""Table 1 of the paper, settled: which binary domain loses least at 95 % sparsity, and why.

    python examples/table1_domains.py                    # the ablation grid, 3 seeds (see docs/results.md)
    python examples/table1_domains.py --grid paper       # only the paper's rows
    python examples/table1_domains.py --quick            # tiny smoke run, seconds per training
    python examples/table1_domains.py --scheduler tcp://HOST:8786   # on a Dask cluster

The paper (Table 1) trains a binarized ResNet-18 without sparsity constraint
in XNOR-Net's {-beta, +beta} domain (the baseline) and at 95 % sparsity in
{-beta, +beta}, in {alpha, beta} from Eq. 15 and in a learned {alpha, beta},
and reports Delta = accuracy - baseline. Its two claims: the learned domain
loses least, and Eq. 15's {alpha, beta} loses less than {-beta, +beta}.

Besides the domain, a run here can differ in two more factors, so that they
can be told apart: the *gradient treatment* of the computed domains
(``exact`` through beta or tau*, phi*, or ``ste``: levels as constants; see
pysbnn.domains) and the *penalty scaling* (``tau``: the penalty's push
multiplied by the layer's tau; see pysbnn.train.penalty_scale). A row of the
grid is ``domain[/grad][/tau]``; ``--grid`` takes a grid name or such rows
separated by commas. Every row is trained with seeds SEED .. SEED+n-1; a
seed fixes the data subset, the initial weights and the training, so Deltas
are paired by seed (each seed has its own baseline).

Outputs in OUT (default runs/table1/): ``table1.csv`` (one row per
configuration and seed), ``table1_summary.csv`` (mean, sd and 95 % interval
of each Delta), ``table1.md`` (the tables and the paired tests of the two
claims) and ``table1_run.json``. Models are saved in OUT/models as they
finish and reused by a later run with the same settings, so an interrupted
sweep loses at most the trainings in flight (which resume from their last
epoch checkpoint).

``--jobs N`` trains N models at once in local processes (joblib), each
single-threaded (default: one per CPU; ``--jobs 1`` trains in this process);
``--scheduler ADDRESS`` sends them to the workers of a dask.distributed
scheduler instead (``pip install pysbnn[sweep]``). Results do not depend on
the backend or on N.
"""

import argparse
import csv
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One thread per training, set before numpy loads (the names of pysbnn.sweep.THREAD_VARS;
# importing pysbnn would load numpy first). Worker processes inherit them and ROOT.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])

from pysbnn import experiment as common  # noqa: E402
from pysbnn import stats  # noqa: E402
from pysbnn.experiment import add_training_arguments, finish_args, train_job  # noqa: E402
from pysbnn.sweep import run_jobs  # noqa: E402

EC = 0.05
NAMES = {"sym": "{-beta, +beta}", "alpha_beta": "{alpha, beta} Eq. 15", "learned": "Learned {alpha, beta}",
         "zero_one": "{0, 1}"}
DEFAULT_GRAD = {"sym": "exact", "alpha_beta": "ste"}
#: Table 1 of the paper (CIFAR-10, width-64 ResNet-18, 300 epochs): Delta in points, by domain.
PAPER_DELTA = {"sym": -2.98, "alpha_beta": -2.47, "learned": -0.09}
PAPER_BASELINE = 88.93
GRIDS = {
    "paper": ["baseline", "sym/exact", "alpha_beta/ste", "learned"],
    # The paper's rows and both gradient treatments: 6 rows x 3 seeds. The tau-scaled penalty
    # is in "full" only: in the pilot it left the small-tau domains unpruned (docs/results.md).
    "default": ["baseline", "sym/exact", "sym/ste", "alpha_beta/ste", "alpha_beta/exact", "learned"],
    "full": ["baseline"] + [f"{d}/{g}{s}" for d in ("sym", "alpha_beta") for g in ("exact", "ste")
                            for s in ("", "/tau")] + ["learned", "learned/tau", "zero_one", "zero_one/tau"],
}
#: --quick: seconds per training.
QUICK = dict(width=4, train_size=512, test_size=256, epochs=1, batch_size=32)
#: (label, row a, row b, claimed sign of Delta_a - Delta_b or None for a factor).
COMPARISONS = [
    ("Claim 1: learned beats Eq. 15 (paper rows)", "learned", "alpha_beta/ste", +1),
    ("Claim 1 with Eq. 15 exact", "learned", "alpha_beta/exact", +1),
    ("Claim 2: Eq. 15 beats {-beta, +beta} (paper rows)", "alpha_beta/ste", "sym/exact", +1),
    ("Claim 2, both straight-through", "alpha_beta/ste", "sym/ste", +1),
    ("Claim 2, both exact", "alpha_beta/exact", "sym/exact", +1),
    ("Claim 2, both with tau-scaled penalty", "alpha_beta/ste/tau", "sym/exact/tau", +1),
    ("Factor: sym exact vs ste", "sym/exact", "sym/ste", None),
    ("Factor: Eq. 15 exact vs ste", "alpha_beta/exact", "alpha_beta/ste", None),
    ("Factor: tau-scaled penalty, sym", "sym/exact/tau", "sym/exact", None),
    ("Factor: tau-scaled penalty, Eq. 15", "alpha_beta/ste/tau", "alpha_beta/ste", None),
]
SEED_COLUMNS = ("row", "domain", "grad", "penalty_scaling", "constraint", "seed", "accuracy", "delta",
                "ones", "push", "xi", "target_epoch", "seconds", "reused")
SUMMARY_COLUMNS = ("row", "domain", "grad", "penalty_scaling", "constraint", "n", "accuracy_mean",
                   "delta_mean", "delta_sd", "delta_low", "delta_high", "ones_mean", "push_mean",
                   "xi_mean", "status", "paper_delta")
#: A 95 % row is "on target" when every seed ends within this many points of EC's ones.
TARGET_TOLERANCE = 1.0


def target_status(ones_percent, ec):
    """``"on target"``, ``"over-pruned"`` or ``"target missed"`` for a row's per-seed ones (%)."""
    if ec is None:
        return ""
    if max(ones_percent) > 100 * ec + TARGET_TOLERANCE:
        return "target missed"
    if min(ones_percent) < 100 * ec - TARGET_TOLERANCE:
        return "over-pruned"
    return "on target"


def parse_row(text):
    """``"alpha_beta/exact/tau"`` -> dict(key, domain spec, ec, scaling); ``"baseline"`` is unconstrained sym."""
    if text == "baseline":
        return dict(key=text, domain="sym", grad="exact", ec=None, scaling="none")
    parts = text.split("/")
    domain, rest = parts[0], parts[1:]
    if domain not in NAMES:
        raise common.ArgumentError(f"unknown row {text!r}: domain must be one of {sorted(NAMES)}")
    grad = rest.pop(0) if rest and rest[0] in ("exact", "ste") else DEFAULT_GRAD.get(domain)
    if grad is not None and domain not in DEFAULT_GRAD:
        raise common.ArgumentError(f"unknown row {text!r}: only sym and alpha_beta take exact/ste")
    scaling = rest.pop(0) if rest and rest[0] == "tau" else "none"
    if rest:
        raise common.ArgumentError(f"unknown row {text!r}: write domain[/exact|/ste][/tau]")
    return dict(key=text, domain=domain, grad=grad, ec=EC, scaling=scaling)


def parse_args(argv):
    p = common.Parser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(p, models_default="OUT/models")
    p.add_argument("--gamma", type=common.gamma_value, default=common.DEFAULTS["gamma_95"],
                   help="gamma of the 95%% runs (default %(default)s; reference code: 0.07)")
    p.add_argument("--seeds", type=common.positive_int, default=3,
                   help="train every row with seeds SEED .. SEED+n-1 (default 3)")
    p.add_argument("--grid", default="default",
                   help=f"{', '.join(GRIDS)} (default: default), or rows like baseline,sym/ste,learned")
    p.add_argument("--jobs", type=common.positive_int, default=os.cpu_count() or 1,
                   help="trainings at once on this machine, one process and one thread each "
                        "(default: one per CPU, %(default)s here)")
    p.add_argument("--scheduler", default=None, help="dask.distributed scheduler address (ignores --jobs)")
    p.add_argument("--out", default=os.path.join("runs", "table1"),
                   help="where the CSV / Markdown / JSON go (default runs/table1/)")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    args.rows = [parse_row(r) for r in GRIDS.get(args.grid, args.grid.split(","))]
    if len({r["key"] for r in args.rows}) != len(args.rows):
        raise common.ArgumentError(f"--grid {args.grid!r} names a row twice")
    return finish_args(args, os.path.join(args.out, "models"))


def make_jobs(args, num_classes, channels):
    """One job per (row, seed), seeds outermost (a cut-short run has whole seeds)."""
    jobs = []
    for seed in range(args.seed, args.seed + args.seeds):
        scale = argparse.Namespace(**dict(vars(args), seed=seed))
        for row in args.rows:
            domain = row["domain"] if row["grad"] is None else {"name": row["domain"], "grad": row["grad"]}
            gamma = 0.0 if row["ec"] is None else args.gamma
            config = common.run_config(scale, domain, row["ec"], gamma, num_classes, channels, row["scaling"])
            data = dict(dataset=args.dataset, data_dir=args.data_dir, train_size=args.train_size,
                        test_size=args.test_size, seed=seed)
            jobs.append(dict(tag=f"{row['key'].replace('/', '-')}-s{seed}", row=row["key"], seed=seed,
                             config=config, data=data, models=args.models, retrain=args.retrain,
                             backend=args.backend))
    return jobs


def run_grid(args, jobs):
    """Train (or reuse) every job; one line per finished job. Returns {(row, seed): info}."""
    results, t0 = {}, time.perf_counter()
    for k, (job, info) in enumerate(run_jobs(train_job, jobs, args.jobs, args.scheduler), start=1):
        results[(job["row"], job["seed"])] = info
        how = "reused" if info["reused"] else "trained"
        print(f"[{k}/{len(jobs)}] {job['row']:<20} seed {job['seed']}: acc {100 * info['acc']:.2f} %  "
              f"ones {100 * info['ones']:.2f} %  push {info['push']:.3g}  xi {info['xi']:+.3f}  "
              f"{info['seconds']:.0f} s ({how}; {time.perf_counter() - t0:.0f} s elapsed)", flush=True)
    return results


def seed_rows(args, results):
    """One dict per (row, seed), Delta in points against the same seed's baseline."""
    out = []
    for row in args.rows:
        for seed in range(args.seed, args.seed + args.seeds):
            info, base = results[(row["key"], seed)], results.get(("baseline", seed))
            delta = None if base is None or row["ec"] is None else 100 * (info["acc"] - base["acc"])
            out.append({"row": row["key"], "domain": row["domain"], "grad": row["grad"] or "",
                        "penalty_scaling": row["scaling"], "constraint": "95%" if row["ec"] else "/",
                        "seed": seed, "accuracy": 100 * info["acc"], "delta": delta,
                        "ones": 100 * info["ones"], "push": info["push"], "xi": info["xi"],
                        "target_epoch": info["target_epoch"], "seconds": info["seconds"],
                        "reused": info["reused"]})
    return out


def summary_rows(args, per_seed):
    out = []
    for row in args.rows:
        mine = [r for r in per_seed if r["row"] == row["key"]]
        mean = lambda k: sum(r[k] for r in mine) / len(mine)   # noqa: E731
        s = stats.summarize([r["delta"] for r in mine]) if mine[0]["delta"] is not None else None
        paper = PAPER_DELTA.get(row["domain"]) if row["ec"] and row["scaling"] == "none" else None
        out.append({k: mine[0][k] for k in ("row", "domain", "grad", "penalty_scaling", "constraint")}
                   | {"n": len(mine), "accuracy_mean": mean("accuracy"), "ones_mean": mean("ones"),
                      "push_mean": mean("push"), "xi_mean": mean("xi"), "paper_delta": paper,
                      "status": target_status([r["ones"] for r in mine], row["ec"]),
                      "delta_mean": s and s.mean, "delta_sd": s and s.sd, "delta_low": s and s.low,
                      "delta_high": s and s.high})
    return out


def comparisons(args, per_seed, summary):
    """The paired tests whose two rows are in the grid: (label, a, b, sign, PairedTest, words).

    A verdict on a row that missed the target says so: its Delta is not one at 95 % sparsity.
    """
    keys = {r["key"] for r in args.rows}
    missed = {r["row"] for r in summary if r["status"] == "target missed"}
    delta = {(r["row"], r["seed"]): r["delta"] for r in per_seed}
    seeds = range(args.seed, args.seed + args.seeds)
    out = []
    for label, a, b, sign in COMPARISONS:
        if a in keys and b in keys and "baseline" in keys:
            t = stats.paired_test([delta[(a, s)] for s in seeds], [delta[(b, s)] for s in seeds])
            if sign is not None:
                words = stats.verdict(t, sign)
            else:
                words = {"reproduced": f"{a} better", "not reproduced": f"{b} better"}.get(
                    stats.verdict(t), "not separable at this scale")
            if missed & {a, b}:
                words += f" ({', '.join(sorted(missed & {a, b}))} missed 95 %)"
            out.append((label, a, b, sign, t, words))
    return out


def fmt(value, spec=".2f", signed=False):
    if value is None or value != value:          # None or NaN
        return "/"
    return format(value, ("+" if signed else "") + spec)


def markdown(args, summary, tests, desc):
    lines = ["| Row | Domain | Gradient | Penalty | Ones | Accuracy | Delta (mean +- sd) | 95 % CI "
             "| push | xi | sparsity | Paper Delta |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        ci = "/" if r["delta_low"] is None else f"[{fmt(r['delta_low'], signed=True)}, {fmt(r['delta_high'], signed=True)}]"
        delta = "/" if r["delta_mean"] is None else f"{fmt(r['delta_mean'], signed=True)} +- {fmt(r['delta_sd'])}"
        name = "Baseline " + NAMES["sym"] if r["row"] == "baseline" else NAMES[r["domain"]]
        lines.append(f"| `{r['row']}` | {name} | {r['grad'] or '/'} | {r['penalty_scaling']} "
                     f"| {r['ones_mean']:.2f} % | {r['accuracy_mean']:.2f} % | {delta} | {ci} "
                     f"| {fmt(r['push_mean'], '.3g')} | {fmt(r['xi_mean'], '+.2f')} | {r['status'] or '/'} "
                     f"| {fmt(r['paper_delta'], signed=True)} |")
    lines += ["", "| Paired test (Delta a - Delta b, points) | a | b | mean | 95 % CI | t | p | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for label, a, b, _, t, words in tests:
        lines.append(f"| {label} | `{a}` | `{b}` | {fmt(t.mean, signed=True)} | [{fmt(t.low, signed=True)}, "
                     f"{fmt(t.high, signed=True)}] | {fmt(t.t)} | {fmt(t.p, '.3f')} | {words} |")
    note = (f"Binarized ResNet-18 width {args.width}, {desc}, {args.epochs} epochs, batch {args.batch_size}, "
            f"gamma {args.gamma:g}, seeds {args.seed}..{args.seed + args.seeds - 1} "
            f"(Delta paired with the same seed's baseline). Paper: CIFAR-10, width 64, 300 epochs, "
            f"baseline {PAPER_BASELINE} %.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def write_csv(path, columns, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r[k] is None else (f"{r[k]:.4f}" if isinstance(r[k], float) else r[k])
                        for k in columns})


def main(argv=None):
    args = parse_args(argv)
    t0, load0 = time.perf_counter(), os.getloadavg()
    xtr, ytr, xte, yte, channels, _, desc = common.load_data(args)
    num_classes = int(max(ytr.max(), yte.max())) + 1
    jobs = make_jobs(args, num_classes, channels)
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{args.jobs} local job(s)"
    print(f"{desc}; ResNet-18 width {args.width}, {args.epochs} epochs, batch {args.batch_size}; "
          f"{len(args.rows)} rows x {args.seeds} seeds = {len(jobs)} trainings on {where}", flush=True)
    results = run_grid(args, jobs)
    per_seed = seed_rows(args, results)
    summary = summary_rows(args, per_seed)
    tests = comparisons(args, per_seed, summary)
    text = markdown(args, summary, tests, desc)
    wall = time.perf_counter() - t0
    print("\nTable 1\n" + text + f"\nwall clock {wall:.0f} s; load average {load0[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "table1.csv"), SEED_COLUMNS, per_seed)
    write_csv(os.path.join(args.out, "table1_summary.csv"), SUMMARY_COLUMNS, summary)
    with open(os.path.join(args.out, "table1.md"), "w") as f:
        f.write(text)
    run = {"args": {k: v for k, v in vars(args).items() if k != "rows"}, "wall_seconds": wall,
           "load_average": [load0[0], os.getloadavg()[0]],
           "tests": [dict(label=c[0], a=c[1], b=c[2], verdict=c[5], **c[4]._asdict()) for c in tests]}
    with open(os.path.join(args.out, "table1_run.json"), "w") as f:
        json.dump(run, f, indent=1)
    print(f"wrote {args.out}/table1.csv, table1_summary.csv, table1.md, table1_run.json")
    return 0


if __name__ == "__main__":
    sys.exit(common.cli(main))
