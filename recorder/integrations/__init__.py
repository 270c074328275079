"""Adapters that attach a :class:`~tdlog.recorder.Recorder` to training frameworks: :mod:`.huggingface`
(the ``transformers`` Trainer) and :mod:`.lightning`. Each imports its framework; the recorder never does."""
