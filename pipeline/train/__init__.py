"""Training: where a loop runs (``launch``), the per-video self-transfer fine-tune
(``finetune``) and pretraining of the base models (``pretrain``)."""
