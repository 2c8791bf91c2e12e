"""Planning an input into shards and reading one shard: every row lands in exactly one shard,
in order, however the CSV is quoted, and a bad value is reported by its column's name."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shipyard.core.errors import InvalidArgument
from shipyard.inference import data
from tests.inference.conftest import make_frame


def read_all(path: Path, plan: data.InputPlan) -> pd.DataFrame:
    parts = [
        data.read_shard(
            str(path),
            plan.format,
            s.start_row,
            s.stop_row,
            s.start_byte,
            s.stop_byte,
            plan.header_end,
            plan.csv_schema,
        ).to_pandas()
        for s in plan.shards
    ]
    return pd.concat(parts, ignore_index=True)


def check_contiguous(plan: data.InputPlan, size: int | None = None) -> None:
    assert plan.shards, plan
    assert plan.shards[0].start_row == 0
    assert plan.shards[-1].stop_row == plan.rows
    for a, b in zip(plan.shards, plan.shards[1:], strict=False):
        assert a.stop_row == b.start_row
        assert a.stop_row > a.start_row
        if size is not None:
            assert a.stop_byte == b.start_byte
    if size is not None:
        assert plan.shards[0].start_byte == plan.header_end
        assert plan.shards[-1].stop_byte == size


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("trailing", [True, False])
def test_csv_shards_split_at_row_boundaries_even_inside_quotes(
    tmp_path: Path, newline: str, trailing: bool
) -> None:
    df = make_frame(1001)
    text = df.to_csv(index=False, lineterminator=newline)
    if not trailing:
        text = text.rstrip("\r\n")
    path = tmp_path / "in.csv"
    path.write_bytes(text.encode())
    plan = data.plan_input(path, "csv", 7)
    assert plan.rows == 1001
    assert len(plan.shards) == 7
    assert plan.columns == list(df.columns)
    check_contiguous(plan, path.stat().st_size)
    got = read_all(path, plan)
    expected = pd.read_csv(path)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    # The newline inside "east\nwest" stayed inside its field.
    assert (got["region"] == df["region"]).all()


def test_parquet_shards_cut_across_row_groups(tmp_path: Path) -> None:
    df = make_frame(1003)
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=100)
    plan = data.plan_input(path, "parquet", 6)
    assert plan.rows == 1003 and len(plan.shards) == 6
    check_contiguous(plan)
    pd.testing.assert_frame_equal(read_all(path, plan), df)


def test_more_shards_than_rows_gives_one_row_each(tmp_path: Path) -> None:
    path = tmp_path / "few.csv"
    make_frame(3).to_csv(path, index=False)
    plan = data.plan_input(path, "csv", 50)
    assert [(s.start_row, s.stop_row) for s in plan.shards] == [(0, 1), (1, 2), (2, 3)]
    parquet = tmp_path / "few.parquet"
    make_frame(3).to_parquet(parquet)
    assert len(data.plan_input(parquet, "parquet", 50).shards) == 3


def test_unreadable_inputs_are_refused_naming_the_input(tmp_path: Path) -> None:
    header_only = tmp_path / "empty.csv"
    header_only.write_text("id,f0\n")
    plan = data.plan_input(header_only, "csv", 2)
    assert plan.rows == 0 and plan.shards == []

    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("id,f0\n1,2\n")
    with pytest.raises(InvalidArgument, match="^input: not a readable Parquet file"):
        data.plan_input(not_parquet, "parquet", 2)

    open_quote = tmp_path / "q.csv"
    open_quote.write_text('id,name\n1,"never closed\n2,b\n')
    with pytest.raises(InvalidArgument, match="^input: .*quoted field"):
        data.plan_input(open_quote, "csv", 2)

    with pytest.raises(InvalidArgument, match="^input_format: cannot tell"):
        data.detect_format("data.xlsx")
    assert data.detect_format("a/b.PARQUET") == "parquet"
    assert data.detect_format("a/b.csv") == "csv"


def test_a_value_that_breaks_the_inferred_type_is_named_by_its_column(tmp_path: Path) -> None:
    # The types are inferred from the first block (1 MB) and pinned for every shard, so a later
    # shard meeting "unknown" in a numeric column says which column, not "column #2".
    n = 60_000
    amounts: list[object] = [1.5] * n
    amounts[n - 5] = "unknown"
    df = pd.DataFrame({"id": range(n), "label": ["x" * 10] * n, "amount": amounts})
    path = tmp_path / "late.csv"
    df.to_csv(path, index=False)
    assert path.stat().st_size > 1_100_000
    plan = data.plan_input(path, "csv", 4)
    last = plan.shards[-1]
    with pytest.raises(InvalidArgument) as info:
        data.read_shard(
            str(path),
            "csv",
            last.start_row,
            last.stop_row,
            last.start_byte,
            last.stop_byte,
            plan.header_end,
            plan.csv_schema,
        )
    assert info.value.details["field"] == "amount"
    assert info.value.message.startswith("amount: ")
    assert "'unknown'" in info.value.message


def test_output_files_appear_whole_or_not_at_all(tmp_path: Path) -> None:
    table = pa.Table.from_pandas(make_frame(10), preserve_index=False)
    size, digest = data.write_atomic(table, tmp_path / "out", "part-00000.parquet", "parquet")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["part-00000.parquet"]  # no temporary file left behind
    from shipyard.core.artifacts import sha256_file

    assert sha256_file(tmp_path / "out" / "part-00000.parquet") == (digest, size)
    with pytest.raises(pa.ArrowException):  # a failing write leaves nothing under either name
        data.write_atomic(pa.table({"a": [[1, 2]]}), tmp_path / "out", "part-00001.csv", "csv")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-00000.parquet"]
