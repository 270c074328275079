"""Text classification with the Hugging Face Trainer, recorded by tdlog (CPU, nothing downloaded).

A small BERT built from a config with random weights learns which of two "words" (token ids) dominates a
made-up sentence; 20 % of the labels are flipped. One line, attach(), records every step; then the run is
scored and the flipped examples are found by their AUM.

    python examples/hf_text_classification.py --out runs/hf-text --epochs 6
"""

import argparse

import numpy as np
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

import tdlog.analytics as analytics
from tdlog.recorder.integrations.huggingface import add_sample_ids, attach

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", required=True, help="run directory")
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--examples", type=int, default=400)
parser.add_argument("--accumulation", type=int, default=1, help="gradient accumulation steps")
args = parser.parse_args()

rng = np.random.default_rng(0)
length, vocabulary = 16, 50
tokens = rng.integers(5, vocabulary, size=(args.examples, length))
label = rng.integers(0, 2, size=args.examples)
tokens[:, : length // 2] = np.where(label[:, None] == 1, 3, 4)  # word 3 or word 4 dominates
noisy = label.copy()
flipped = rng.choice(args.examples, size=args.examples // 5, replace=False)
noisy[flipped] = 1 - noisy[flipped]
train = Dataset.from_dict({"input_ids": tokens.tolist(), "attention_mask": np.ones_like(tokens).tolist(),
                           "labels": noisy.tolist()})
train = add_sample_ids(train)  # sample_id = 0..N-1

config = BertConfig(vocab_size=vocabulary, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=length, num_labels=2)
model = BertForSequenceClassification(config)
training = TrainingArguments(output_dir=f"{args.out}-checkpoints", num_train_epochs=args.epochs,
                             per_device_train_batch_size=16, gradient_accumulation_steps=args.accumulation,
                             learning_rate=1e-3, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                             disable_tqdm=True)
trainer = Trainer(model=model, args=training, train_dataset=train)
recorder = attach(trainer, args.out, metadata={"example": "hf_text_classification"})
trainer.train()
recorder.close()

with analytics.open_run(args.out) as run:
    aum = run.aum()
suspects = set(aum.head(len(flipped))["sample_id"].to_list())
print(aum.head(10))
print(f"{len(suspects & set(flipped.tolist()))} of the {len(flipped)} lowest-AUM examples are the flipped ones")
