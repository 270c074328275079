"""Runs on object storage: an S3 server (moto's, started by the test) holding a run written by the real
recorder; open_run and the CLI read it through pyarrow.fs."""

from __future__ import annotations

import socket

import polars as pl
import pyarrow.fs as pafs
import pytest
import torch
from polars.testing import assert_frame_equal

import tdlog.analytics as analytics
from tdlog.analytics.verify import verify_run
from tdlog.cli import main
from tdlog.format import is_uri
from tdlog.recorder import Recorder

moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3(tmp_path_factory, monkeypatch_module):
    """An S3 endpoint on localhost with one bucket; yields (filesystem, endpoint)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch_module.setenv(name, value)
    endpoint = f"127.0.0.1:{port}"
    filesystem = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                                   access_key="testing", secret_key="testing", allow_bucket_creation=True)
    filesystem.create_dir("runs")
    yield filesystem, endpoint
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _record(target, epochs: range, **options) -> None:
    """Log random logits of 20 samples for ``epochs`` (registering the samples on a fresh run)."""
    with Recorder(target, num_classes=3, **options) as rec:
        if epochs.start == 0:
            rec.register_samples(torch.arange(20), torch.arange(20) % 3)
        generator = torch.Generator().manual_seed(epochs.start)
        for epoch in epochs:
            rec.log(torch.arange(20), torch.randn(20, 3, generator=generator), torch.arange(20) % 3, epoch=epoch)


def test_a_run_on_s3_reads_as_the_local_run(s3, tmp_path) -> None:
    filesystem, endpoint = s3
    local = tmp_path / "run"
    _record(local, range(0, 3))
    pafs.copy_files(str(local), "runs/exp1", destination_filesystem=filesystem)
    cache = tmp_path / "cache"
    with analytics.open_run("s3://runs/exp1", filesystem=filesystem, cache_dir=cache) as remote, \
            analytics.open_run(local) as here:
        assert_frame_equal(remote.scores(), here.scores())
    samples_file = next((cache / "samples").glob("*.parquet"))
    first_copy = samples_file.stat().st_mtime_ns, sorted(p.name for p in cache.rglob("*.parquet"))

    _record(local, range(3, 5))  # a restart: new write-once files, a new attempt file, run.json rewritten
    uploaded = {f.path.split("runs/exp1/", 1)[1] for f in filesystem.get_file_info(
        pafs.FileSelector("runs/exp1", recursive=True)) if f.type == pafs.FileType.File}
    for path in local.rglob("*"):  # upload what is new or changed, as the recorder (or `aws s3 sync`) does
        name = path.relative_to(local).as_posix()
        if path.is_file() and (name not in uploaded or not name.endswith(".parquet")):
            with filesystem.open_output_stream(f"runs/exp1/{name}") as stream:
                stream.write(path.read_bytes())
    uri = f"s3://runs/exp1?endpoint_override={endpoint}&scheme=http"
    with analytics.open_run(uri, cache_dir=cache) as remote, analytics.open_run(local) as here:
        assert remote.epochs() == [0, 1, 2, 3, 4]
        assert_frame_equal(remote.aum(), here.aum())
    assert samples_file.stat().st_mtime_ns == first_copy[0]  # unchanged files are not fetched again
    assert len(list(cache.rglob("*.parquet"))) > len(first_copy[1])
    assert not list(cache.rglob("*.partial"))


def test_cli_reads_a_uri_and_a_missing_remote_run_is_a_clear_error(s3, tmp_path, capsys) -> None:
    filesystem, endpoint = s3
    _record(tmp_path / "run", range(0, 2))
    pafs.copy_files(str(tmp_path / "run"), "runs/cli", destination_filesystem=filesystem)
    out = tmp_path / "scores.parquet"
    assert main(["score", f"s3://runs/cli?endpoint_override={endpoint}&scheme=http", "--out", str(out)]) == 0
    assert pl.read_parquet(out).height == 20
    assert main(["info", f"s3://runs/nothing-here?endpoint_override={endpoint}&scheme=http"]) == 1
    assert "error: path: no tdlog run at s3://runs/nothing-here" in capsys.readouterr().err
    assert is_uri("s3://b/r") and not is_uri("runs/exp1") and not is_uri("file:///tmp/run")


def test_the_recorder_writes_to_s3_and_resumes_there(s3, tmp_path) -> None:
    """Recorder("s3://...") commits locally, uploads write-once files and a committed-files manifest; a
    restart continues the run as a new attempt; an uploaded file no manifest lists is not read."""
    filesystem, _ = s3
    for epochs in (range(0, 3), range(2, 4)):  # the second attempt re-logs epoch 2
        _record("s3://runs/direct", epochs, filesystem=filesystem, local_dir=tmp_path / f"mirror{epochs.start}")
        _record(tmp_path / "local", epochs)
    names = {f.path.split("runs/direct/", 1)[1] for f in filesystem.get_file_info(
        pafs.FileSelector("runs/direct", recursive=True)) if f.type == pafs.FileType.File}
    assert {"run.json", "_attempts/attempt-0.json", "_attempts/attempt-1.json",
            "_committed/a0-r0.json", "_committed/a1-r0.json"} <= names
    stray = "runs/direct/records/split=train/epoch=3/part-a1-r0-s2.parquet"  # its writer killed before listing it
    with filesystem.open_output_stream(stray) as stream, \
            open(next((tmp_path / "local" / "records" / "split=train" / "epoch=0").glob("*.parquet")), "rb") as part:
        stream.write(part.read())
    with analytics.open_run("s3://runs/direct", filesystem=filesystem, cache_dir=tmp_path / "cache") as remote, \
            analytics.open_run(tmp_path / "local") as here:
        assert_frame_equal(remote.scores(), here.scores())
        assert remote.info()["attempts"] == [{k: v for k, v in a.items()} for a in here.info()["attempts"]]
        assert remote.sql("SELECT count(*) AS n FROM samples")["n"][0] == 20
    assert not (tmp_path / "cache" / "records" / "split=train" / "epoch=3" / "part-a1-r0-s2.parquet").exists()


def test_a_run_recorded_again_at_the_same_uri_reads_fresh(s3, tmp_path) -> None:
    """The cache is keyed by each remote file's size and modification time, and drops files the remote no
    longer lists: a run deleted and recorded again at the same URI is not read from the old copy."""
    filesystem, _ = s3
    cache = tmp_path / "cache"
    _record("s3://runs/again", range(0, 5), filesystem=filesystem, local_dir=tmp_path / "mirror-a")
    with analytics.open_run("s3://runs/again", filesystem=filesystem, cache_dir=cache) as run:
        assert run.epochs() == [0, 1, 2, 3, 4]
    filesystem.delete_dir("runs/again")
    _record("s3://runs/again", range(0, 3), filesystem=filesystem, local_dir=tmp_path / "mirror-b")
    _record(tmp_path / "expected", range(0, 3))
    with analytics.open_run("s3://runs/again", filesystem=filesystem, cache_dir=cache) as run, \
            analytics.open_run(tmp_path / "expected") as expected:
        assert run.epochs() == [0, 1, 2]
        assert_frame_equal(run.scores(), expected.scores())


def test_two_writers_on_one_uri_get_their_own_attempts_and_the_earlier_is_fenced(s3, tmp_path) -> None:
    """Two Recorders on one object-store run, each with its own local mirror (two machines: their flocks
    never meet): the store's claims give them attempts 0 and 1; the first stops at its next upload, with
    everything it uploaded before kept and read."""
    from tdlog.recorder import WriterSupersededError

    filesystem, _ = s3
    uri = "s3://runs/contended"
    first = Recorder(uri, num_classes=3, filesystem=filesystem, local_dir=tmp_path / "mirror-a")
    first.register_samples(torch.arange(20), torch.arange(20) % 3)
    first.log(torch.arange(20), torch.randn(20, 3), torch.arange(20) % 3, epoch=0)
    first.flush()
    with Recorder(uri, num_classes=3, filesystem=filesystem, local_dir=tmp_path / "mirror-b") as second:
        assert (first.attempt, second.attempt) == (0, 1)
        second.log(torch.arange(20), torch.randn(20, 3), torch.arange(20) % 3, epoch=1)
        first.log(torch.arange(20), torch.randn(20, 3), torch.arange(20) % 3, epoch=1)
        with pytest.raises(WriterSupersededError, match=r"later attempt \(1\)"):
            first.flush()
    with pytest.raises(WriterSupersededError):
        first.close()
    with analytics.open_run(uri, filesystem=filesystem, cache_dir=tmp_path / "cache") as run:
        counted = run.sql("SELECT epoch, attempt, count(*) AS n FROM records GROUP BY ALL ORDER BY ALL").rows()
    assert counted == [(0, 0, 20), (1, 1, 20)]
    assert verify_run(uri, filesystem=filesystem).height == 0


def test_concurrent_claims_of_one_number_never_both_win(s3, tmp_path) -> None:
    import threading

    from tdlog.recorder.remote import RemoteMirror

    filesystem, _ = s3
    mirrors = [RemoteMirror("s3://runs/claims", local_dir=tmp_path / f"m{i}", filesystem=filesystem)
               for i in range(6)]
    won: list[int] = []
    threads = [threading.Thread(target=lambda m=m: won.append(m.claim_attempt(0))) for m in mirrors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 6 and len(set(won)) == 6
