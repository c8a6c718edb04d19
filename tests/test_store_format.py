"""The run store's array format: a run's many small arrays are packed into one flat array per dtype, every
array comes back equal (dtype and shape too), and runs stored in the earlier format (one npz member per
array) still read."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from core.engine.config import RunConfig
from core.engine.events import _strip_arrays, decode_events, encode_events
from core.serve.store import RunStore, _part_names
from helpers import train_events

SMALL = RunConfig(dataset="digits", hidden=(16, 16), epochs=2, log_every=5)


def arrays_of(events) -> list[np.ndarray]:
    found: list[np.ndarray] = []
    for event in events:
        _strip_arrays(event.to_dict(), found)
    return found


def earlier_format(events) -> tuple[str, bytes]:
    """How runs were stored before packing: each array its own npz member ``a<i>``, no index."""
    arrays: list[np.ndarray] = []
    payload = {"events": [_strip_arrays(e.to_dict(), arrays) for e in events], "extra": {}}
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"a{i}": a for i, a in enumerate(arrays)})
    return json.dumps(payload, allow_nan=True), buf.getvalue()


def assert_same_events(back, events) -> None:
    assert [type(e) for e in back] == [type(e) for e in events]
    mine, theirs = arrays_of(back), arrays_of(events)
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    # everything else, arrays aside, is the same JSON
    assert [_strip_arrays(e.to_dict(), []) for e in back] == [_strip_arrays(e.to_dict(), []) for e in events]


def test_a_run_packs_into_one_member_per_dtype_and_comes_back_equal():
    _, events = train_events(SMALL)
    arrays = arrays_of(events)
    assert len(arrays) > 20  # heatmaps, weights, images: many small arrays
    text, blob = encode_events(events)
    members = zipfile.ZipFile(io.BytesIO(blob)).namelist()
    assert len(members) == len({a.dtype.str for a in arrays})
    back, _ = decode_events(text, blob)
    assert_same_events(back, events)


def test_a_run_stored_in_the_earlier_format_still_reads(tmp_path):
    _, events = train_events(SMALL)
    store = RunStore(tmp_path / "runs")
    key = SMALL.key()
    store.put(key, SMALL.to_dict(), events)
    text, blob = earlier_format(events)
    assert "packed" not in json.loads(text)
    events_name, arrays_name = _part_names(key, store.meta(key)["version"])
    store._cache.set(events_name, text)  # the record as an earlier version of the store wrote it
    store._cache.set(arrays_name, blob)
    back = RunStore(tmp_path / "runs").get(key)
    assert back is not None
    assert_same_events(back.events, events)


def test_a_packed_index_pointing_outside_its_data_is_refused():
    _, events = train_events(SMALL.replace(epochs=1))
    text, blob = encode_events(events)
    payload = json.loads(text)
    payload["packed"]["arrays"][0][1] = 10**9  # an offset past the end
    with pytest.raises(ValueError, match="outside its packed data"):
        decode_events(json.dumps(payload), blob)
