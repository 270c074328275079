"""Sequence-to-sequence fine-tuning with the Hugging Face Seq2SeqTrainer, scored by AUL per example (CPU,
nothing downloaded).

A tiny T5 built from a config learns to reverse a sequence of words; 10 % of the targets are random words
instead. The decoder's labels are scored as the model's own loss scores them (not shifted: T5 shifts its
decoder inputs itself); the examples with the highest AUL are the random ones.

    python examples/hf_seq2seq.py --out runs/seq2seq --epochs 6
"""

import argparse

import numpy as np
from datasets import Dataset
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, T5Config, T5ForConditionalGeneration

import tdlog.analytics as analytics
from tdlog.recorder.integrations.huggingface import add_sample_ids, attach

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", required=True, help="run directory")
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--examples", type=int, default=400)
args = parser.parse_args()

rng = np.random.default_rng(0)
vocabulary, length = 32, 6
sources = rng.integers(2, vocabulary, size=(args.examples, length))  # 0: padding, 1: end of sequence
targets = sources[:, ::-1].copy()
noise = rng.choice(args.examples, size=args.examples // 10, replace=False)
targets[noise] = rng.integers(2, vocabulary, size=(len(noise), length))
eos = np.ones((args.examples, 1), dtype=int)
train = add_sample_ids(Dataset.from_dict({"input_ids": np.hstack([sources, eos]).tolist(),
                                          "labels": np.hstack([targets, eos]).tolist()}))

model = T5ForConditionalGeneration(T5Config(vocab_size=vocabulary, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                            num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
training = Seq2SeqTrainingArguments(output_dir=f"{args.out}-checkpoints", num_train_epochs=args.epochs,
                                    per_device_train_batch_size=16, learning_rate=3e-3, save_strategy="no",
                                    report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
trainer = Seq2SeqTrainer(model=model, args=training, train_dataset=train)
recorder = attach(trainer, args.out)
trainer.train()
recorder.close()

with analytics.open_run(args.out) as run:
    aul = run.aul(epochs=None).sort("aul", descending=True)
suspects = set(aul.head(len(noise))["sample_id"].to_list())
print(aul.head(10))
print(f"{len(suspects & set(noise.tolist()))} of the {len(noise)} highest-AUL examples are the random ones")
