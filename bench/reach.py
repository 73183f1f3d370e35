"""Helpers of bench/reach.sh (see there). Subcommands:

  esco-records OUT             records_150k.csv followed by every ESCO occupation label
                               (preferred and alternative) as a title-only record of its code
  seed-average TRUTH PRED...   test accuracy of each `isco-dag predict` output (top_k = 10) and of
                               the sum of their alternatives' confidences, 2…n files
  prior-shift TRAIN VAL_TRUTH VAL_PRED TEST_TRUTH TEST_PRED
                               accuracy and macro-F1 when each `isco-dag predict` output's
                               alternatives (top_k = 15) are re-ranked by confidence / prior^tau,
                               the prior being each code's share of the training split
  clean-errors TRAIN TEST TEST_PRED
                               the test records the truth file marks correctly labelled, by
                               whether they have duties and whether their title is in the
                               training split: rows, errors, accuracy of the prediction; and
                               its accuracy and macro-F1 beside those of the true codes
  near-titles TRAIN            ilo_titles_dev titles whose nearest distinct training title
                               (all-MiniLM-L6-v2 cosine) is close: how often that title's records
                               carry the ILO index's code (needs sentence-transformers)
  head-word-inputs TRAIN VAL OUT
                               OUT/head-{val,ilo}-{title,last}.csv: the validation titles the
                               training split lacks and ilo_titles_dev's, whole and their last word
  head-word OUT                top-1 and top-3 of log p(title) + w log p(last word) over the
                               `isco-dag predict` outputs (top_k = 10) of those files
"""
import collections
import sys

import numpy as np
import pandas as pd

DATA = "../shared/data"


def norm(s):
    return " ".join(str(s).lower().split())


def esco_records(out):
    r = pd.read_csv(f"{DATA}/records_150k.csv", dtype=str, keep_default_na=False)
    e = pd.read_csv(f"{DATA}/esco_occupations.csv", dtype=str, keep_default_na=False)
    rows = []
    for x in e.itertuples():
        for label in [x.preferred_label] + [a for a in x.alt_labels.split("|") if a]:
            label = " ".join(label.split())
            if label:
                rows.append((label, "", x.isco_code.zfill(4)))
    extra = pd.DataFrame(rows, columns=r.columns)
    pd.concat([r, extra]).to_csv(out, index=False)
    print(f"{len(r)} records + {len(extra)} ESCO labels -> {out}")


def seed_average(truth, preds):
    y = pd.read_parquet(truth).isco_code.astype(str).str.zfill(4).values
    tables = [pd.read_parquet(p) for p in preds]
    for p, t in zip(preds, tables):
        print(f"{p}: {(t.alt_1_code.astype(str).values == y).mean():.4f}")
    k = max(int(c.split("_")[1]) for c in tables[0].columns if c.startswith("alt_") and c.endswith("_code"))
    for n in range(2, len(tables) + 1):
        right = 0
        for i in range(len(y)):
            s = collections.Counter()
            for t in tables[:n]:
                for j in range(1, k + 1):
                    c = t[f"alt_{j}_code"].iat[i]
                    if c:
                        s[str(c)] += float(t[f"alt_{j}_confidence"].iat[i])
            right += s.most_common(1)[0][0] == y[i]
        print(f"{n} networks averaged: {right / len(y):.4f}")


def prior_shift(train, val_truth, val_pred, test_truth, test_pred):
    from sklearn.metrics import f1_score

    prior = pd.read_parquet(train).isco_code.astype(str).value_counts(normalize=True)

    def load(truth, pred):
        y = pd.read_parquet(truth).isco_code.astype(str).values
        t = pd.read_parquet(pred)
        k = max(int(c.split("_")[1]) for c in t.columns if c.startswith("alt_") and c.endswith("_code"))
        codes = np.stack([t[f"alt_{j}_code"].astype(str).values for j in range(1, k + 1)], 1)
        conf = np.stack([t[f"alt_{j}_confidence"].values for j in range(1, k + 1)], 1)
        return codes, conf, y

    def score(codes, conf, y, tau):
        p = np.vectorize(lambda c: prior.get(c, 1e-6))(codes)
        s = np.where(codes == "", -1.0, conf / np.power(p, tau))
        pred = codes[np.arange(len(codes)), s.argmax(1)]
        return (pred == y).mean(), f1_score(y, pred, average="macro")

    val, test = load(val_truth, val_pred), load(test_truth, test_pred)
    print("| tau | validation accuracy | validation macro-F1 | test accuracy | test macro-F1 |")
    print("|---|---|---|---|---|")
    for tau in [0.0, 0.05, 0.1, 0.2, 0.3, 0.5]:
        print("| %.2f | %.4f | %.4f | %.4f | %.4f |" % ((tau,) + score(*val, tau) + score(*test, tau)))


