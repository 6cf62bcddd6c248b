"""Voting: majority, the cascade's equivalence to asking everyone, abstentions, the answer cache."""
from __future__ import annotations

import hashlib
import itertools
import threading

import numpy as np
import pandas as pd
import pytest

from data_manifests import RunLayout, read_manifest
from tasks.config import ModelRef, VoteConfig
from tasks.vote.judge_cache import JudgeCache, is_final
from tasks.vote.judges import JUDGES, NO_MASS, Judge, JudgeOptions, JudgeRequest, JudgeResult, make_judge
from tasks.vote.stage import (
    ABSTAIN, JUDGE_ERROR, NO, RETRY, SKIPPED, UNDECIDED, YES, CallStats, VoteMeta, VoteStage, ask_next, outcome,
    read_vote_meta, run_panel, tally, tally_matrix, vote_shard, write_votes,
)

ANSWERS = (YES, NO, ABSTAIN, RETRY)


# --- majority and cascade -----------------------------------------------------------------------

def test_majority_of_three():
    assert tally([YES, YES, NO]).decision is True
    assert tally([NO, YES, NO]).decision is False
    assert tally([YES, YES, SKIPPED]) == tally([YES, YES, SKIPPED])
    v = tally([YES, NO, YES])
    assert (v.decision, v.reason, v.n_yes, v.n_votes) == (True, None, 2, 3)
    # one valid vote never decides; two final abstentions make it certain
    assert tally([YES, ABSTAIN, ABSTAIN]).reason == JUDGE_ERROR
    assert tally([YES, NO, ABSTAIN]).reason == JUDGE_ERROR  # a tie with a broken judge
    assert tally([YES, NO, RETRY]).reason == UNDECIDED      # the retried judge may break the tie
    assert tally([YES, ABSTAIN, RETRY]).reason == UNDECIDED
    assert tally([ABSTAIN, ABSTAIN, RETRY]).reason == JUDGE_ERROR  # even a yes from it is one vote


def cascade(full: tuple[int, ...]) -> tuple[int, ...]:
    """What the cascade sees: judges asked in order while `ask_next` says so, the rest SKIPPED."""
    seen = [SKIPPED] * len(full)
    for j in range(len(full)):
        if not ask_next(seen):
            break
        seen[j] = full[j]
    return tuple(seen)


@pytest.mark.parametrize("n_judges", [1, 2, 3, 4, 5])
def test_cascade_equals_asking_everyone_for_every_pattern(n_judges):
    asked_total = 0
    patterns = list(itertools.product(ANSWERS, repeat=n_judges))
    for full in patterns:
        seen = cascade(full)
        a, b = tally(list(full)), tally(list(seen))
        assert (a.decision, a.reason) == (b.decision, b.reason), (full, seen)
        # the cascade only skips; what it saw is what the judges said
        assert all(s in (SKIPPED, f) for s, f in zip(seen, full))
        asked_total += sum(s != SKIPPED for s in seen)
    if n_judges == 3:  # two always asked, the third only when they do not decide alone
        undecided_after_two = sum(1 for f in patterns if tally([f[0], f[1], SKIPPED]).reason == UNDECIDED
                                  and tally([f[0], f[1], SKIPPED]).decision is None)
        assert asked_total == 2 * len(patterns) + undecided_after_two


def test_vectorised_tally_matches_tally():
    patterns = list(itertools.product((SKIPPED,) + ANSWERS, repeat=3))
    got = tally_matrix(np.array(patterns))
    for i, p in enumerate(patterns):
        v = tally(list(p))
        assert got["decision"][i] == (-1 if v.decision is None else int(v.decision))
        assert got["reason"][i] == v.reason
        assert (got["n_yes"][i], got["n_votes"][i]) == (v.n_yes, v.n_votes)


def test_outcome_from_scores_and_errors():
    assert outcome(0.5, None, 0.5) == YES and outcome(0.49, None, 0.5) == NO
    assert outcome(None, NO_MASS + " (top tokens: 'x')", 0.5) == ABSTAIN
    assert outcome(None, "timeout after 60 s", 0.5) == RETRY
    assert outcome(0.9, None, 0.5, asked=False) == SKIPPED
    assert is_final(JudgeResult(0.3)) and is_final(JudgeResult(None, NO_MASS))
    assert not is_final(JudgeResult.failed("HTTP 500: boom (after 3 attempts)"))


# --- a real in-process judge backend that counts its calls ---------------------------------------

CALLS: dict[str, int] = {}
CALLS_LOCK = threading.Lock()
# model_id -> {cand_id: JudgeResult} forced answers (faults); otherwise a deterministic score.
SCRIPT: dict[str, dict[str, JudgeResult]] = {}


