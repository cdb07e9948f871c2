"""Progress of long stages: a bar on a terminal (drawn below the log lines), nothing but the
log lines elsewhere; real fits on the session cluster."""

from __future__ import annotations

import io
import logging

import pandas as pd
import pytest
from helpers import random_ratings

import dmf
from dmf import progress
from dmf.progress import ProgressHandler

CLEAR = "\r\x1b[K"


class Terminal(io.StringIO):
    """A text stream that says it is a terminal (what a bar needs); the text stays readable."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal():
    stream = Terminal()
    handler = ProgressHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    dmf_logger = logging.getLogger("dmf")
    dmf_logger.addHandler(handler)
    yield stream
    dmf_logger.removeHandler(handler)
    handler.close()


def test_bar_stays_below_log_lines_and_is_cleared_at_the_end():
    stream = Terminal()
    handler = ProgressHandler(stream, width=10)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("dmf.test_progress_unit")
    log.addHandler(handler)
    try:
        progress.advance("fit", 0, 4, "epochs")
        log.warning("epoch 1 done")
        progress.advance("fit", 2, 4, "epochs")
        progress.advance("fit", 4, 4, "epochs")
    finally:
        log.removeHandler(handler)
        handler.close()
    text = stream.getvalue()
    empty = "fit [..........] 0/4 epochs 0 s"
    half = "fit [#####.....] 2/4 epochs 0 s"
    # bar; cleared for the log line, which ends in a newline; bar again below it; next state; cleared
    assert text == f"\r{empty}\x1b[K{CLEAR}epoch 1 done\n{empty}\r{half}\x1b[K{CLEAR}"
    assert not progress.live()  # a closed handler draws nothing


def test_no_bar_without_a_terminal():
    stream = io.StringIO()
    handler = ProgressHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("dmf.test_progress_plain")
    log.addHandler(handler)
    try:
        assert not progress.live()
        progress.advance("fit", 1, 4, "epochs")
        log.warning("epoch 1 done")
    finally:
        log.removeHandler(handler)
        handler.close()
    assert stream.getvalue() == "epoch 1 done\n"


def test_fit_and_evaluation_on_a_terminal(client, terminal, tmp_path):
    frame = random_ratings(80, 50, 0.3, seed=5)
    frame.to_parquet(tmp_path / "ratings.parquet")
    ratings = dmf.read_ratings(tmp_path / "ratings.parquet")  # ingest through the scheduler's progress feed
    assert len(ratings.compute()) == len(frame)
    model = dmf.ALS(rank=3, max_iter=3, seed=1).fit(ratings, client=client)
    totals = dmf.error_totals(model, frame, client=client)
    assert totals["count"] == len(frame)
    assert totals["rmse"] == pytest.approx(model.history_[-1]["train_rmse"], rel=1e-4)
    text = terminal.getvalue()
    for epoch in range(3):
        assert "fit [" in text and f"] {epoch}/3 epochs" in text
    lines = text.replace(CLEAR, "\n").split("\n")
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1", "2", "3"]  # each log line on a line of its own
    assert text.endswith(CLEAR) or text.endswith("\n")  # no bar left behind
    assert not any(line.startswith("fit [") and line.endswith("3/3 epochs") for line in lines)


def test_verbose_fit_without_a_terminal_prints_one_line_per_epoch(client, capfd):
    frame = random_ratings(40, 30, 0.3, seed=6)
    dmf.ALS(rank=2, max_iter=2, seed=1).fit(frame, client=client, verbose=True)
    err = capfd.readouterr().err
    epochs = [line for line in err.splitlines() if " epoch " in line and "train_rmse=" in line]
    assert len(epochs) == 2 and "\r" not in err
    assert isinstance(frame, pd.DataFrame)
