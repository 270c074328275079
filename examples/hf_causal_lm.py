"""Causal language-model fine-tuning with the Hugging Face Trainer, scored by AUL per example (CPU, nothing
downloaded).

A small GPT-2 built from a config with random weights learns made-up "sentences" (counting sequences:
each token is the previous one plus a step); 10 % of the examples are random tokens instead, the noise a
corpus filter would want to find. tdlog records one row per example per step (the mean token loss of the
example, as the model's own loss for it alone), and the examples with the highest AUL are the random ones.
Padding is labelled -100 and not scored.

    python examples/hf_causal_lm.py --out runs/hf-lm --epochs 6
"""

import argparse

import numpy as np
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

import tdlog.analytics as analytics
from tdlog.recorder.integrations.huggingface import add_sample_ids, attach

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", required=True, help="run directory")
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--examples", type=int, default=300)
args = parser.parse_args()

rng = np.random.default_rng(0)
length, vocabulary = 24, 64
start = rng.integers(0, vocabulary, size=(args.examples, 1))
step = rng.integers(1, 4, size=(args.examples, 1))
tokens = (start + step * np.arange(length)) % vocabulary
noise = rng.choice(args.examples, size=args.examples // 10, replace=False)
tokens[noise] = rng.integers(0, vocabulary, size=(len(noise), length))
lengths = rng.integers(length // 2, length + 1, size=args.examples)  # right padding, not scored
mask = np.arange(length)[None, :] < lengths[:, None]
train = Dataset.from_dict({"input_ids": np.where(mask, tokens, 0).tolist(), "attention_mask": mask.astype(int).tolist(),
                           "labels": np.where(mask, tokens, -100).tolist()})
train = add_sample_ids(train)

config = GPT2Config(vocab_size=vocabulary, n_positions=length, n_embd=32, n_layer=2, n_head=2)
model = GPT2LMHeadModel(config)
training = TrainingArguments(output_dir=f"{args.out}-checkpoints", num_train_epochs=args.epochs,
                             per_device_train_batch_size=16, learning_rate=2e-3, save_strategy="no", report_to=[],
                             use_cpu=True, seed=0, disable_tqdm=True)
trainer = Trainer(model=model, args=training, train_dataset=train)
recorder = attach(trainer, args.out)  # num_classes = the vocabulary, read from the model config
trainer.train()
recorder.close()

with analytics.open_run(args.out) as run:
    aul = run.aul().sort("aul", descending=True)
suspects = set(aul.head(len(noise))["sample_id"].to_list())
print(aul.head(10))
print(f"{len(suspects & set(noise.tolist()))} of the {len(noise)} highest-AUL examples are the random ones")
