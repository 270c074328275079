"""``Recorder``: one call per training step writes every sample's training dynamics to Parquet."""

from __future__ import annotations

import atexit
import os
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import torch

from tdlog.format import LOGITS_DTYPES, LOGITS_MODES, NO_CLASS, SAMPLES_DIR, is_uri, part_name

from . import manifest as manifest_io
from .chunk import chunk_capacity
from .commit import commit_table
from .device import DeviceBatches, PendingBatch, device_batch, statistics_batch
from .host_stats import host_statistics
from .loss_check import LossCheck, agrees, recorded_losses, scalar
from .manifest import check_state_run
from .remote import RemoteMirror
from .samples import build_samples_table, drop_already_registered, read_registered
from .sequence import CHUNK_VALUES, IGNORE_INDEX, scored_targets, sequence_statistics
from .staging import HostChunk
from .stats import batch_statistics
from .validate import (
    check_batch_loss,
    check_epoch,
    check_id_type,
    check_logits,
    check_loss,
    check_split,
    check_target_range,
    check_targets,
    id_type_of,
    ids_to_arrow,
)
from .writer import RecordWriter, WriterConfig
from .writer_lock import WriterLock, holder_attempt

_OPEN_RECORDERS: weakref.WeakSet = weakref.WeakSet()


def _distributed_rank_and_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _agree_on_attempt(run_dir: Path, rank: int, world_size: int, start: tuple[int, int | None] | None,
                      starts: dict[str, tuple[int, int | None]], claim: Any = None) -> int:
    """Rank 0 registers the attempt (``claim``: an object store's claim of its number); under
    torch.distributed every rank receives its number."""
    attempt = [None]
    if rank == 0:
        attempt[0] = manifest_io.start_attempt(run_dir, world_size=world_size, start=start, starts=starts,
                                               claim=claim)
    if world_size > 1:
        torch.distributed.broadcast_object_list(attempt, src=0)
    return attempt[0]