def clean_errors(train, test, pred):
    truth = pd.read_csv(f"{DATA}/records_150k_truth.csv")
    t = pd.read_parquet(test).merge(truth, on="row", how="left")
    p = pd.read_parquet(pred)
    t["pred"] = p.alt_1_code.astype(str).values
    titles = set(pd.read_parquet(train).job_title.map(norm))
    t["duties"] = np.where(t.duties_description.fillna("").str.strip() == "", "no duties", "duties")
    t["title"] = np.where(t.job_title.map(norm).isin(titles), "title in training", "title not in training")
    c = t[t.label_is_noise == 0]
    print(f"test records: {len(t)}; marked mislabelled: {(t.label_is_noise == 1).sum()}; "
          f"correctly labelled: {len(c)}, coded wrong: {(c.pred != c.isco_code).sum()}")
    from sklearn.metrics import f1_score

    y, z = t.isco_code.astype(str), t.true_isco_code.astype(str).str.zfill(4)
    only_noise = sorted(set(y) - set(c.isco_code.astype(str)))
    print(f"codes among the given labels: {y.nunique()}, {len(only_noise)} of them only on "
          f"records the truth file marks mislabelled")
    print("| coder | accuracy | macro-F1 | macro-F1 over the codes a right label carries |")
    print("|---|---|---|---|")
    right = sorted(set(c.isco_code.astype(str)))
    for name, pred in [("the ensemble", t.pred), ("every record's true code", z)]:
        print(f"| {name} | {(pred == y).mean():.4f} | {f1_score(y, pred, average='macro'):.4f} | "
              f"{f1_score(y, pred, labels=right, average='macro'):.4f} |")
    print("| records | title | rows | coded wrong | accuracy |")
    print("|---|---|---|---|---|")
    for (d, ti), g in c.groupby(["duties", "title"]):
        wrong = (g.pred != g.isco_code).sum()
        print(f"| {d} | {ti} | {len(g)} | {wrong} | {1 - wrong / len(g):.4f} |")


def near_titles(train):
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer("models/pretrained/all-MiniLM-L6-v2", device="cpu")
    tr = pd.read_parquet(train)
    tr["t"] = tr.job_title.map(norm)
    tr["code"] = tr.isco_code.astype(str).str.zfill(4)
    # per distinct title, its codes by how many records carry them, most first
    counts = {}
    for (t, c), n in tr.groupby(["t", "code"]).size().sort_values(ascending=False).items():
        counts.setdefault(t, {})[c] = n
    titles = sorted(counts)
    ilo = pd.read_csv(f"{DATA}/ilo_titles_dev.csv", dtype=str)
    y = ilo.isco_code.str.zfill(4).values
    T = m.encode(titles, batch_size=256, normalize_embeddings=True)
    Q = m.encode(ilo.job_title.map(norm).tolist(), batch_size=256, normalize_embeddings=True)
    S = Q @ T.T
    j, s = S.argmax(1), S.max(1)
    print("| nearest-title cosine | records of that title | ILO titles | records' majority code = ILO code | ILO code among the records |")
    print("|---|---|---|---|---|")
    for lo in (0.9, 0.95):
        for least in (1, 3, 5):
            sel = [i for i in np.where(s >= lo)[0] if sum(counts[titles[j[i]]].values()) >= least]
            major = np.mean([next(iter(counts[titles[j[i]]])) == y[i] for i in sel])
            among = np.mean([y[i] in counts[titles[j[i]]] for i in sel])
            print(f"| ≥ {lo} | ≥ {least} | {len(sel)} | {major:.3f} | {among:.3f} |")
    for i in np.where(s >= 0.95)[0]:
        c = counts[titles[j[i]]]
        if next(iter(c)) != y[i] and sum(c.values()) >= 3:
            print(f"  {ilo.job_title[i]!r} {y[i]}: nearest {titles[j[i]]!r} ({s[i]:.3f}) {c}")


def last_word(title):
    words = str(title).split()
    return words[-1] if words else ""


def head_word_inputs(train, val, out):
    seen = set(pd.read_parquet(train).job_title.map(norm))
    v = pd.read_parquet(val)
    v = v[~v.job_title.map(norm).isin(seen)].drop_duplicates("job_title")
    ilo = pd.read_csv(f"{DATA}/ilo_titles_dev.csv", dtype=str, keep_default_na=False)
    for name, t in [("val", v), ("ilo", ilo)]:
        t = t[["job_title", "isco_code"]]
        t.to_csv(f"{out}/head-{name}-title.csv", index=False)
        t.assign(job_title=t.job_title.map(last_word)).to_csv(f"{out}/head-{name}-last.csv", index=False)
        print(f"{name}: {len(t)} titles")


def head_word(out, floor=1e-4):
    def alternatives(path):
        t = pd.read_parquet(path)
        k = max(int(c.split("_")[1]) for c in t.columns if c.startswith("alt_") and c.endswith("_code"))
        return [
            {str(c): max(float(p), 1e-6) for j in range(1, k + 1)
             for c, p in [(t[f"alt_{j}_code"].iat[i], t[f"alt_{j}_confidence"].iat[i])] if c}
            for i in range(len(t))
        ]

    sets = {}
    for name in ["val", "ilo"]:
        y = pd.read_csv(f"{out}/head-{name}-title.csv", dtype=str).isco_code.values
        sets[name] = (y, alternatives(f"{out}/head-{name}-title.parquet"),
                      alternatives(f"{out}/head-{name}-last.parquet"))

    def score(name, w):
        y, whole, last = sets[name]
        top1 = top3 = 0
        for truth, a, b in zip(y, whole, last):
            s = {c: np.log(a.get(c, floor)) + w * np.log(b.get(c, floor)) for c in set(a) | set(b)}
            ranked = sorted(s, key=s.get, reverse=True)
            top1 += ranked[0] == truth
            top3 += truth in ranked[:3]
        return top1 / len(y), top3 / len(y)

    print("| w | validation titles: top-1 (top-3) | ilo_titles_dev: top-1 (top-3) |")
    print("|---|---|---|")
    for w in [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]:
        print("| %.1f | %.4f (%.4f) | %.4f (%.4f) |" % ((w,) + score("val", w) + score("ilo", w)))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"esco-records": lambda: esco_records(*args),
     "seed-average": lambda: seed_average(args[0], args[1:]),
     "prior-shift": lambda: prior_shift(*args),
     "clean-errors": lambda: clean_errors(*args),
     "near-titles": lambda: near_titles(*args),
     "head-word-inputs": lambda: head_word_inputs(*args),
     "head-word": lambda: head_word(*args)}[cmd]()
