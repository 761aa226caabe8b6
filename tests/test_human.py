"""Human rating CLI: stdin answers, anonymised seeded order, atomic saves, resume, import."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from metrics.judges.responses import load_prompts
from sweeps.human import (
    HumanInputError,
    human_comparisons,
    human_scores,
    import_ratings,
    load_session,
    new_session,
    rate_interactive,
)

REPO = Path(__file__).resolve().parents[1]
CANDS = ("job_q8_0", "job_q4_K_M", "job_q2_K")


@pytest.fixture
def responses(tmp_path):
    ps = load_prompts("emotional_v1", limit=2)
    data = {
        "prompt_set": ps.to_dict(),
        "candidates": {
            c: {p.id: f"{opening} {p.text.split('.')[0]} sounds hard." for p in ps.prompts}
            for c, opening in zip(CANDS, ("I hear you.", "Oh no.", "Okay."), strict=True)
        },
    }
    path = tmp_path / "responses.json"
    path.write_text(json.dumps(data))
    return data, path


def answers_for(session):
    """One block of answers per candidate: 4 criteria + a comment, in presentation order."""
    lines = []
    for item in session["order"]:
        for label, cand in item["labels"].items():
            k = CANDS.index(cand)  # q8_0 gets 5s, q4 4s, q2 2s
            r = [5, 4, 2][k]
            lines += [str(r), str(r), str(r), str(max(1, r - 1)), f"note {label}"]
    return lines


def by_key(session):
    return {
        (r["prompt_id"], r["candidate"]): (r["scores"], r["comment"]) for r in session["ratings"]
    }


def test_full_session_from_stdin(tmp_path, responses):
    data, _ = responses
    ref = new_session(
        data,
        "alice",
        7,
        {
            "believability": 0.25,
            "connection": 0.3,
            "expressive_strength": 0.25,
            "appropriateness": 0.2,
        },
    )
    out = io.StringIO()
    res = rate_interactive(
        tmp_path / "s.json",
        data,
        "alice",
        seed=7,
        inp=io.StringIO("\n".join(answers_for(ref)) + "\n"),
        out=out,
        width=120,
    )
    assert res["status"] == "complete" and res["remaining"] == 0
    s = load_session(tmp_path / "s.json")
    assert len(s["ratings"]) == 2 * len(CANDS) and all(r["complete"] for r in s["ratings"])
    shown = out.getvalue()
    assert "Response A" in shown and "Response C" in shown and "Oh no." in shown
    assert not any(c in shown for c in CANDS)  # anonymised
    q8 = next(r for r in s["ratings"] if r["candidate"] == "job_q8_0")
    # 0.25*5 + 0.30*5 + 0.25*5 + 0.20*4 = 4.8
    assert q8["weighted"] == pytest.approx(4.8)
    assert q8["comment"].startswith("note ")
    scores = human_scores([s])
    assert scores["job_q8_0"]["score"] == pytest.approx((4.8 - 1) / 4)
    # q2: 0.8*2 + 0.2*1 = 1.8
    assert scores["job_q2_K"]["score"] == pytest.approx((1.8 - 1) / 4)
    comps = human_comparisons([s])
    assert len(comps) == 2 * 3  # 2 prompts x 3 pairs
    assert ("job_q4_K_M", "job_q8_0", 0.0) in comps


def test_order_is_seeded_and_anonymised(responses):
    data, _ = responses
    crit = {"believability": 1.0}
    orders = {json.dumps(new_session(data, "x", seed, crit)["order"]) for seed in range(8)}
    assert len(orders) > 1  # the seed changes the presentation
    assert new_session(data, "x", 3, crit)["order"] == new_session(data, "x", 3, crit)["order"]


def test_invalid_answers_are_reasked(tmp_path, responses):
    data, _ = responses
    out = io.StringIO()
    res = rate_interactive(
        tmp_path / "s.json", data, "bob", inp=io.StringIO("7\nx\n3\nq\n"), out=out, width=60
    )
    assert res["status"] == "interrupted"
    assert out.getvalue().count("whole number from 1 to 5") == 2
    s = load_session(tmp_path / "s.json")
    assert [r["scores"] for r in s["ratings"]] == [{"believability": 3}]


def test_resume_after_interruption_via_cli(tmp_path, responses):
    data, rpath = responses
    session = tmp_path / "ratings" / "carol.json"
    ref = new_session(
        data,
        "carol",
        1,
        {
            "believability": 0.25,
            "connection": 0.3,
            "expressive_strength": 0.25,
            "appropriateness": 0.2,
        },
    )
    lines = answers_for(ref)
    cmd = [
        sys.executable,
        "-m",
        "sweeps.human",
        "rate",
        "--responses",
        str(rpath),
        "--session",
        str(session),
        "--rater",
        "carol",
        "--seed",
        "1",
    ]
    # first run: input ends in the middle of the second candidate (like a closed terminal)
    first = subprocess.run(
        cmd, input="\n".join(lines[:7]) + "\n", text=True, capture_output=True, cwd=REPO, timeout=60
    )
    assert first.returncode == 0, first.stderr
    partial = load_session(session)
    assert sum(r["complete"] for r in partial["ratings"]) == 1
    assert len(partial["ratings"][1]["scores"]) == 2  # every answer was saved
    second = subprocess.run(
        cmd, input="\n".join(lines[7:]) + "\n", text=True, capture_output=True, cwd=REPO, timeout=60
    )
    assert second.returncode == 0, second.stderr
    assert "Resuming" in second.stdout
    # identical to a session answered in one go
    once = tmp_path / "once.json"
    rate_interactive(
        once, data, "carol", seed=1, inp=io.StringIO("\n".join(lines) + "\n"), out=io.StringIO()
    )
    assert by_key(load_session(session)) == by_key(load_session(once))


def test_import_csv_and_jsonl(tmp_path, responses):
    data, _ = responses
    pid = data["prompt_set"]["prompts"][0]["id"]
    csv_path = tmp_path / "panel.csv"
    csv_path.write_text(
        "rater,prompt_id,candidate,believability,connection,expressive_strength,appropriateness,comment\n"
        f"dan,{pid},job_q8_0,5,5,4,4,warm\n"
        f"dan,{pid},job_q2_K,2,1,2,3,\n"
    )
    session = tmp_path / "panel.json"
    res = import_ratings(csv_path, session, data)
    assert res == {"imported": 2, "new": 2, "replaced": 0, "session": str(session)}
    jl = tmp_path / "more.jsonl"
    jl.write_text(
        json.dumps(
            {
                "rater": "dan",
                "prompt_id": pid,
                "candidate": "job_q2_K",
                "scores": {
                    "believability": 3,
                    "connection": 3,
                    "expressive_strength": 3,
                    "appropriateness": 3,
                },
            }
        )
        + "\n"
    )
    assert import_ratings(jl, session, data)["replaced"] == 1
    s = load_session(session)
    scores = human_scores([s])
    assert scores["job_q2_K"]["score"] == pytest.approx(0.5)
    # 0.25*5 + 0.3*5 + 0.25*4 + 0.2*4 = 4.55
    assert scores["job_q8_0"]["score"] == pytest.approx((4.55 - 1) / 4)
    assert human_comparisons([s]) == [("job_q2_K", "job_q8_0", 0.0)]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("dan,{pid},job_q8,5,5,4,4", "did you mean 'job_q8_0'"),
        ("dan,{pid},job_q8_0,6,5,4,4", "believability='6' must be a whole number from 1 to 5"),
        ("dan,{pid},job_q8_0,5,,4,4", "missing field 'connection'"),
        ("dan,nope,job_q8_0,5,5,4,4", "unknown prompt_id 'nope'"),
    ],
)
def test_import_rejects_bad_rows(tmp_path, responses, row, match):
    data, _ = responses
    pid = data["prompt_set"]["prompts"][0]["id"]
    p = tmp_path / "bad.csv"
    p.write_text(
        "rater,prompt_id,candidate,believability,connection,expressive_strength,"
        "appropriateness\n" + row.format(pid=pid) + "\n"
    )
    with pytest.raises(HumanInputError, match=match):
        import_ratings(p, tmp_path / "s.json", data)
    assert not (tmp_path / "s.json").exists()