class Recorder:
    """Records, for every sample of every batch, its loss, margin, target probability, prediction and
    error norm (and optionally logits) to a tdlog run directory.

    Opening an existing run directory resumes it as a new *attempt*: epochs it logs again replace the
    earlier attempt's rows for those epochs (nothing is double counted).

    Args:
        path: run directory, created if missing; or an object-store URI (``s3://bucket/run``, see
            :mod:`tdlog.recorder.remote`): files are committed in ``local_dir`` and uploaded.
        num_classes: number of real classes ``C``.
        with_threshold_class: the model has ``C + 1`` outputs, the extra class ``C`` holding threshold
            samples (see :func:`tdlog.recorder.threshold_samples`).
        logits: which logits to keep besides the statistics: ``"none"``, ``"topk"`` or ``"full"``.
        topk: how many logits to keep with ``logits="topk"``.
        logits_dtype: ``"float16"`` or ``"float32"`` for ``logits="full"``.
        split: default split name of :meth:`log` calls.
        flush_rows: rows buffered per (split, epoch) before a file is committed.
        flush_seconds: rows are committed at most this long after they were logged (for live queries),
            as long as :meth:`log` is called at least every ``flush_seconds / 2``.
        coalesce_rows: batches are handed to the writer thread in chunks of about this many rows, so that
            its per-operation costs are paid once per chunk rather than once per batch.
        max_pending: chunks queued for the writer thread before :meth:`log` waits (back-pressure).
        start_epoch, start_step: where this attempt starts owning rows of each split it logs, the explicit
            form of ``resume``: rows of earlier attempts at ``(epoch, step) >= (start_epoch, start_step)`` of
            those splits stop counting (``start_step`` None: from the epoch's first row). Default: the epoch
            of the attempt's first row of each split.
        resume: a :meth:`state_dict` saved with a model checkpoint: the attempt continues the run from
            that state, per split: rows logged after the state stop counting, rows before it stay, and steps
            continue where it left off. Splits the state does not name are started as by default.
        metadata: JSON-serialisable dict stored in ``run.json`` under ``config`` (new runs only).
        local_dir: with a URI ``path``, the local mirror files are committed in first (default: a new
            temporary folder).
        filesystem: with a URI ``path``, the ``pyarrow.fs.FileSystem`` to write with (default: from the URI,
            e.g. ``s3://bucket/run?endpoint_override=host:9000&scheme=http``, and the environment).
        strict: a batch whose recorded losses are not the model's own ``batch_loss`` (see :meth:`log` and
            :mod:`tdlog.recorder.loss_check`) raises :class:`~tdlog.recorder.LossMismatchError` instead of a
            warning.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_classes: int,
        *,
        with_threshold_class: bool = False,
        logits: str = "none",
        topk: int = 5,
        logits_dtype: str = "float16",
        split: str = "train",
        flush_rows: int = 262_144,
        flush_seconds: float = 30.0,
        max_pending: int = 16,
        coalesce_rows: int = 8192,
        start_epoch: int | None = None,
        start_step: int | None = None,
        resume: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        local_dir: str | os.PathLike | None = None,
        filesystem: Any = None,
        strict: bool = False,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")
        if logits not in LOGITS_MODES:
            raise ValueError(f"logits: expected one of {LOGITS_MODES}, got {logits!r}")
        if logits_dtype not in LOGITS_DTYPES:
            raise ValueError(f"logits_dtype: expected one of {tuple(LOGITS_DTYPES)}, got {logits_dtype!r}")
        self.num_classes = num_classes
        self.threshold_class = num_classes if with_threshold_class else None
        self.num_outputs = num_classes + int(with_threshold_class)
        if logits == "topk" and not 1 <= topk <= self.num_outputs:
            raise ValueError(f"topk: expected 1 <= topk <= {self.num_outputs}, got {topk}")
        if flush_rows < 1 or flush_seconds <= 0 or max_pending < 1 or coalesce_rows < 1:
            raise ValueError(
                "flush_rows, flush_seconds, max_pending, coalesce_rows: expected positive values, "
                f"got {flush_rows}, {flush_seconds}, {max_pending}, {coalesce_rows}"
            )
        self.default_split = check_split(split)
        start = None if start_epoch is None else (check_epoch(start_epoch), start_step)
        if start is None and start_step is not None:
            raise ValueError(f"start_step: expected it with a start_epoch, got start_step={start_step} alone")
        if start is not None and resume is not None:
            raise ValueError("resume, start_epoch: expected one of them, got both")
        self._step, self._last_logged = 0, {}
        resumed = self._resume_state(resume) if resume is not None else {}
        self.remote = RemoteMirror(str(path), local_dir=local_dir, filesystem=filesystem) if is_uri(path) else None
        self.path = self.remote.pull() if self.remote is not None else Path(path)
        if resume is not None:
            check_state_run(resume, self.path, where=str(path))  # before anything is written
        self.path.mkdir(parents=True, exist_ok=True)
        self.rank, self.world_size = _distributed_rank_and_size()
        self._lock = WriterLock(self.path, self.rank)  # a second writer of this rank fails here, harmlessly
        try:
            manifest = manifest_io.create_or_validate(
                self.path, num_classes=num_classes, threshold_class=self.threshold_class, config=metadata or {}
            )
            claim = self.remote.claim_attempt if self.remote is not None else None
            self.attempt = _agree_on_attempt(self.path, self.rank, self.world_size, start, resumed, claim)
        except BaseException:
            self._lock.release()
            raise
        self._lock.claim(self.attempt)
        self.id_type: str | None = manifest["sample_id_type"]
        self._run_id: str = manifest["run_id"]
        self._splits_started: set[str] = set(resumed)
        self._location = str(path)
        if self.rank == 0:
            manifest_io.clear_stale_staging(self.path, self.attempt, lambda rank: holder_attempt(self.path, rank))
        if self.remote is not None:
            self.remote.start(self.attempt, self.rank)
        self._writer_options = {
            "logits": logits,
            "topk": topk,
            "logits_dtype": logits_dtype,
            "flush_rows": flush_rows,
            "flush_seconds": flush_seconds,
            "max_pending": max_pending,
        }
        self._writer: RecordWriter | None = None
        self._pending: list[PendingBatch] = []  # device batches not yet handed to the writer
        self._pending_rows = 0
        self._pending_started = 0.0
        self._chunk: HostChunk | None = None  # CPU batches not yet handed to the writer
        self._coalesce_rows = min(coalesce_rows, flush_rows)
        # batches wait in log() at most half of flush_seconds: the writer commits rows by flush_seconds
        # after they were logged, and gets the other half to do it
        self._handover_seconds = flush_seconds / 2
        self._chunk_capacity = chunk_capacity(self._coalesce_rows, self.num_outputs)
        self._samples_seq = 0
        self._scratch: torch.Tensor | None = None  # sequence statistics' float32 buffer
        self._nonfinite_seen = 0
        self._nonfinite_warned = 0
        self.loss_check = LossCheck(strict=strict, on_report=self._report_loss_check)
        self.closed = False
        _OPEN_RECORDERS.add(self)

    # --- the hot path ----------------------------------------------------------------------------
    def log(
        self,
        sample_ids: Any,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        loss: torch.Tensor | None = None,
        epoch: int,
        split: str | None = None,
        step: int | None = None,
        shift: bool = False,
        batch_loss: torch.Tensor | float | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> None:
        """Record one batch: per sample, the statistics of :func:`tdlog.recorder.stats.batch_statistics`;
        for a sequence model, per example, their means over its tokens (:mod:`tdlog.recorder.sequence`).

        No host sync and no per-sample Python: on CUDA the statistics are computed on the device and
        copied to pinned memory asynchronously; on CPU they are computed by the writer thread.
        Target values of CUDA batches are checked by the writer; a bad batch is refused there and the
        error raised from the next call.

        Args:
            sample_ids: int64 tensor, numpy array, or list of int or str (one type per run). An empty batch
                is a no-op.
            logits: ``[B, num_outputs]`` raw logits (any float dtype, any device); or token logits
                ``[B, T, num_outputs]`` of a sequence model (``num_outputs`` = the vocabulary).
            targets: ``[B]`` integer class indices used as training targets; with token logits, ``[B, T]``
                token targets, ``-100`` for tokens that are not scored (the Hugging Face convention).
            loss: optional ``[B]`` per-sample loss (``reduction="none"``); cross-entropy (mean token
                cross-entropy) if omitted.
            epoch: epoch of this batch (hive partition key).
            split: split name (default: the recorder's ``split``), e.g. ``"train"`` or ``"eval"``.
            step: global step; defaults to a counter of ``log`` calls.
            shift: token logits only: score token ``t`` against target ``t + 1``, as causal language
                models' own loss does (pass their ``labels`` as ``targets``).
            batch_loss: the loss the model returned for this batch (a scalar): the recorded losses are checked
                against it (:mod:`tdlog.recorder.loss_check`; the first batches, then a sampled share).
            num_items_in_batch: with ``batch_loss``, the count the model divided its summed loss by (the
                Hugging Face Trainer's normalisation under gradient accumulation), when not this batch's own.
        """
        self._raise_pending_errors()
        check_logits(logits, self.num_outputs)
        checked = self._loss_to_check(batch_loss, num_items_in_batch)
        if logits.dim() == 3:
            self._log_sequence(sample_ids, logits, targets, loss, epoch=epoch, split=split, step=step, shift=shift,
                               checked=checked)
            return
        batch_size, epoch, split = self._check_batch(logits, targets, loss, epoch, split, (logits.shape[0],))
        if batch_size == 0:  # an empty batch (the last of a filtered loader): nothing to record
            return
        ids = self._prepare_ids(sample_ids, batch_size)
        step = self._next_step(step, epoch, split)
        if logits.is_cuda:
            options = self._writer_options
            self._stage_device(
                device_batch(ids, logits, targets, loss, epoch=epoch, split=split, step=step,
                             num_outputs=self.num_outputs, logits_mode=options["logits"], topk=options["topk"],
                             logits_dtype=options["logits_dtype"]),
                batch_size,
            )
        else:
            lowest, highest = torch.aminmax(targets)
            check_target_range("targets", int(lowest), int(highest), self.num_outputs)
            self._stage_host(ids, logits, targets, loss, epoch, split, step)
        if checked is not None:
            self._check_classification_loss(logits, targets, loss, checked, step)

    def log_token_log_probs(
        self,
        sample_ids: Any,
        log_probs: torch.Tensor,
        mask: torch.Tensor,
        *,
        correct: torch.Tensor | None = None,
        epoch: int,
        split: str | None = None,
        step: int | None = None,
        batch_loss: torch.Tensor | float | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        target_logits: torch.Tensor | None = None,
        other_logits: torch.Tensor | None = None,
    ) -> None:
        """Record one batch of a sequence model that computed no logits (a fused LM head, as TRL's SFTTrainer
        uses): per example, over its counted tokens ``t`` (``mask`` true, ``n`` of them),
        ``loss = -(1/n) sum_t log_probs_t``, ``prob = (1/n) sum_t exp(log_probs_t)``, ``correct`` = the
        share of ``correct`` tokens (NaN when not given), ``tokens = n``. With ``target_logits`` ``z_{t,y}``
        and ``other_logits`` ``max_{j != y} z_{t,j}`` of each token (``[B, T]``): ``target_logit``,
        ``other_logit`` and ``margin = (1/n) sum_t (z_{t,y} - max_{j != y} z_{t,j})``, the token-mean margin;
        without them these are NaN. ``el2n`` needs every logit and is NaN. ``log_probs``, ``mask`` and
        ``correct`` are ``[B, T]`` (the log-probability of each token's target, already shifted).
        ``batch_loss`` is checked as in :meth:`log`."""
        self._raise_pending_errors()
        if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 2 or not log_probs.is_floating_point():
            shown = tuple(log_probs.shape) if isinstance(log_probs, torch.Tensor) else type(log_probs).__name__
            raise ValueError(f"log_probs: expected a float tensor [batch, tokens], got {shown}")
        if not isinstance(mask, torch.Tensor) or mask.shape != log_probs.shape:
            raise ValueError(f"mask: expected shape {tuple(log_probs.shape)} to match log_probs, "
                             f"got {tuple(getattr(mask, 'shape', ()))}")
        checked = self._loss_to_check(batch_loss, num_items_in_batch)
        batch_size, epoch = log_probs.shape[0], check_epoch(epoch)
        split = self.default_split if split is None else check_split(split)
        if batch_size == 0:
            return
        ids = self._prepare_ids(sample_ids, batch_size)
        step = self._next_step(step, epoch, split)
        counted = mask.detach().to(torch.float32)
        tokens = counted.sum(1)
        per_token = log_probs.detach().float() * counted
        nan = torch.full_like(tokens, float("nan"))
        share = (correct.detach().float() * counted).sum(1) / tokens if correct is not None else nan
        target, other = nan, nan
        if (target_logits is None) != (other_logits is None):
            raise ValueError("target_logits, other_logits: expected both or neither")
        if target_logits is not None:
            for name, values in (("target_logits", target_logits), ("other_logits", other_logits)):
                if not isinstance(values, torch.Tensor) or values.shape != log_probs.shape:
                    raise ValueError(f"{name}: expected shape {tuple(log_probs.shape)} to match log_probs, "
                                     f"got {tuple(getattr(values, 'shape', ()))}")
            kept = counted > 0  # where a value at an ignored position is anything (-inf included)
            target = torch.where(kept, target_logits.detach().float(), 0.0).sum(1) / tokens
            other = torch.where(kept, other_logits.detach().float(), 0.0).sum(1) / tokens
        floats = torch.stack([-per_token.sum(1) / tokens, target - other, target, other,
                              (per_token.exp() * counted).sum(1) / tokens, nan, share])
        floats = torch.where(tokens > 0, floats, float("nan"))
        no_class = torch.full((batch_size,), NO_CLASS, dtype=torch.int32, device=log_probs.device)
        ints = torch.stack([no_class, no_class, no_class, tokens.to(torch.int32)])
        if checked is not None:
            self.loss_check.compare(floats[0], ints[3], *checked, step=step)
        no_target = torch.zeros(1, dtype=torch.bool, device=log_probs.device)
        self._stage_device(statistics_batch(ids, no_class, floats, ints, (), no_target, epoch=epoch, split=split,
                                            step=step), batch_size)

    def _loss_to_check(self, batch_loss, num_items_in_batch) -> tuple[Any, Any] | None:
        """``(batch_loss, num_items_in_batch)`` when this batch's loss is checked (given, valid, and due)."""
        check_batch_loss(batch_loss, num_items_in_batch)
        return (batch_loss, num_items_in_batch) if batch_loss is not None and self.loss_check.due() else None

    def _check_classification_loss(self, logits, targets, loss, checked, step) -> None:
        """Compare the losses this batch's rows will hold (the given ``loss``, or the cross-entropy the
        writer computes: the same function, here) with the model's own."""
        if loss is None:
            if logits.is_cuda:
                if bool(((targets < 0) | (targets >= self.num_outputs)).any()):
                    return  # the writer refuses this batch
                loss = batch_statistics(logits, targets, None)[0][0]
            else:
                host_logits = logits.detach().to(torch.float32).numpy().copy()
                loss = torch.from_numpy(host_statistics(host_logits, targets.numpy().astype("int64"), None)[0][0])
        self.loss_check.compare(loss.detach().reshape(-1), torch.ones(loss.numel(), device=loss.device), *checked,
                                step=step)

    def _check_batch(self, logits, targets, loss, epoch, split, target_shape) -> tuple[int, int, str]:
        """``(batch size, epoch, split)`` of a batch whose targets, loss, epoch and split are as expected."""
        check_targets(targets, target_shape, logits.device)
        check_loss(loss, logits.shape[0])
        return logits.shape[0], check_epoch(epoch), self.default_split if split is None else check_split(split)

    def _log_sequence(self, sample_ids, logits, targets, loss, *, epoch, split, step, shift, checked) -> None:
        """``log()`` of token logits ``[B, T, V]``: one row per example (see :mod:`tdlog.recorder.sequence`),
        computed on the logits' device in ``log()`` and handed to the writer as computed statistics."""
        if self._writer_options["logits"] != "none":
            raise ValueError(f"logits: keeping logits ({self._writer_options['logits']!r}) is for classification "
                             "runs; token logits [B, T, V] are reduced to one row per example (use logits='none')")
        batch_size, epoch, split = self._check_batch(logits, targets, loss, epoch, split, tuple(logits.shape[:2]))
        if batch_size == 0:
            return
        ids = self._prepare_ids(sample_ids, batch_size)
        step = self._next_step(step, epoch, split)
        scored = scored_targets(targets, shift=shift)
        bad = ((scored < 0) & (scored != IGNORE_INDEX)) | (scored >= self.num_outputs)
        any_bad = bad.any()  # stays on the device for CUDA batches: the writer checks it
        if not logits.is_cuda and bool(any_bad):
            check_target_range("targets", int(scored[bad].min()), int(scored[bad].max()), self.num_outputs)
        floats, ints = sequence_statistics(logits, scored, loss, scratch=self._scratch_for(logits))
        if checked is not None:
            self.loss_check.compare(floats[0], ints[3], *checked, step=step,
                                    alternative=lambda: self._other_shift(logits, targets, shift, *checked))
        shown = scored.masked_fill(scored == IGNORE_INDEX, 0).reshape(-1)  # for the writer's error message
        self._stage_device(statistics_batch(ids, shown, floats, ints, (), any_bad, epoch=epoch, split=split,
                                            step=step), batch_size)

    def _other_shift(self, logits, targets, shift, batch_loss, num_items_in_batch) -> str | None:
        """On a mismatch: whether the other shift would give the model's loss (then it is the cause)."""
        other = scored_targets(targets, shift=not shift)
        if bool((other >= self.num_outputs).any()):
            return None
        floats, ints = sequence_statistics(logits, other, scratch=self._scratch_for(logits))
        candidates = recorded_losses(floats[0], ints[3], num_items_in_batch)
        if candidates and agrees(scalar(batch_loss), candidates):
            shown = ", ".join(f"{name} {value:.6g}" for name, value in candidates.items())
            return (f"the shift: with shift={not shift} the recorded loss would be {shown}, the model's own "
                    "(a causal LM scores token t against target t + 1; other models do not shift)")
        return None

    def _report_loss_check(self, report: dict[str, Any]) -> None:
        manifest_io.update_manifest(self.path, loss_check={f"r{self.rank}": report})

    def _scratch_for(self, logits: torch.Tensor) -> torch.Tensor:
        """The float32 buffer sequence statistics are computed in, kept between calls (at most
        ``CHUNK_VALUES`` values), on the logits' device."""
        size = min(CHUNK_VALUES, logits.numel())
        scratch = self._scratch
        if scratch is None or scratch.device != logits.device or scratch.numel() < size:
            scratch = self._scratch = torch.empty(size, dtype=torch.float32, device=logits.device)
        return scratch

    def _next_step(self, step: int | None, epoch: int, split: str) -> int:
        """The step of this ``log()`` call (default: a counter of calls); the attempt's first call for
        ``split`` sets where it starts owning that split's rows."""
        if step is None:
            step = self._step
        self._step += 1
        if split not in self._splits_started:
            if self.rank == 0:
                manifest_io.set_split_start(self.path, self.attempt, split, epoch)
            self._splits_started.add(split)
        self._last_logged[split] = (epoch, step)
        return step

    def _stage_host(self, ids, logits, targets, loss, epoch, split, step) -> None:
        """Copy a CPU batch into the current chunk; hand the chunk over when the next batch may not fit."""
        if self._pending:
            self._submit_pending()  # keep the writer's order when CPU and device batches alternate
        chunk = self._chunk
        if chunk is not None and chunk.room() < logits.shape[0]:
            self._submit_chunk()
            chunk = None
        if chunk is None:
            chunk = self._chunk = self._free_chunk(logits.shape[0])
        chunk.add(ids, logits, targets, loss, split, epoch, step)
        if chunk.rows >= self._coalesce_rows or time.monotonic() - chunk.started >= self._handover_seconds:
            self._submit_chunk()

    def _free_chunk(self, rows: int) -> HostChunk:
        """A chunk the writer has given back, or a new one; big enough for ``rows``."""
        capacity = max(rows, self._chunk_capacity)
        chunk = self._ensure_writer().take_chunk(capacity)
        return chunk if chunk is not None else HostChunk(capacity, self.num_outputs)

    def _stage_device(self, batch: PendingBatch, batch_size: int) -> None:
        if self._chunk is not None:
            self._submit_chunk()
        if not self._pending:
            self._pending_started = time.monotonic()
        self._pending.append(batch)
        self._pending_rows += batch_size
        if (self._pending_rows >= self._coalesce_rows
                or time.monotonic() - self._pending_started >= self._handover_seconds):
            self._submit_pending()

    def _submit_all(self) -> None:
        self._submit_chunk()
        self._submit_pending()

    def _submit_chunk(self) -> None:
        if self._chunk is not None:
            self._ensure_writer().submit(self._chunk)
            self._chunk = None

    def _submit_pending(self) -> None:
        """Hand the device batches gathered since the last hand-over to the writer thread as one list."""
        if self._pending:
            self._ensure_writer().submit(DeviceBatches(self._pending, self._pending_started))
            self._pending, self._pending_rows = [], 0

    def _prepare_ids(self, sample_ids: Any, batch_size: int) -> Any:
        if isinstance(sample_ids, torch.Tensor):
            if sample_ids.is_floating_point() or sample_ids.is_complex() or sample_ids.dtype == torch.bool:
                raise TypeError(f"sample_ids: expected an integer tensor, got dtype {sample_ids.dtype}")
            if sample_ids.dim() != 1 or sample_ids.shape[0] != batch_size:
                raise ValueError(
                    f"sample_ids: expected shape ({batch_size},) to match logits, got {tuple(sample_ids.shape)}"
                )
            self._bind_id_type("int64")
            return sample_ids.detach()  # copied (as int64) where the batch is staged
        array = ids_to_arrow(sample_ids, batch_size)
        self._bind_id_type(id_type_of(array))
        return array

    def _bind_id_type(self, id_type: str) -> None:
        if self.id_type is None:
            self.id_type = manifest_io.bind_id_type(self.path, id_type)
        check_id_type(self.id_type, id_type)

    def _ensure_writer(self) -> RecordWriter:
        if self.closed:
            raise RuntimeError(f"Recorder for {self.path} is closed")
        if self._writer is None:
            config = WriterConfig(
                run_dir=self.path,
                id_type=self.id_type,
                attempt=self.attempt,
                rank=self.rank,
                num_outputs=self.num_outputs,
                on_commit=self.remote.push if self.remote is not None else None,
                fence=self._check_current,
                **self._writer_options,
            )
            self._writer = RecordWriter(config, on_nonfinite=self._count_nonfinite)
            self._writer.start()
        return self._writer

    def _count_nonfinite(self, rows: int) -> None:
        """Called from the writer thread: count NaN/Inf rows in run.json (they are kept as they are)."""
        manifest_io.update_manifest(self.path, nonfinite_rows=rows)
        self._nonfinite_seen += rows

    def _raise_pending_errors(self) -> None:
        writer = self._writer
        if writer is None:
            return
        if isinstance(writer.fatal, manifest_io.WriterSupersededError):
            raise writer.fatal
        if writer.fatal is not None:
            raise RuntimeError(f"tdlog writer thread failed; rows not yet committed are lost: {writer.fatal!r}") \
                from writer.fatal
        if writer.rejected:
            raise writer.rejected.pop(0)
        if self._nonfinite_seen > self._nonfinite_warned:
            warnings.warn(
                f"tdlog: {self._nonfinite_seen} rows with NaN/Inf logits or loss recorded in {self.path} "
                "(kept as they are, counted in run.json 'nonfinite_rows')",
                RuntimeWarning,
                stacklevel=3,
            )
            self._nonfinite_warned = self._nonfinite_seen

    # --- samples ---------------------------------------------------------------------------------
    def register_samples(
        self,
        sample_ids: Any,
        labels: Any = None,
        *,
        targets: Any = None,
        true_label: Any = None,
        probe: Any = None,
        probe_role: Any = None,
        controls: Any = None,
        **columns: Any,
    ) -> int:
        """Register per-sample metadata in ``samples/``; returns the number of rows newly written.

        ``labels`` are the observed labels in ``[0, num_classes)`` (None for the examples of a sequence
        model: no class, ``label = -1``); ``targets`` the training targets (default: ``labels``;
        ``num_classes`` marks a threshold sample); ``controls``: booleans marking the control examples of a
        sequence run (:mod:`tdlog.recorder.controls`: known-wrong targets, treated as threshold samples);
        ``true_label`` the clean label when known (experiments); ``probe``/``probe_role`` name a MAP-D probe
        suite and its role (``"reference"`` or ``"heldout"``); other keyword arguments become user columns
        (``text``, ``prompt``, ``completion``: shown by the report). Registering the same rows again (a
        restarted script) is a no-op; only rank 0 writes under torch.distributed.
        """
        if isinstance(sample_ids, torch.Tensor):
            sample_ids = sample_ids.detach().cpu().numpy()
        ids = ids_to_arrow(sample_ids, None)
        self._bind_id_type(id_type_of(ids))
        table = build_samples_table(
            ids,
            labels,
            targets=targets,
            true_label=true_label,
            probe=probe,
            probe_role=probe_role,
            controls=controls,
            columns=columns,
            num_classes=self.num_classes,
            num_outputs=self.num_outputs,
            threshold_class=self.threshold_class,
        )
        if self.rank != 0:
            return 0
        with manifest_io.run_lock(self.path):
            table = drop_already_registered(table, read_registered(self.path))
            if table.num_rows:
                self._check_current()
                name = part_name(self.attempt, self.rank, self._samples_seq)
                commit_table(self.path, f"{SAMPLES_DIR}/{name}", table)
                self._samples_seq += 1
        if self.remote is not None:
            self.remote.push()
        return table.num_rows

    # --- lifecycle -------------------------------------------------------------------------------
    def _check_current(self) -> None:
        """Before each commit: raise :class:`~tdlog.recorder.manifest.WriterSupersededError` when a later
        attempt started on the run (FORMAT.md, "Writers")."""
        manifest_io.check_current(self.path, self.attempt, where=self._location)

    def state_dict(self) -> dict[str, Any]:
        """Commit everything logged, then return where the run stands, to save with a model checkpoint:
        ``{"run", "run_id", "attempt", "rank", "step", "splits": {split: {"epoch", "step"}}}`` (the last row
        logged of each split, this attempt's or the one it resumed; ``run_id`` is the run's identity, from
        ``run.json``: a state resumes only its own run). ``Recorder(path, resume=state)`` or
        :meth:`resume_from` continue from it."""
        self.flush()
        return {"run": self._location, "run_id": self._run_id, "attempt": self.attempt, "rank": self.rank,
                "step": self._step,
                "splits": {split: {"epoch": epoch, "step": step} for split, (epoch, step) in self._last_logged.items()}}

    def resume_from(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (a :meth:`state_dict`) before this attempt logs anything: see ``resume``."""
        if self._step or self._splits_started:
            raise ValueError("state: resume_from() must come before the attempt's first log()")
        check_state_run(state, self.path, where=self._location)
        starts = self._resume_state(state)
        if self.rank == 0:
            manifest_io.set_resumed_starts(self.path, self.attempt, starts)
        self._splits_started = set(starts)

    def _resume_state(self, state: Any) -> dict[str, tuple[int, int]]:
        """``{split: (epoch, step + 1)}`` of a state dict (the new attempt owns what comes after it); sets
        the step counter and the last rows logged."""
        try:
            splits = {str(split): (int(position["epoch"]), int(position["step"]))
                      for split, position in state["splits"].items()}
            step = int(state["step"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"resume: expected a Recorder.state_dict(), got {state!r}") from None
        self._step, self._last_logged = step, dict(splits)
        return {split: (epoch, last + 1) for split, (epoch, last) in splits.items()}

    def flush(self) -> None:
        """Block until every logged row is committed to disk (readable by ``analytics``)."""
        self._raise_pending_errors()
        self._submit_all()
        if self._writer is not None:
            self._writer.flush()
        if self.remote is not None:
            self.remote.push()
        self._raise_pending_errors()

    def close(self) -> None:
        """Commit everything buffered and stop the writer thread. Safe to call twice."""
        if self.closed:
            return
        _OPEN_RECORDERS.discard(self)
        try:
            try:
                self._submit_all()
            finally:  # closed even when the writer failed: the error is raised once, not again at exit
                self.closed = True
                if self._writer is not None:
                    self._writer.close()
            if self.loss_check.checked:
                self._report_loss_check(self.loss_check.report())
            if self.remote is not None:
                self.remote.push()  # run.json's last counts and anything committed at close
        finally:
            self._lock.release()
        self._raise_pending_errors()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Recorder({str(self.path)!r}, num_classes={self.num_classes}, attempt={self.attempt}, "
            f"rank={self.rank}/{self.world_size})"
        )


@atexit.register
def _close_open_recorders() -> None:
    """Commit what open recorders still buffer when the interpreter exits normally."""
    for recorder in list(_OPEN_RECORDERS):
        try:
            recorder.close()
        except Exception as exc:  # exiting anyway: report, do not mask the original exit
            warnings.warn(f"tdlog: closing {recorder.path} at exit failed: {exc!r}", RuntimeWarning, stacklevel=1)
