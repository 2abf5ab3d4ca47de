"""Tasks: programs built on the library that train and evaluate a model for one job.

    g2p        grapheme-to-phoneme on CMUdict (tfmr's main job; `tfmr g2p`)
    copytask   a synthetic task where copying matters: pointer-generator vs plain head (`tfmr copytask`)
    finetune   LoRA / adapter fine-tuning of a trained checkpoint (`tfmr finetune`)

A task holds its data, its training and evaluation functions; its presets are in tfmr/presets.py
and its argument parsing in tfmr/cli/. Library modules never import from here.
"""
