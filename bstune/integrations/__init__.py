"""bstune inside the training frameworks people already use: Lightning and Hugging Face Transformers.

Each integration is a callback bound to a ``bstune.Run``. It counts only training batches as
training time (validation and checkpointing kept apart), counts samples, reports the validation
metric at step = elapsed training milliseconds after each validation, and stops the framework's
trainer at the budget, at the target or when a pruner says so, exactly as the built-in trainer does.

- ``bstune.integrations.lightning`` (``pip install 'bstune[lightning]'``)
- ``bstune.integrations.transformers`` (``pip install 'bstune[transformers]'``)

Importing ``bstune`` imports neither framework; each module here imports its own.
"""