def score(model_id: str, ref_id: str, cand_id: str) -> float:
    digest = hashlib.blake2b(f"{model_id}|{ref_id}|{cand_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32


class CountingOptions(JudgeOptions):
    bias: float = 0.0


@JUDGES.register("counting-test")
class CountingJudge(Judge):
    """Scores from a hash of the question (options.bias shifts a judge towards yes); `SCRIPT` injects
    faults. Counts every question it is asked."""

    Options = CountingOptions

    def judge(self, pairs: list[JudgeRequest]) -> list[JudgeResult]:
        with CALLS_LOCK:
            CALLS[self.model_id] = CALLS.get(self.model_id, 0) + len(pairs)
        bias = self.options.bias
        script = SCRIPT.get(self.model_id, {})
        return [script.get(p.cand_id) or JudgeResult(min(1.0, max(0.0, score(self.model_id, p.ref_id, p.cand_id) + bias)))
                for p in pairs]


def counting_panel(cfg: VoteConfig, biases=(0.0, 0.0, 0.0)) -> list[Judge]:
    return [make_judge(ModelRef(backend="counting-test", name=f"judge_{c}", options={"bias": b}), cfg)
            for c, b in zip("abc", biases)]


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    SCRIPT.clear()
    yield


def items(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "pair_id": [f"{i:032x}" for i in range(n)],
        "ref_id": [f"r{i % 5}" for i in range(n)],
        "ref_path": [f"/refs/{i % 5}.png" for i in range(n)],
        "rainy_path": [f"/cands/{i}.png" for i in range(n)],
        "source": "toy",
    })


def test_cascade_decisions_equal_full_panel_with_fewer_calls():
    data = items(200)
    requests = [JudgeRequest(r.ref_id, r.ref_path, r.pair_id, r.rainy_path) for r in data.itertuples()]
    verdicts = {}
    for cascade_on in (True, False):
        cfg = VoteConfig(cascade=cascade_on, chunk_size=16)
        CALLS.clear()
        answers = run_panel(requests, counting_panel(cfg), cfg, cache=None)
        codes = [[outcome(r.p_real, r.error, cfg.threshold) if r else SKIPPED for r in row] for row in answers]
        verdicts[cascade_on] = [(v.decision, v.reason) for v in map(tally, codes)]
        verdicts[f"calls{cascade_on}"] = dict(CALLS)
    assert verdicts[True] == verdicts[False]
    assert verdicts["callsFalse"] == {"judge_a": 200, "judge_b": 200, "judge_c": 200}
    # the first two judges always, the third only where they do not agree
    assert verdicts["callsTrue"]["judge_a"] == verdicts["callsTrue"]["judge_b"] == 200
    assert 0 < verdicts["callsTrue"]["judge_c"] < 200


def test_cache_hits_on_rerun_and_transient_failures_retried(tmp_path):
    cfg = VoteConfig(chunk_size=7)
    data = items(40)
    transient = data["pair_id"][3]
    no_mass = data["pair_id"][5]
    SCRIPT["judge_a"] = {transient: JudgeResult.failed("timeout after 60 s (after 3 attempts)"),
                         no_mass: JudgeResult(None, NO_MASS)}
    SCRIPT["judge_b"] = {transient: JudgeResult.failed("HTTP 503: busy (after 3 attempts)"),
                         no_mass: JudgeResult(None, NO_MASS)}
    with JudgeCache(tmp_path) as cache:
        stats = CallStats()
        rows, rejects = vote_shard(data, counting_panel(cfg), cfg, cache, stats)
        first = dict(CALLS)
        # two transient abstentions: no majority possible now, retried later; two no-mass answers:
        # final, so the pair is decided by... nobody (judge_error, decided in select), not a reject here.
        assert [r["item_id"] for r in rejects] == [transient]
        assert rejects[0]["reason"] == UNDECIDED and "timeout" in rejects[0]["detail"]
        assert {r["judge"] for r in rows if r["pair_id"] == no_mass} == {"judge_a", "judge_b"}
        assert all(r["vote"] is None and r["error"].startswith(NO_MASS) for r in rows if r["pair_id"] == no_mass)
        assert sum(stats.called.values()) == sum(first.values())

        # rerun: the servers recovered; only the transient failure is asked again
        SCRIPT.clear()
        CALLS.clear()
        stats = CallStats()
        rows2, rejects2 = vote_shard(data, counting_panel(cfg), cfg, cache, stats)
        assert rejects2 == []
        assert CALLS == {"judge_a": 1, "judge_b": 1}  # judge_c answered it before: cached
        assert sum(stats.cached.values()) == sum(stats.needed.values()) - sum(CALLS.values())

        # a third run asks nothing at all
        CALLS.clear()
        rows3, _ = vote_shard(data, counting_panel(cfg), cfg, cache, CallStats())
        assert CALLS == {}
        key = lambda rs: sorted((r["pair_id"], r["judge"], r["p_real"], r["vote"], r["error"]) for r in rs)  # noqa: E731
        assert key(rows3) == key(rows2)
    with JudgeCache(tmp_path) as reopened:  # answers persist across processes/opens
        assert reopened.count("judge_a") == 40


def test_each_question_is_cached_under_its_own_version_so_new_wording_reasks_only_its_type(tmp_path, monkeypatch):
    from tasks.vote.judges import prompt

    cfg = VoteConfig(cascade=False)
    data = items(12).assign(rain_type=["day_streak", "snow", "night_drop"] * 4)
    with JudgeCache(tmp_path) as cache:
        rows, _ = vote_shard(data, counting_panel(cfg), cfg, cache, CallStats())
        versions = {r["pair_id"]: r["prompt_version"] for r in rows}
        by_type = dict(zip(data["rain_type"], data["pair_id"]))
        assert versions[by_type["day_streak"]] == versions[by_type["night_drop"]] == prompt.PROMPT_VERSION
        assert versions[by_type["snow"]].startswith(prompt.PROMPT_VERSION + "+snow:")
        # new words for snow: only the snow questions are asked again, every rain answer comes from the cache
        monkeypatch.setitem(prompt.DEGRADATION_WORDING, "snow", prompt.Wording("taken in a blizzard", "the snow"))
        CALLS.clear()
        rows2, _ = vote_shard(data, counting_panel(cfg), cfg, cache, CallStats())
        assert CALLS == {"judge_a": 4, "judge_b": 4, "judge_c": 4}
        assert {r["prompt_version"] for r in rows2} - {r["prompt_version"] for r in rows} == {
            prompt.question_version("snow")}


def test_cache_is_keyed_by_model_prompt_reference_and_candidate(tmp_path):
    with JudgeCache(tmp_path) as cache:
        cache.put_many("m", "v1", [(("r", "c"), JudgeResult(0.25, p_yes=0.1, p_no=0.3)),
                                   (("r", "d"), JudgeResult.failed("timeout"))])
        assert cache.get_many("m", "v1", [("r", "c"), ("r", "d")]) == {("r", "c"): JudgeResult(0.25, None, 0.1, 0.3)}
        assert cache.get_many("m", "v2", [("r", "c")]) == {}
        assert cache.get_many("other", "v1", [("r", "c")]) == {}
        assert cache.get_many("m", "v1", [("r2", "c")]) == {}
        # append-only: a later answer to the same question does not replace the first
        cache.put_many("m", "v1", [(("r", "c"), JudgeResult(0.9))])
        assert cache.get_many("m", "v1", [("r", "c")])[("r", "c")].p_real == 0.25
        many = [(f"r{i}", f"c{i}") for i in range(1000)]
        cache.put_many("m", "v1", [(k, JudgeResult(0.5)) for k in many])
        assert len(cache.get_many("m", "v1", many + [("x", "y")])) == 1000


def test_votes_shard_records_its_threshold_and_goes_stale(tmp_path):
    from tasks.config import RunConfig
    from tasks.stage import digest

    run = RunLayout.at(tmp_path).create(2)
    meta = VoteMeta(("judge_a", "judge_b", "judge_c"), 0.5, True)
    row = {"pair_id": "p" * 32, "ref_id": "r", "judge": "judge_a", "judge_model": "judge_a", "p_real": 0.7, "vote": True, "error": None,
           "prompt_version": meta.prompt_version}
    write_votes(run, 0, [row], [], meta)
    assert read_vote_meta(run.manifest("votes") / "part-00000.parquet") == meta
    assert read_manifest(run.manifest("votes"), "votes")["p_real"].tolist() == pytest.approx([0.7])
    # threshold, cascade and panel are in the stage fingerprint: another value redoes the shards
    judges = [ModelRef(backend="transformers", name=n) for n in meta.panel]

    def fingerprint(**vote):
        cfg = RunConfig(models={"judges": judges}, vote=VoteConfig(**vote))
        return digest(VoteStage(cfg, 2).fingerprint_payload({"retrieve": "g"}))

    assert fingerprint(threshold=0.5) == fingerprint(threshold=0.5, timeout_s=5, chunk_size=8)  # how, not what
    assert len({fingerprint(threshold=0.5), fingerprint(threshold=0.6), fingerprint(cascade=False),
                fingerprint(reference=False), fingerprint(enabled=False)}) == 5
    # voting off: no panel in the fingerprint, so the judges may change without redoing anything
    cfg = RunConfig(models={"judges": judges[:1]}, vote=VoteConfig(enabled=False))
    assert digest(VoteStage(cfg, 2).fingerprint_payload({"retrieve": "g"})) == fingerprint(enabled=False)
    # a shard holding a pair to retry is never done
    stage = VoteStage(RunConfig(models={"judges": judges}), 2)
    assert stage.shard_redo_reason(run, 0) is None
    write_votes(run, 1, [], [{"item_id": "q" * 32, "stage": "vote", "reason": UNDECIDED, "detail": "x",
                              "source": "toy", "path": None}], meta)
    assert stage.shard_redo_reason(run, 1) == "pairs to retry"


def test_cache_opens_from_many_threads_at_once(tmp_path):
    """Parallel vote shards open the run's cache together; none may fail with 'database is locked'."""
    import threading

    from tasks.vote.judge_cache import JudgeCache

    errors = []

    def open_many():
        try:
            for _ in range(10):
                JudgeCache(tmp_path).close()
        except Exception as exc:  # noqa: BLE001 - the test collects them
            errors.append(exc)

    threads = [threading.Thread(target=open_many) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
